"""`opclaim extract` and `opclaim eval` (docs/design.md "Command line")."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from opclaim.cli import verb
from opclaim.errors import InputError

EXTRACT_EXAMPLES = """
opclaim extract < output.txt
opclaim extract output.txt
"""
EVAL_EXAMPLES = """
opclaim eval --predictions preds.jsonl --gold test.jsonl --out runs/eval
opclaim eval --predictions base=base.jsonl --predictions rag=rag.jsonl --predictions finetuned=ft.jsonl --gold test.jsonl --out runs/compare --gpu-hour-cost 2.50
opclaim eval --predictions ft=ft.jsonl --gold test.jsonl --calibration ft=runs/cal.json --train train.jsonl --out runs/eval
opclaim eval --gold val=val.jsonl --gold test=test.jsonl --gold terse=terse.jsonl --predictions val/finetuned=pv.jsonl --predictions test/finetuned=pt.jsonl --predictions terse/finetuned=px.jsonl --out runs/generalisation
"""


def register(subs) -> None:
    p = verb(subs, "extract", "Extract ICD-10-CM, CPT and CPT-MOD codes from one raw model output "
             "(stdin or FILE) and print them as JSON.", EXTRACT_EXAMPLES, run_extract)
    p.add_argument("file", nargs="?", type=Path, help="a text file (default: standard input)")

    p = verb(subs, "eval", "Score predictions against gold claims: metrics.json, report.html and "
             "the cases.csv worklist in --out.", EVAL_EXAMPLES, main)
    p.add_argument("--predictions", action="append", required=True, metavar="[LABEL=]FILE",
                   help="predictions JSONL; LABEL is CONFIG, or GOLD/CONFIG with several --gold. "
                        "Unlabelled: records are grouped by their own 'config' field. Repeatable.")
    p.add_argument("--gold", action="append", required=True, metavar="[NAME=]FILE",
                   help="gold cases JSONL (NAME defaults to the file's stem). Repeatable.")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--icd-ref", type=Path, help="ICD-10-CM reference list (default: CMS billable codes)")
    p.add_argument("--cpt-ref", type=Path, help="CPT reference list (default: synthetic catalog + gold codes)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (0: none)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--gpu-hour-cost", type=float, help="price of one GPU hour, for cost per 1,000 cases")
    p.add_argument("--title", default="opclaim evaluation", help="report title")
    p.add_argument("--headline-config", metavar="NAME",
                   help="configuration of the headline numbers (default: finetuned, else the first)")
    p.add_argument("--report-cases", type=int, default=100, metavar="N",
                   help="worst cases per gold set shown in the report's coder section")
    p.add_argument("--workers", type=int, help="processes for ROUGE/METEOR (default: all cores)")
    p.add_argument("--calibration", action="append", default=[], metavar="[CONFIG=]FILE",
                   help="cal.json from `opclaim calibrate` (fitted on validation): calibrates the predictions' "
                        "per-code confidence and routes codes auto/review at its threshold. CONFIG (or GOLD/CONFIG) "
                        "picks the configuration; unlabelled: every configuration. Repeatable")
    p.add_argument("--target-precision", type=float, default=0.95,
                   help="the routing target; must be the one the calibration's thresholds were chosen for")
    p.add_argument("--train", type=Path, metavar="FILE",
                   help="training cases: common/rare codes by training frequency (default: the gold set's own)")
    p.add_argument("--evidence", choices=("bm25", "minilm", "none"), default="bm25",
                   help="how each predicted code's note sentence is found (docs/confidence.md)")


def run_extract(args) -> int:
    from eval.extract import extract_codes

    if args.file:
        if not args.file.is_file():
            raise InputError("file not found", file=args.file)
        data = args.file.read_bytes()
    else:
        data = sys.stdin.buffer.read()
    print(json.dumps(extract_codes(data)))
    return 0


def _split_label(value: str) -> tuple[str | None, Path]:
    """'name=path' -> (name, path); a value that is itself an existing file has no label."""
    if "=" in value and not Path(value).exists():
        name, _, path = value.partition("=")
        if not name.strip() or not path:
            raise InputError(f"expected LABEL=FILE, got {value!r}", field="--predictions/--gold",
                             from_command_line=True)
        return name.strip(), Path(path)
    return None, Path(value)


def main(args) -> int:
    from eval import apply_calibration, evidence, headline, metrics, report, subgroups, worklist
    from opclaim.artifacts import EvalMetrics
    from opclaim.io import atomic_write, read_cases

    if args.bootstrap < 0:
        raise InputError("must be >= 0", field="--bootstrap")
    if args.gpu_hour_cost is not None and args.gpu_hour_cost < 0:
        raise InputError("must be >= 0", field="--gpu-hour-cost")
    if not 0.0 < args.target_precision < 1.0:
        raise InputError("must be between 0 and 1", field="--target-precision")
    cals = apply_calibration.load_calibrations(args.calibration, args.target_precision, _split_label)
    train_counts = None
    if args.train:
        from eval.auto_review import train_code_counts

        train_counts = train_code_counts(read_cases(args.train))
    # -- gold sets
    golds: dict[str, list] = {}
    gold_files: dict[str, str] = {}
    for value in args.gold:
        name, path = _split_label(value)
        name = name or path.stem
        if name in golds:
            raise InputError(f"gold set name {name!r} given twice", field="--gold", from_command_line=True)
        golds[name] = metrics.read_gold(path)
        subgroups.attach_raw_fields(golds[name], path)  # patient, source (until Case parses them)
        gold_files[name] = path.name
    # -- predictions: (gold name, config, {id: Prediction})
    staged: list[tuple[str, str, dict]] = []
    seen: set[tuple[str, str]] = set()
    for value in args.predictions:
        label, path = _split_label(value)
        gname, cfg = _resolve(label, golds, value)
        ids = {c.id for c in golds[gname]}
        groups = metrics.read_predictions(path, ids, cfg)
        for config, preds in groups.items():
            if (gname, config) in seen:
                raise InputError(f"configuration {config!r} on gold {gname!r} given twice", file=path,
                                 field="--predictions")
            seen.add((gname, config))
            staged.append((gname, config, preds))
    apply_calibration.check_labels(cals, seen)
    refs = metrics.load_references([c for cs in golds.values() for c in cs], args.icd_ref, args.cpt_ref)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    # metrics.json is written last: its presence marks a complete run, so drop a stale one first.
    (out / "metrics.json").unlink(missing_ok=True)
    runs = metrics.evaluate(golds, staged, refs, n_boot=args.bootstrap, seed=args.seed,
                            gpu_hour_cost=args.gpu_hour_cost, workers=args.workers)
    for r in runs:
        r.block["subgroups"] = subgroups.breakdown(r.cases, r.scores, n_boot=args.bootstrap, seed=args.seed)
        chosen = apply_calibration.pick(cals, r)
        if chosen:
            apply_calibration.apply(r, *chosen, train_counts=train_counts, train_name=args.train.name if args.train else None,
                         n_boot=args.bootstrap, seed=args.seed)
        if args.evidence != "none":
            r.evidence = evidence.for_run(r, refs, args.evidence)
    head = headline.build(runs, golds, prefer=args.headline_config)
    worklist.write(out / "cases.csv", runs, refs)
    report.write(out / "report.html", runs, refs, title=args.title, n_boot=args.bootstrap, seed=args.seed,
                 max_cases=args.report_cases, headline=head)
    doc = {"schema": EvalMetrics.schema(),
           "gold_sets": {g: {"file": gold_files[g], "n_cases": len(cs), "role": head["roles"][g]}
                         for g, cs in golds.items()},
           "headline": head,
           "configs": {r.label: r.block for r in runs},
           "references": refs.describe(), "conventions": metrics.CONVENTIONS,
           "bootstrap": {"n": args.bootstrap, "seed": args.seed, "percentiles": [2.5, 97.5]}}
    if len(runs) == 1:  # a single configuration: its block is also at the top level
        doc = {**runs[0].block, **doc}
    with atomic_write(out / "metrics.json") as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False)
    for r in runs:
        b = r.block
        sys.stderr.write(f"{r.label}: {b['n_cases']} cases ({b['n_missing_predictions']} missing) · "
                         f"F1 ICD {b['icd10']['f1']:.3f} CPT {b['cpt']['f1']:.3f} MOD {b['modifier']['f1']:.3f}\n")
        if b.get("routing"):
            rt = b["routing"]
            sys.stderr.write(f"  routing at {rt['target_precision']}: {rt['cases_auto']}/{rt['cases']} cases fully "
                             "automated; auto precision " + ", ".join(
                                 f"{k} {_pct(v['precision'])} (coverage {_pct(v['coverage'])})"
                                 for k, v in rt["systems"].items()) + "\n")
        elif b.get("routing_skipped"):
            sys.stderr.write(f"  routing skipped: {b['routing_skipped']}\n")
        elif apply_calibration.pick(cals, r):
            sys.stderr.write("  no routing: these predictions carry no per-code confidence\n")
        for f in b["subgroups"]["flags"]:
            sys.stderr.write(f"  subgroup flag: {f['dimension']}={f['group']} (n={f['n_cases']}) {f['component']} "
                             f"F1 {f['f1']:.3f} below overall {f['overall_f1']:.3f} by more than its interval\n")
    if head["source"] is not None:
        sys.stderr.write(f"headline numbers from gold set {head['source']!r} ({head['label']})\n")
    sys.stderr.write(f"wrote {out}/metrics.json, report.html, cases.csv\n")
    return 0


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _resolve(label: str | None, golds: dict, value: str) -> tuple[str, str | None]:
    """Which gold set and configuration a --predictions value belongs to."""
    names = list(golds)
    if label is None:
        if len(names) > 1:
            raise InputError(f"with several --gold sets, label predictions as GOLD/CONFIG=FILE (got {value!r})",
                             field="--predictions", from_command_line=True)
        return names[0], None
    if "/" in label:
        gname, _, cfg = label.partition("/")
        if gname not in golds:
            raise InputError(f"unknown gold set {gname!r} (known: {', '.join(names)})", field="--predictions",
                             from_command_line=True)
        if not cfg:
            raise InputError(f"empty configuration name in {value!r}", field="--predictions",
                             from_command_line=True)
        return gname, cfg
    if len(names) > 1:
        raise InputError(f"with several --gold sets, label predictions as GOLD/CONFIG=FILE (got {value!r})",
                         field="--predictions", from_command_line=True)
    return names[0], label
