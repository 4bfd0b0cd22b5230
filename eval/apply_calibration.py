"""`opclaim eval --calibration`: a calibration fitted on validation (`opclaim calibrate`) applied to
each configuration's per-code confidence, codes routed auto/review at the calibration's own
threshold, and the routing numbers (eval/auto_review.py) written into that configuration's block.

Nothing is fitted here: the threshold comes from cal.json, chosen on validation; a calibration
fitted on any case of the gold set being scored is not applied to it (its block says why).
"""

from __future__ import annotations

from pathlib import Path

from eval import auto_review, calibrate
from eval.confidence import SYSTEMS, code_scores
from eval.metrics import Run
from opclaim.errors import InputError

FREQ_RULE = f"common: the code occurs at least {auto_review.COMMON} times in the counted cases; rare: fewer"


def scored_run(run: Run, key: str = "p") -> dict | None:
    """id -> system -> code -> {"score", "correct"} over every case of the run (a case without a
    prediction has no codes); None when no prediction of the run carries confidence."""
    if not any(run.confidence):
        return None
    out = {}
    for case, s, conf in zip(run.cases, run.scores, run.confidence, strict=True):
        scores = code_scores(conf, key)
        codes = {"icd10": s.extraction.icd10, "cpt": s.extraction.cpt, "modifiers": s.extraction.modifiers}
        truth = {"icd10": s.gold["icd10"], "cpt": s.gold["cpt"], "modifiers": s.gold["modifier"]}
        out[case.id] = {m: {c: {"score": scores[m].get(c), "correct": c in truth[m]} for c in codes[m]}
                        for m in SYSTEMS}
    return out


def load_calibrations(values: list[str], target: float, split_label) -> dict[str | None, tuple]:
    """--calibration values -> {config or None (all): (Calibration, file name)}. The thresholds in
    each file must have been chosen for `target`; another target needs another `opclaim calibrate`."""
    from opclaim import artifacts

    out: dict[str | None, tuple] = {}
    for value in values:
        label, path = split_label(value)
        if label in out:
            raise InputError(f"calibration for {label or 'all configurations'!r} given twice",
                             field="--calibration", from_command_line=True)
        cal = artifacts.load(calibrate.Calibration, path)
        if not cal.routing:
            raise InputError("has no routing thresholds; re-create it with `opclaim calibrate`", file=path,
                             field="routing")
        for s in SYSTEMS:
            got = (cal.routing.get(s) or {}).get("target")
            if got is None or abs(float(got) - target) > 1e-9:
                raise InputError(f"thresholds were chosen on validation for target precision {got}, not {target}; "
                                 f"run `opclaim calibrate --target-precision {target}` (eval never picks a "
                                 "threshold on test)", file=path, field=f"routing.{s}.target")
        out[label] = (cal, Path(path).name)
    return out


def pick(cals: dict, run: Run):
    """The calibration for a run: labelled by GOLD/CONFIG or CONFIG, else the unlabelled one."""
    for key in (run.label, run.config, None):
        if key in cals:
            return cals[key]
    return None


def check_labels(cals: dict, pairs) -> None:
    """Every CONFIG= label names an evaluated configuration (checked before any scoring)."""
    known = {c for _, c in pairs} | {f"{g}/{c}" for g, c in pairs}
    for label in cals:
        if label is not None and label not in known:
            raise InputError(f"--calibration names configuration {label!r}, which is not evaluated "
                             f"(known: {', '.join(sorted(known))})", field="--calibration", from_command_line=True)


def apply(run: Run, cal, cal_name: str, *, train_counts: dict | None, train_name: str | None,
          n_boot: int, seed: int) -> None:
    """Set run.scored / run.routes and run.block["routing"] (or block["routing_skipped"])."""
    raw = scored_run(run, cal.key)
    if raw is None:
        return  # no confidence in these predictions: nothing to route (not an error)
    try:
        calibrate.refuse_fitted_cases(cal, [c.id for c in run.cases])
    except InputError as e:
        run.block["routing_skipped"] = f"{cal_name}: {e.reason}"
        return
    after = calibrate.calibrated(cal, raw)
    counts = train_counts if train_counts is not None else auto_review.train_code_counts(run.cases)
    res = auto_review.evaluate(after, {c.id: c for c in run.cases}, cal.routing, train_counts=counts,
                           n_boot=n_boot, seed=seed)
    auto_review.add_ece(res, raw, after)
    for s in SYSTEMS:
        res["systems"][s]["alpha"] = (cal.routing.get(s) or {}).get("alpha")
    res["calibration"] = {"file": cal_name, "method": cal.method, "key": cal.key,
                          "fitted_on_cases": cal.fitted_on.get("n_cases")}
    res["target_precision"] = (cal.routing.get("icd10") or {}).get("target")
    res["frequency"] = {"basis": "training set" if train_counts is not None else "this gold set",
                        "file": train_name, "rule": FREQ_RULE}
    run.block["routing"] = res
    run.scored, run.routes = after, auto_review.route(after, cal.routing)
