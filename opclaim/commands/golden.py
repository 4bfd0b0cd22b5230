"""`opclaim data golden-check DIR`: the hand-written golden set stays valid, billable, spread over
every service, and unlike anything our generator writes. Prints the code distribution.

Registered under `opclaim data` by one line in opclaim/commands/data.py (`golden.register(ds)`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from opclaim.cli import verb
from opclaim.errors import InputError

MIN_DEPARTMENT = 30  # the demo's department (Ophthalmology) needs at least this many cases
DEPARTMENT = "Ophthalmology"


def register(ds) -> None:
    g = verb(ds, "golden-check", "check a hand-written golden set: validates, every ICD-10-CM code "
             "billable, all services covered, no near-duplicate of a synthetic note; code distribution", """
opclaim data golden-check data/golden
opclaim data golden-check data/golden --sample 4000 --json reports/golden_check.json""", _run)
    g.add_argument("dir", help="folder of golden *.jsonl files (or one file)")
    g.add_argument("--sample", type=int, default=None, help="synthetic notes to compare with (default 2000)")
    g.add_argument("--seed", type=int, default=0, help="seed of the synthetic sample")
    g.add_argument("--threshold", type=float, default=None, help="Jaccard at or above which a note is a "
                   "near-duplicate (default 0.2)")
    g.add_argument("--json", help="also write the full report (per-note similarity, distribution) here")


def golden_files(path: str | Path) -> list[Path]:
    p = Path(path)
    if p.is_file():
        return [p]
    files = sorted(p.glob("*.jsonl")) if p.is_dir() else []
    if not files:
        raise InputError("no golden *.jsonl files", file=p)
    return files


def check(path: str | Path, sample_n: int | None = None, seed: int = 0, threshold: float | None = None,
          sample: list | None = None) -> dict:
    """Everything the golden-set test and the verb assert, as one JSON-able report (no note text)."""
    from opclaim import ingest, neardup
    from opclaim.codes import icd10_billable, icd10_release
    from opclaim.io import iter_jsonl
    from opclaim.synth.scenario import SERVICES

    files, cases, problems = golden_files(path), [], []
    for f in files:
        rep = ingest.validate(f)
        problems += [{"file": f.name, "line": p.where, "field": p.field, "reason": p.reason, "id": p.id}
                     for p, _ in rep.rejected]
        cases += rep.kept
        # golden records say so and carry no synthetic writer's style (docs/golden.md)
        for n, obj in iter_jsonl(f):
            if obj.get("source") != "golden":
                problems.append({"file": f.name, "line": n, "field": "source", "reason": 'not "golden"',
                                 "id": str(obj.get("id"))})
            if obj.get("style") is not None:
                problems.append({"file": f.name, "line": n, "field": "style",
                                 "reason": "a golden note has no synthetic style", "id": str(obj.get("id"))})
    ids = [c.id for c in cases]
    problems += [{"file": None, "line": None, "field": "id", "reason": "id in two golden files", "id": i}
                 for i in sorted({i for i in ids if ids.count(i) > 1})]
    billable = icd10_billable()
    not_billable = sorted({(c.id, code) for c in cases for code in c.claim.icd10 if code not in billable})
    if sample is None:
        sample = neardup.synthetic_sample(sample_n or neardup.SAMPLE, seed=seed)
    nd = neardup.check(cases, sample, threshold if threshold is not None else neardup.THRESHOLD,
                       n_baseline=60)
    dist = neardup.code_distribution(cases)
    missing = [s for s in SERVICES if s not in dist["services"]]
    n_dept = dist["services"].get(DEPARTMENT, {}).get("cases", 0)
    ok = not problems and not not_billable and not nd["near_duplicates"] and not missing and n_dept >= MIN_DEPARTMENT
    return {"files": [f.name for f in files], "cases": len(cases), "ok": ok, "invalid": problems,
            "icd10_release": icd10_release(),
            "not_billable": [{"id": i, "code": c} for i, c in not_billable],
            "services_missing": missing, "department": {"service": DEPARTMENT, "cases": n_dept,
                                                        "minimum": MIN_DEPARTMENT},
            "near_duplicate": nd, "distribution": dist}


def _run(args) -> int:
    from opclaim.io import atomic_write

    if args.sample is not None and args.sample < 1:
        raise InputError("must be at least 1", field="--sample")
    r = check(args.dir, args.sample, args.seed, args.threshold)
    nd, dist = r["near_duplicate"], r["distribution"]
    print(f"golden set: {r['cases']} cases in {len(r['files'])} file(s); "
          f"{len(r['invalid'])} invalid record(s)")
    for p in r["invalid"][:20]:
        sys.stderr.write(f"  {p['file']}:{p['line']} field {p['field']}: {p['reason']}\n")
    print(f"ICD-10-CM not billable in {r['icd10_release']}: {len(r['not_billable'])}"
          + "".join(f"\n  {x['id']}: {x['code']}" for x in r["not_billable"][:20]))
    print(f"services: {dist['n_services']} of 16" + (f" (missing: {', '.join(r['services_missing'])})"
                                                     if r["services_missing"] else "")
          + f"; {DEPARTMENT}: {r['department']['cases']} (minimum {MIN_DEPARTMENT})")
    base = nd.get("synthetic_baseline") or {}
    print(f"near-duplicate ({nd['method']}) against {nd['n_synthetic']} synthetic notes: "
          f"max {nd['max_similarity']:.3f}, median {nd['median_similarity']:.3f}, threshold {nd['threshold']}"
          + (f"; fresh synthetic notes score {base['min']:.2f}-{base['max']:.2f} (median {base['median']:.2f})"
             if base else ""))
    for i in nd["near_duplicates"]:
        print(f"  near-duplicate: {i}")
    closest = sorted(nd["per_note"], key=lambda x: -x["max_jaccard"])[:5]
    print("  closest: " + ", ".join(f"{x['id']} {x['max_jaccard']:.3f} (to {x['nearest_synthetic']})" for x in closest))
    print(f"{'service':<22} {'cases':>5} {'ICD':>4} {'CPT':>4} {'MOD':>4}  distinct codes billed")
    for name, s in dist["services"].items():
        print(f"{name:<22} {s['cases']:>5} {len(s['icd10']):>4} {len(s['cpt']):>4} {len(s['modifiers']):>4}")
    print(f"{'all':<22} {dist['cases']:>5} {dist['distinct']['icd10']:>4} {dist['distinct']['cpt']:>4} "
          f"{dist['distinct']['modifiers']:>4}")
    top = ", ".join(f"{m} ({n})" for m, n in list(dist["totals"]["modifiers"].items())[:15])
    print(f"modifiers: {top or 'none'}")
    if args.json:
        with atomic_write(args.json) as fh:
            json.dump(r, fh, indent=1)
    print("golden check: " + ("PASS" if r["ok"] else "FAIL"))
    return 0 if r["ok"] else 2
