"""`opclaim calibrate` (fit on validation) and `opclaim route` (apply to test): per-code
confidence calibrated per code system, auto/review routing at a target precision
(eval/calibrate.py, eval/auto_review.py, docs/confidence.md)."""

from __future__ import annotations

import json
from pathlib import Path

from opclaim.cli import verb


def register(subs):
    p = verb(subs, "calibrate", "fit per-code confidence calibration and routing thresholds on validation", """
opclaim calibrate --predictions runs/val.jsonl --gold data/val.jsonl --out runs/cal.json
opclaim calibrate --predictions runs/val.jsonl --gold data/val.jsonl --out runs/cal.json --target-precision 0.98""",
             _calibrate)
    p.add_argument("--predictions", required=True, help="validation predictions with `confidence` (opclaim infer/knn)")
    p.add_argument("--gold", required=True, help="the validation cases (JSONL)")
    p.add_argument("--out", required=True, help="calibration file (JSON); a reliability diagram is written beside it")
    p.add_argument("--method", choices=("isotonic", "platt"), default="isotonic")
    p.add_argument("--key", choices=("p", "p_model", "agree"), default="p",
                   help="p: the decoding's probability (with the grammar mask when constrained); p_model: the raw model's; agree: the share of the RAG examples carrying the code")
    p.add_argument("--target-precision", type=float, default=0.95)
    p.add_argument("--alpha", type=float, default=0.05, help="1 - confidence of the precision lower bound")
    r = verb(subs, "route", "route predicted codes auto/review with a calibration fitted on validation", """
opclaim route --predictions runs/test.jsonl --gold data/test.jsonl --calibration runs/cal.json --out runs/routing
opclaim route --predictions runs/test.jsonl --gold data/test.jsonl --calibration runs/cal.json --train data/train.jsonl --out runs/routing""",
             _route)
    r.add_argument("--predictions", required=True)
    r.add_argument("--gold", required=True, help="the test cases (JSONL), never the calibration's validation cases")
    r.add_argument("--calibration", required=True, help="from `opclaim calibrate`")
    r.add_argument("--train", help="training cases: splits the numbers into common and rare codes")
    r.add_argument("--out", required=True, help="folder: auto_review.json, routes.jsonl (0600), PNG plots")
    r.add_argument("--bootstrap", type=int, default=1000)


def _check_unit(v: float, name: str) -> None:
    from opclaim.errors import InputError

    if not 0.0 < v < 1.0:
        raise InputError("must be between 0 and 1", field=name)


def _calibrate(args):
    from eval import auto_review, calibrate
    from opclaim import artifacts
    from opclaim.io import read_cases

    _check_unit(args.target_precision, "--target-precision")
    _check_unit(args.alpha, "--alpha")
    gold = {c.id: c for c in read_cases(args.gold)}
    scored = calibrate.read_scored(args.predictions, gold, args.key)
    cal = calibrate.fit(scored, method=args.method, key=args.key,
                        predictions_sha256=artifacts.sha256_file(args.predictions))
    after = calibrate.calibrated(cal, scored)
    cal.routing = auto_review.fit_thresholds(after, target=args.target_precision, alpha=args.alpha)
    out = artifacts.save(cal, args.out)
    calibrate.reliability_png(Path(out).with_suffix(".png"), scored, after, "validation")
    for s, d in cal.systems.items():
        before, aft = d["ece_before"], d["ece_after"]
        t = cal.routing[s]["threshold"]
        print(f"{s}: {d['n']} codes, ECE {_f(before)} -> {_f(aft)} (in-sample), threshold {_f(t)}")
    print(f"wrote {out}")
    return 0


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _route(args):
    from eval import auto_review, calibrate
    from opclaim import artifacts
    from opclaim.io import atomic_write, read_cases

    cal = artifacts.load(calibrate.Calibration, args.calibration)
    gold = {c.id: c for c in read_cases(args.gold)}
    scored = calibrate.read_scored(args.predictions, gold, cal.key)
    calibrate.refuse_fitted_cases(cal, scored, args.predictions)
    after = calibrate.calibrated(cal, scored)
    train = auto_review.train_code_counts(read_cases(args.train)) if args.train else None
    res = auto_review.evaluate(after, gold, cal.routing, train_counts=train, n_boot=args.bootstrap)
    auto_review.add_ece(res, scored, after)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "routing.json") as fh:
        json.dump(res, fh, indent=2)
        fh.write("\n")
    routes = auto_review.route(after, cal.routing)
    with atomic_write(out / "routes.jsonl", private=True) as fh:  # ids and codes only, no note text
        for cid in sorted(routes):
            codes = {s: {c: {"route": r, "confidence": after[cid][s][c]["score"]} for c, r in d.items()}
                     for s, d in routes[cid]["codes"].items()}
            fh.write(json.dumps({"id": cid, "route": routes[cid]["route"], "codes": codes}) + "\n")
    auto_review.curve_png(out / "precision_coverage.png", {"test": {s: res["systems"][s]["curve"] for s in calibrate.SYSTEMS}})
    calibrate.reliability_png(out / "reliability.png", scored, after, "test")
    for s, d in res["systems"].items():
        print(f"{s}: auto precision {_f(d['precision'])}, coverage {_f(d['coverage'])}, "
              f"recall lost {_f(d['recall_lost'])}")
    print(f"cases fully automated: {res['cases_auto']}/{res['cases']}; wrote {out}")
    return 0
