"""Routing: each predicted code goes `auto` (accepted without a coder) or `review`; a case is `auto`
only when all its codes are.

The threshold per code system is chosen on validation: scanning thresholds from the highest score
down, a threshold is kept while the Clopper–Pearson lower bound (one-sided, level 1 - alpha) on
the precision of the codes at or above it reaches the target; the scan stops at the first failure
(fixed-sequence testing, so the bound holds for the chosen threshold); the scan starts at the
smallest number of codes that could reach the target at all. No threshold passes ->
nothing is auto-accepted. The threshold is then applied, unchanged, to test.

Numbers on test (`evaluate`), per system: precision and coverage of auto codes (coverage = share
of the correctly predicted codes that are auto-accepted) with bootstrap intervals over cases,
share of cases fully automated, recall lost by routing (recall of all predictions minus recall
of the auto-accepted ones), and the same split by code frequency in training (common >= COMMON).
"""

from __future__ import annotations

import math

import numpy as np

from eval.calibrate import pairs, save_figure
from eval.confidence import SYSTEMS

TARGET = 0.95
ALPHA = 0.05
COMMON = 10  # a code seen at least this often in training is "common"


def clopper_pearson_lower(k: int, n: int, alpha: float = ALPHA) -> float:
    from scipy.stats import beta

    if n == 0 or k == 0:
        return 0.0
    return float(beta.ppf(alpha, k, n - k + 1))


def choose_threshold(scores, correct, target: float = TARGET, alpha: float = ALPHA) -> dict:
    """{"threshold", "target", "alpha", "n_val", "val_precision", "val_lower", "val_coverage"}; the
    threshold is None when no threshold's lower bound reaches the target."""
    scores, correct = np.asarray(scores, float), np.asarray(correct, float)
    out = {"threshold": None, "target": target, "alpha": alpha, "n_val": int(len(scores)),
           "val_precision": None, "val_lower": None, "val_coverage": 0.0}
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], correct[order]
    k = np.cumsum(c)
    total_correct = max(float(c.sum()), 1.0)
    # Fewer codes than this cannot show the target even if all are right (k = n: bound alpha^(1/n));
    # the scan starts there (a data-independent start keeps fixed-sequence testing valid).
    n_min = math.ceil(math.log(alpha) / math.log(target)) if 0 < target < 1 else 1
    i = n_min - 1
    while i > 0 and i < len(s) and s[i - 1] == s[i]:
        i -= 1  # start at the first code of a tie group
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1  # ties: a threshold takes all codes with the same score
        n, kk = j + 1, int(k[j])
        lower = clopper_pearson_lower(kk, n, alpha)
        if lower < target:
            break
        out.update(threshold=float(s[i]), val_precision=kk / n, val_lower=lower, val_coverage=kk / total_correct)
        i = j + 1
    return out


def fit_thresholds(scored_val: dict, target: float = TARGET, alpha: float = ALPHA) -> dict:
    return {s: choose_threshold(*pairs(scored_val, s), target=target, alpha=alpha) for s in SYSTEMS}


def route(scored: dict, thresholds: dict) -> dict:
    """case id -> {"route": "auto"|"review", "codes": {system: {code: route}}}. A code with no
    score, or a system with no threshold, goes to review."""
    out = {}
    for cid, case in scored.items():
        codes = {}
        for s in SYSTEMS:
            t = (thresholds.get(s) or {}).get("threshold")
            codes[s] = {c: ("auto" if t is not None and v["score"] is not None and v["score"] >= t else "review")
                        for c, v in case[s].items()}
        flat = [r for d in codes.values() for r in d.values()]
        out[cid] = {"route": "auto" if flat and all(r == "auto" for r in flat) else "review", "codes": codes}
    return out


def _stats(scored: dict, routes: dict, gold_counts: dict, system: str, keep=None) -> dict:
    auto = auto_ok = ok = gold = 0
    for cid, case in scored.items():
        for c, v in case[system].items():
            if keep is not None and not keep(c):
                continue
            ok += v["correct"]
            if routes[cid]["codes"][system][c] == "auto":
                auto += 1
                auto_ok += v["correct"]
        gold += gold_counts[cid][system] if keep is None else sum(1 for c in gold_counts[cid][f"{system}_codes"]
                                                                  if keep(c))
    return {"auto": auto, "auto_correct": auto_ok, "correct": ok, "gold": gold}


def _summary(st: dict) -> dict:
    return {"precision": st["auto_correct"] / st["auto"] if st["auto"] else None,
            "coverage": st["auto_correct"] / st["correct"] if st["correct"] else None,
            "recall_all": st["correct"] / st["gold"] if st["gold"] else None,
            "recall_auto": st["auto_correct"] / st["gold"] if st["gold"] else None,
            "recall_lost": (st["correct"] - st["auto_correct"]) / st["gold"] if st["gold"] else None,
            "n_auto": st["auto"], "n_correct": st["correct"]}


