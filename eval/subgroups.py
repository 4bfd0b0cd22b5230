"""Subgroup evaluation (BearPlex's subpopulation check): every configuration's F1 by service, age
band and sex, with case counts and bootstrap intervals, and a flag on any subgroup whose F1 lies
below the overall F1 by more than its own interval.

F1 per resample is computed from that resample's mean precision and mean recall (the same rule as
the headline F1), so a subgroup's interval is the 2.5th-97.5th percentile of those F1 values.
A subgroup is flagged when its whole interval is below the overall F1 (overall F1 - subgroup F1 >
upper bound - subgroup F1) and it has at least MIN_FLAG_CASES cases: one bad case is not a group.
Cases without patient fields form the "unknown" group; nothing here reads note text.
"""

from __future__ import annotations

import numpy as np

from eval import bootstrap
from opclaim.patient import AGE_BANDS, UNKNOWN, age_band, attach_raw_fields, patient_of

COMPONENTS = ("icd10", "cpt", "modifier")
DIMENSIONS = ("service", "age_band", "sex")
MIN_FLAG_CASES = 5
__all__ = ["AGE_BANDS", "MIN_FLAG_CASES", "age_band", "attach_raw_fields", "breakdown", "patient_of"]


# Patient fields are read through opclaim.patient (one accessor for the whole repo).
def group_of(case, dimension: str) -> str:
    if dimension == "service":
        return case.service or UNKNOWN
    p = patient_of(case)
    if dimension == "age_band":
        return age_band(p["age"])
    return p["sex"] or UNKNOWN


def _order(dimension: str, groups) -> list[str]:
    if dimension == "age_band":
        known = [b[2] for b in AGE_BANDS]
    elif dimension == "sex":
        known = ["F", "M", "U"]
    else:
        known = sorted(g for g in groups if g != UNKNOWN)
    return [g for g in known if g in groups] + ([UNKNOWN] if UNKNOWN in groups else [])


# ---------------------------------------------------------------- scores
def _f1(p, r):
    p, r = np.asarray(p, dtype=float), np.asarray(r, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(p + r > 0, 2 * p * r / (p + r), 0.0)


def _group_stats(p: dict, r: dict, n_boot: int, seed: int) -> dict:
    """{comp: {precision, recall, f1, f1_ci}} for one group's per-case P/R arrays."""
    out = {}
    arrays = {f"{c}.{k}": v[c] for c in COMPONENTS for k, v in (("p", p), ("r", r))}
    boot = bootstrap.resampled_means(arrays, n_boot, seed) if n_boot > 0 else {}
    for c in COMPONENTS:
        mp, mr = float(np.mean(p[c])), float(np.mean(r[c]))
        ci = None
        if boot:
            f1s = _f1(boot[f"{c}.p"], boot[f"{c}.r"])
            ci = bootstrap.interval(f1s)
        out[c] = {"precision": mp, "recall": mr, "f1": float(_f1(mp, mr)), "f1_ci": ci}
    return out


def breakdown(cases: list, scores: list, n_boot: int = 1000, seed: int = 0) -> dict:
    """The subgroup block of one configuration on one gold set (`scores[i]` scores `cases[i]`)."""
    if not scores:
        return {"overall": {}, "dimensions": {}, "flags": []}
    p = {c: np.array([s.p[c] for s in scores]) for c in COMPONENTS}
    r = {c: np.array([s.r[c] for s in scores]) for c in COMPONENTS}
    overall = _group_stats(p, r, n_boot, seed)
    dims, flags = {}, []
    for dim in DIMENSIONS:
        labels = [group_of(c, dim) for c in cases]
        rows = {}
        for g in _order(dim, set(labels)):
            idx = np.array([i for i, x in enumerate(labels) if x == g])
            stats = _group_stats({c: v[idx] for c, v in p.items()}, {c: v[idx] for c, v in r.items()}, n_boot, seed)
            row = {"n_cases": int(idx.size), **stats, "flagged": []}
            for c in COMPONENTS:
                ci = stats[c]["f1_ci"]
                if idx.size >= MIN_FLAG_CASES and ci is not None and ci[1] < overall[c]["f1"]:
                    row["flagged"].append(c)
                    flags.append({"dimension": dim, "group": g, "component": c, "n_cases": int(idx.size),
                                  "f1": stats[c]["f1"], "f1_ci": ci, "overall_f1": overall[c]["f1"]})
            rows[g] = row
        dims[dim] = rows
    return {"overall": {"n_cases": len(scores), **overall}, "dimensions": dims, "flags": flags,
            "rule": f"flagged: n >= {MIN_FLAG_CASES} and the subgroup's 95% F1 interval lies below the "
                    "overall F1", "age_bands": [b[2] for b in AGE_BANDS]}
