"""`opclaim data ...`: synthetic corpus, validation of real exports, splits and statistics."""

from __future__ import annotations

import sys

from opclaim.cli import verb
from opclaim.commands import golden
from opclaim.errors import InputError


def register(subs):
    p = subs.add_parser("data", help="synthesize, validate, split and describe case files")
    ds = p.add_subparsers(dest="data_verb", metavar="VERB", required=True)

    s = verb(ds, "synth", "write a synthetic op-note -> claim corpus (deterministic by seed)", """
opclaim data synth --n 1000 --seed 0 --style dictation --out data/dictation.jsonl
opclaim data synth --n 300 --seed 1 --style terse --out data/terse_test.jsonl
opclaim data synth --n 500 --seed 0 --style dictation --length short --out data/demo.jsonl
opclaim data synth --n 400 --services Ophthalmology,Orthopedics --out data/eye_ortho.jsonl""", synth)
    s.add_argument("--n", type=int, required=True, help="number of cases")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--style", choices=["dictation", "terse"], default="dictation",
                   help="dictation: formal full sentences; terse: abbreviations, fragments, bullets")
    s.add_argument("--length", choices=["real", "short"], default="real",
                   help="real: lengths like real notes; short: every section, less narrative (CPU demos)")
    s.add_argument("--services", default=None,
                   help="comma-separated services to draw from (default: all 16, weighted like the study)")
    s.add_argument("--id-prefix", default=None, help="case id prefix (default: 'd' for dictation, 't' for terse)")
    s.add_argument("--out", required=True, help="output JSONL (written 0600)")

    v = verb(ds, "validate", "validate and clean a JSONL/CSV/Parquet export; report every problem", """
opclaim data validate export.csv --map id=encounter_id --map note=op_note --rejects rejects.jsonl --out cases.jsonl
opclaim data validate export.parquet --columns columns.yaml --allow-rejects --out cases.jsonl
opclaim data validate cases.jsonl --max-tokens 4096 --tokenizer models/tiny-phi3""", validate)
    v.add_argument("file")
    v.add_argument("--rejects", help="rejects JSONL (default: FILE.rejects.jsonl; written 0600)")
    v.add_argument("--out", help="write the cleaned valid cases here (JSONL, 0600)")
    v.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help="column mapping, e.g. --map note=op_note_text (fields: id date service note claim icd10 cpt provider)")
    v.add_argument("--columns", help="YAML file with the column mapping (field: column)")
    v.add_argument("--format", choices=["jsonl", "csv", "parquet"], help="override detection by file suffix")
    v.add_argument("--max-tokens", type=int, default=None, help="flag notes longer than this (default 3000)")
    v.add_argument("--tokenizer", help="count tokens with this local tokenizer folder instead of the regex estimate")
    v.add_argument("--modifiers", help="modifier list file replacing the built-in table")
    v.add_argument("--allow-rejects", action="store_true", help="exit 0 even if records were rejected")
    v.add_argument("--allow-unknown-icd", action="store_true", default=None,
                   help="accept well-formed ICD-10-CM codes missing from the shipped release (a site's newer "
                        "release); every reader also honours OPCLAIM_ALLOW_UNKNOWN_ICD=1")
    v.add_argument("--summary", help="also write the summary as JSON here")

    sp = verb(ds, "split", "train/val/test split (60/20/20) balanced by encounter month", """
opclaim data split cases.jsonl --out data/splits --seed 0
opclaim data split cases.jsonl --out data/splits --ratios 80,10,10""", split)
    sp.add_argument("file")
    sp.add_argument("--allow-unknown-icd", action="store_true", default=None,
                    help="accept ICD-10-CM codes missing from the shipped release")
    sp.add_argument("--out", required=True, help="folder for train.jsonl val.jsonl test.jsonl split.json")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--ratios", default="60,20,20", help="train,val,test shares")

    st = verb(ds, "stats", "token lengths, code frequencies, service mix and dates as PNG + HTML", """
opclaim data stats cases.jsonl --out reports/data
opclaim data stats cases.jsonl --out reports/data --tokenizer models/smollm2-135m""", stats)
    st.add_argument("file")
    st.add_argument("--allow-unknown-icd", action="store_true", default=None,
                    help="accept ICD-10-CM codes missing from the shipped release")
    st.add_argument("--out", required=True)
    st.add_argument("--tokenizer", help="count tokens with this local tokenizer folder")
    golden.register(ds)  # `data golden-check` lives in opclaim/commands/golden.py


def synth(args):
    from opclaim.io import write_cases
    from opclaim.synth import generate_cases

    if args.n < 1:
        raise InputError("must be at least 1", field="--n")
    prefix = args.id_prefix if args.id_prefix is not None else args.style[0]
    services = [x.strip() for x in args.services.split(",") if x.strip()] if args.services else None
    try:
        cases = generate_cases(args.n, seed=args.seed, style=args.style, length=args.length, id_prefix=prefix,
                               services=services)
    except ValueError as e:
        raise InputError(str(e), field="--services", from_command_line=True) from None
    write_cases(args.out, cases)
    print(f"wrote {len(cases)} {args.style} cases to {args.out}")