def gold_counts_of(gold: dict, ids) -> dict:
    out = {}
    for cid in ids:
        cl = gold[cid].claim
        sets = {"icd10": cl.icd10_set(), "cpt": cl.cpt_set(), "modifiers": cl.modifier_set()}
        out[cid] = {**{s: len(v) for s, v in sets.items()}, **{f"{s}_codes": v for s, v in sets.items()}}
    return out


def evaluate(scored: dict, gold: dict, thresholds: dict, *, train_counts: dict | None = None,
             n_boot: int = 1000, seed: int = 0) -> dict:
    """Routing numbers on a (test) set for fixed thresholds; see the module docstring."""
    routes = route(scored, thresholds)
    ids = sorted(scored)
    gc = gold_counts_of(gold, ids)
    rng = np.random.default_rng(seed)
    out = {"cases": len(ids), "cases_auto": sum(routes[i]["route"] == "auto" for i in ids),
           "systems": {}}
    out["automation_rate"] = out["cases_auto"] / len(ids) if ids else None
    for s in SYSTEMS:
        st = _stats(scored, routes, gc, s)
        res = {**_summary(st), "threshold": (thresholds.get(s) or {}).get("threshold")}
        # bootstrap over cases: precision and coverage of the auto codes
        per = [_stats({i: scored[i]}, routes, {i: gc[i]}, s) for i in ids]
        arr = np.array([[p["auto"], p["auto_correct"], p["correct"]] for p in per], float)
        if len(ids) and n_boot:
            samples = arr[rng.integers(0, len(ids), (n_boot, len(ids)))].sum(1)
            with np.errstate(invalid="ignore", divide="ignore"):
                prec = samples[:, 1] / samples[:, 0]
                cov = samples[:, 1] / samples[:, 2]
            res["precision_ci"] = _ci(prec)
            res["coverage_ci"] = _ci(cov)
        if train_counts is not None:
            tc = train_counts.get(s, {})
            res["by_frequency"] = {
                name: _summary(_stats(scored, routes, gc, s, keep=rule))
                for name, rule in (("common", lambda c, tc=tc: tc.get(c, 0) >= COMMON),
                                   ("rare", lambda c, tc=tc: tc.get(c, 0) < COMMON))}
        res["curve"] = curve(scored, s)
        out["systems"][s] = res
    return out


def add_ece(res: dict, raw: dict, after: dict) -> None:
    """ECE of the raw and of the calibrated scores on this set, into each system's numbers."""
    from eval.calibrate import ece

    for s in SYSTEMS:
        x, y = pairs(raw, s)
        xa, _ = pairs(after, s)
        res["systems"][s]["ece_before"] = ece(x, y)
        res["systems"][s]["ece_after"] = ece(xa, y)


def _ci(x) -> list | None:
    x = x[np.isfinite(x)]
    return [float(np.percentile(x, 2.5)), float(np.percentile(x, 97.5))] if len(x) else None


def curve(scored: dict, system: str, points: int = 50) -> list[dict]:
    """Precision against coverage as the threshold falls (on the set given)."""
    x, y = pairs(scored, system)
    if not len(x):
        return []
    order = np.argsort(-x, kind="stable")
    xs, ys = x[order], y[order]
    k = np.cumsum(ys)
    total = max(ys.sum(), 1.0)
    idx = np.unique(np.linspace(0, len(xs) - 1, min(points, len(xs))).astype(int))
    return [{"threshold": float(xs[i]), "precision": float(k[i] / (i + 1)), "coverage": float(k[i] / total)}
            for i in idx]


def train_code_counts(train_cases) -> dict:
    from collections import Counter

    out = {s: Counter() for s in SYSTEMS}
    for c in train_cases:
        out["icd10"].update(c.claim.icd10_set())
        out["cpt"].update(c.claim.cpt_set())
        out["modifiers"].update(c.claim.modifier_set())
    return {s: dict(v) for s, v in out.items()}


def curve_figure(curves: dict, chosen: dict | None = None, target: float = TARGET):
    """Precision–coverage curves: {label: {system: curve}} -> a figure with one panel per system;
    `chosen` {label: {system: (coverage, precision)}} marks each configuration's threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SYSTEMS), figsize=(10, 3.4), sharey=True)
    for ax, s in zip(axes, SYSTEMS, strict=True):
        for label, per in curves.items():
            pts = per.get(s) or []
            if pts:
                line, = ax.plot([p["coverage"] for p in pts], [p["precision"] for p in pts], label=label)
                at = ((chosen or {}).get(label) or {}).get(s)
                if at and None not in at:
                    ax.plot(*at, marker="o", color=line.get_color())
        ax.axhline(target, color="#999", lw=1, ls="--")
        ax.set_title(s, fontsize=11)
        ax.set_xlabel("coverage of correct codes", fontsize=10)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        if any(per.get(s) for per in curves.values()):
            ax.legend(fontsize=8, loc="lower left")
    axes[0].set_ylabel("precision of auto codes", fontsize=10)
    return fig


def curve_png(path, curves: dict, title: str = "") -> None:
    save_figure(curve_figure(curves), path, title)
