"""Calibration of per-code confidence: a monotone map per code system (ICD-10-CM, CPT, modifiers),
fitted on a validation run only, from the raw score (eval/confidence.py) to the chance that the
code is right (it is in the gold claim).

Isotonic regression (scikit-learn) is the default; Platt scaling (logistic on the logit of the
score) is the alternative for small validation sets. The fitted map is stored as points
(x, y) and applied by linear interpolation, so applying it needs no scikit-learn and stays
monotone. The calibration file records which cases it was fitted on (each id's digest): applying
it to any of them is refused (eval/auto_review.py), so test numbers never use a map fitted on test.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from eval.confidence import SYSTEMS, code_scores
from eval.extract import extract_codes
from opclaim.artifacts import Artifact
from opclaim.errors import InputError
from opclaim.io import iter_jsonl

N_BINS = 10


@dataclass
class Calibration(Artifact):
    """cal.json: per system the fitted points, ECE before/after on validation, the routing
    threshold (eval/auto_review.py) and the validation ids' digests."""

    KIND: ClassVar[str] = "calibration"
    VERSION: ClassVar[int] = 1

    method: str
    key: str                       # which score: "p" (decoding) or "p_model"
    systems: dict                  # system -> {"x": [...], "y": [...], "n": int, "ece_before", "ece_after"}
    fitted_on: dict                # {"n_cases": int, "id_digests": [...], "predictions_sha256": str}
    routing: dict = field(default_factory=dict)  # system -> {"threshold", "target", ...}


def id_digest(case_id: str) -> str:
    return hashlib.sha256(str(case_id).encode("utf-8")).hexdigest()[:16]


def read_scored(path, gold: dict, key: str = "p") -> dict[str, dict[str, dict]]:
    """case id -> system -> code -> {"score": float | None, "correct": bool} for every predicted code
    (codes the extraction scores; a code with no confidence has score None)."""
    out: dict[str, dict[str, dict]] = {}
    for n, obj in iter_jsonl(path):
        cid = obj.get("id")
        if not isinstance(cid, str) or cid not in gold:
            raise InputError("prediction id is not in the gold file", file=path, line=n, field="id")
        conf = obj.get("confidence")
        if conf is not None and not isinstance(conf, dict):
            raise InputError("must be an object", file=path, line=n, field="confidence")
        scores = code_scores(conf, key)
        codes = extract_codes(obj.get("output") or "")
        claim = gold[cid].claim
        truth = {"icd10": claim.icd10_set(), "cpt": claim.cpt_set(), "modifiers": claim.modifier_set()}
        out[cid] = {s: {c: {"score": scores[s].get(c), "correct": c in truth[s]} for c in codes[s]}
                    for s in SYSTEMS}
    if not out:
        raise InputError("no predictions", file=path)
    return out


def pairs(scored: dict, system: str) -> tuple[np.ndarray, np.ndarray]:
    """(scores, correct) over all predicted codes of a system that have a score."""
    xs, ys = [], []
    for case in scored.values():
        for v in case[system].values():
            if v["score"] is not None:
                xs.append(v["score"])
                ys.append(float(v["correct"]))
    return np.array(xs, dtype=float), np.array(ys, dtype=float)


def ece(scores, correct, n_bins: int = N_BINS) -> float | None:
    """Expected calibration error: |accuracy - mean score| per equal-width bin, weighted by the bin's share."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, float)
    if not len(scores):
        return None
    bins = np.minimum((scores * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            total += m.mean() * abs(correct[m].mean() - scores[m].mean())
    return float(total)


def fit_points(x, y, method: str = "isotonic") -> tuple[list[float], list[float]]:
    """A monotone (non-decreasing) map as points (x ascending, y in [0, 1])."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) == 0:
        return [0.0, 1.0], [0.0, 1.0]  # nothing to fit: identity
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(x, y)
        return [float(v) for v in iso.X_thresholds_], [float(v) for v in iso.y_thresholds_]
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        if len(set(y.tolist())) < 2:
            return [0.0, 1.0], [float(y[0])] * 2
        z = _logit(x)[:, None]
        lr = LogisticRegression(C=1e4).fit(z, y)
        grid = np.linspace(0.0, 1.0, 101)
        yy = lr.predict_proba(_logit(grid)[:, None])[:, 1]
        if lr.coef_[0, 0] < 0:  # a decreasing fit is not a calibration of this score: flat
            yy = np.full_like(grid, y.mean())
        return [float(v) for v in grid], [float(v) for v in np.maximum.accumulate(yy)]
    raise InputError(f"unknown calibration method {method!r} (isotonic, platt)", field="--method")