def _tokenizer(path):
    if not path:
        return None
    from opclaim.registry import load_tokenizer

    return load_tokenizer(path)


def validate(args):
    import json
    from pathlib import Path

    from opclaim import ingest
    from opclaim.codes import modifier_table
    from opclaim.io import atomic_write, json_line, write_cases

    rejects_path = Path(args.rejects or f"{str(args.file).rstrip('/')}.rejects.jsonl")
    if rejects_path.resolve() == Path(args.file).resolve():
        raise InputError("the rejects file would overwrite the input", field="--rejects")
    try:
        mapping = ingest.load_mapping(args.columns, args.map)
        max_tokens = args.max_tokens if args.max_tokens is not None else ingest.DEFAULT_MAX_TOKENS
        if max_tokens < 1:
            raise InputError("must be at least 1", field="--max-tokens")
        report = ingest.validate(args.file, fmt=args.format, mapping=mapping, max_tokens=max_tokens,
                                 tokenizer=_tokenizer(args.tokenizer),
                                 modifiers=set(modifier_table(args.modifiers)) if args.modifiers else None,
                                 allow_unknown_icd=args.allow_unknown_icd)
    except InputError:
        # The run stopped before any record was judged: a rejects file from an earlier run must
        # not stand as this run's result.
        if rejects_path.is_file():
            rejects_path.unlink()
        raise
    rows = ingest.reject_rows(report)
    # Rejected records carry note text: owner-only, atomic. Written even when empty, so a
    # stale rejects file from an earlier run never lingers.
    with atomic_write(rejects_path, private=True) as fh:
        for r in rows:
            fh.write(json_line(r))
    for r in rows[:50]:
        where = f"{report.file}:{r['line']}"
        fld = f", field '{r['field']}'" if r["field"] else ""
        sys.stderr.write(f"{where}{fld}: {r['reason']} [{r['action']}]\n")
    if len(rows) > 50:
        sys.stderr.write(f"... and {len(rows) - 50} more in {rejects_path}\n")
    if args.out:
        write_cases(args.out, report.kept)
    summary = report.summary()
    summary["rejects_file"] = str(rejects_path)
    if args.summary:
        with atomic_write(args.summary) as fh:
            json.dump(summary, fh, indent=1)
    print(f"records: {summary['records']}  valid: {summary['valid']}  rejected: {summary['rejected']}  "
          f"flagged: {summary['flagged']}")
    for k, n in summary["defects"].items():
        print(f"  defect {k}: {n}")
    for k, n in summary["cleanup"].items():
        print(f"  cleanup {k}: {n} ({ingest.RULES[k]})")
    for k, n in summary["unknown_fields"].items():
        print(f"  unknown field {k}: {n} record(s) (kept under 'extra')")
    print(f"rejects: {rejects_path}" + (f"  cleaned cases: {args.out}" if args.out else ""))
    if report.rejected and not args.allow_rejects:
        sys.stderr.write(f"opclaim data validate: {len(report.rejected)} record(s) rejected "
                         "(see the rejects file; --allow-rejects to accept)\n")
        return 2
    return 0


def split(args):
    from pathlib import Path

    from opclaim import split as splitter
    from opclaim.io import read_cases, write_cases

    try:
        ratios = [float(x) for x in args.ratios.split(",")]
        if len(ratios) != 3 or any(r < 0 for r in ratios) or sum(ratios) <= 0:
            raise ValueError
    except ValueError:
        raise InputError(f"expects three non-negative numbers like 60,20,20, got {args.ratios!r}", field="--ratios") from None
    cases = read_cases(args.file, allow_unknown_icd=args.allow_unknown_icd)
    parts = splitter.split_cases(cases, seed=args.seed, ratios=ratios)
    out = Path(args.out)
    for name, cs in parts.items():
        write_cases(out / f"{name}.jsonl", cs)
    from opclaim.artifacts import SplitRecord, save

    info = SplitRecord(source=str(args.file), seed=args.seed, ratios=ratios,
                       counts={k: len(v) for k, v in parts.items()}, by_month=splitter.month_table(parts))
    save(info, out / SplitRecord.FILE)  # last: marks the folder complete
    print("  ".join(f"{k}: {v}" for k, v in info.counts.items()) + f"  -> {out}")


def stats(args):
    from opclaim import stats as st
    from opclaim.io import read_cases

    cases = read_cases(args.file, allow_unknown_icd=args.allow_unknown_icd)
    s = st.write(cases, args.out, source=args.file, tokenizer=_tokenizer(args.tokenizer))
    print(f"{s['cases']} cases, note tokens median {s['note_tokens']['median']}, "
          f"{s['distinct_icd10']} ICD-10-CM / {s['distinct_cpt']} CPT codes -> {args.out}/index.html")