def _logit(x):
    x = np.clip(np.asarray(x, float), 1e-6, 1 - 1e-6)
    return np.log(x / (1 - x))


def apply_points(points: dict, score: float | None) -> float | None:
    if score is None or (isinstance(score, float) and math.isnan(score)):
        return None
    return float(np.interp(score, points["x"], points["y"]))


def fit(scored: dict, *, method: str = "isotonic", key: str = "p", predictions_sha256: str = "") -> Calibration:
    systems = {}
    for s in SYSTEMS:
        x, y = pairs(scored, s)
        px, py = fit_points(x, y, method)
        pts = {"x": px, "y": py}
        after = [apply_points(pts, v) for v in x]
        systems[s] = {**pts, "n": int(len(x)), "ece_before": ece(x, y), "ece_after": ece(after, y)}
    return Calibration(method=method, key=key, systems=systems,
                       fitted_on={"n_cases": len(scored), "id_digests": sorted(id_digest(i) for i in scored),
                                  "predictions_sha256": predictions_sha256})


def calibrated(cal: Calibration, scored: dict) -> dict:
    """`scored` with each code's score mapped through the system's fitted points (new dict)."""
    return {cid: {s: {c: {**v, "score": apply_points(cal.systems[s], v["score"])} for c, v in case[s].items()}
                  for s in SYSTEMS} for cid, case in scored.items()}


def annotate(conf: dict, cal: Calibration) -> dict:
    """`opclaim infer --calibration`: each code of a row's `confidence` gets `p_cal` (its `cal.key`
    score through the system's fitted points) and `route` (auto at or above the system's threshold,
    chosen on validation; review otherwise, and always when no threshold qualified)."""
    for c in conf.get("codes", []):
        pts = cal.systems.get(c.get("system"))
        if pts is None:
            continue
        v = apply_points(pts, c.get(cal.key))
        c["p_cal"] = None if v is None else round(v, 6)
        t = (cal.routing.get(c["system"]) or {}).get("threshold")
        c["route"] = "auto" if t is not None and v is not None and v >= t else "review"
    return conf


def refuse_fitted_cases(cal: Calibration, ids, path=None) -> None:
    """A calibration (and threshold) fitted on any of these cases must not score them."""
    seen = set(cal.fitted_on.get("id_digests", []))
    overlap = sum(id_digest(i) in seen for i in ids)
    if overlap:
        raise InputError(f"the calibration was fitted on {overlap} of these cases; fit it on validation "
                         "and apply it to other cases", file=path, field="--calibration")


def save_figure(fig, path, title: str = "") -> None:
    """Title, tight layout, PNG at 96 dpi, closed: how every confidence plot is written."""
    import matplotlib.pyplot as plt

    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=96)
    plt.close(fig)


def reliability_png(path, scored_before: dict, scored_after: dict | None, title: str = "") -> None:
    """Reliability diagram per system: accuracy per score bin, before (and after) calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SYSTEMS), figsize=(10, 3.4), sharey=True)
    for ax, s in zip(axes, SYSTEMS, strict=True):
        ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--")
        for label, sc, colour in (("raw", scored_before, "#c0392b"), ("calibrated", scored_after, "#2471a3")):
            if sc is None:
                continue
            x, y = pairs(sc, s)
            if not len(x):
                continue
            bins = np.minimum((x * N_BINS).astype(int), N_BINS - 1)
            mx = [x[bins == b].mean() for b in range(N_BINS) if (bins == b).any()]
            my = [y[bins == b].mean() for b in range(N_BINS) if (bins == b).any()]
            ax.plot(mx, my, marker="o", color=colour, label=f"{label} (ECE {ece(x, y):.3f})")
        ax.set_title(s, fontsize=11)
        ax.set_xlabel("confidence", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8, loc="upper left")
    axes[0].set_ylabel("share correct", fontsize=10)
    save_figure(fig, path, title)
