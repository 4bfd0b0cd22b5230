"""The retrieval-only baseline: no language model, just the claims of similar training notes.

For a note, take its k nearest training notes (MiniLM + FAISS, own id excluded) with weights
w = cosine similarity (clipped at 0; embeddings are unit length so cos = 1 - d²/2). A code enters
the predicted claim when its weighted share of the neighbours reaches the threshold t:
- ICD-10-CM codes: share of the weight whose claim has the code;
- providers by position (0 = surgeon, 1.. = assistants): a position is kept when its share
  reaches t, and its CPT codes by the same rule within that position;
- a modifier on a kept CPT code when at least half of the weight of the neighbours that billed
  that code (in that position) also put that modifier on it.
A claim always keeps at least its top diagnosis and its surgeon's top CPT code.
Provider names and line descriptions are copied from the nearest neighbour that has them.
k and t are chosen on a validation file by the mean of the ICD, CPT and modifier F1s.
Each code's vote share is its confidence (the row's `confidence` field, eval/confidence.py).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from opclaim.claim import Case, Claim, Line, Provider
from opclaim.scoring import f1, precision_recall

K_GRID = (1, 2, 3, 5, 8, 13, 21)
T_GRID = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


@dataclass(frozen=True)
class KnnParams:
    k: int = 5
    threshold: float = 0.5


def _top(scores: dict, t: float, keep_one: bool) -> list:
    """Keys with score >= t, best first (ties keep first-seen order); the best one if none pass."""
    ranked = sorted(scores, key=lambda c: -scores[c])
    chosen = [c for c in ranked if scores[c] >= t - 1e-9]
    return chosen or (ranked[:1] if keep_one else [])


def vote(neighbours: list[tuple[Claim, float]], threshold: float) -> Claim:
    """Combine (claim, weight) pairs, nearest first, into one predicted claim."""
    return vote_scored(neighbours, threshold)[0]


def vote_scored(neighbours: list[tuple[Claim, float]], threshold: float) -> tuple[Claim, dict]:
    """The voted claim and its per-code confidence (eval/confidence.py layout, method "knn_vote"):
    a code's score is its vote share (ICD: share of the weight; CPT: share in its provider
    position; modifier: share of the weight that billed the code with that modifier)."""
    shares: list[dict] = []
    if not neighbours:
        return Claim(), {"method": "knn_vote", "masked": False, "codes": shares}
    weights = np.array([max(w, 0.0) for _, w in neighbours])
    if weights.sum() <= 0:  # all orthogonal or opposite: fall back to equal votes
        weights = np.ones(len(neighbours))
    weights = weights / weights.sum()

    icd = defaultdict(float)
    for (claim, _), w in zip(neighbours, weights, strict=True):
        for code in claim.icd10_set():
            icd[code] += w
    icd_codes = _top(icd, threshold, keep_one=True)
    shares += [{"system": "icd10", "code": c, "line": None, "p": round(float(icd[c]), 6)} for c in icd_codes]
    line_no = 0

    providers = []
    n_pos = max(len(c.providers) for c, _ in neighbours)
    for pos in range(n_pos):
        present = [(c.providers[pos], w) for (c, _), w in zip(neighbours, weights, strict=True) if len(c.providers) > pos]
        share = sum(w for _, w in present)
        if pos > 0 and share < threshold - 1e-9:
            continue
        cpt, mods, desc = defaultdict(float), defaultdict(lambda: defaultdict(float)), {}
        for prov, w in present:
            for ln in {ln.cpt: ln for ln in prov.lines}.values():
                cpt[ln.cpt] += w
                desc.setdefault(ln.cpt, ln.description)
                for m in set(ln.modifiers):
                    mods[ln.cpt][m] += w
        codes = _top(cpt, threshold, keep_one=(pos == 0))
        if not codes:
            continue
        lines = [Line(c, [m for m in sorted(mods[c], key=lambda m: -mods[c][m])
                          if mods[c][m] >= 0.5 * cpt[c] - 1e-9], desc[c]) for c in codes]
        for ln in lines:
            shares.append({"system": "cpt", "code": ln.cpt, "line": line_no, "p": round(float(cpt[ln.cpt]), 6)})
            shares += [{"system": "modifiers", "code": f"{ln.cpt}-{m}", "line": line_no,
                        "p": round(float(mods[ln.cpt][m] / cpt[ln.cpt]), 6)} for m in ln.modifiers]
            line_no += 1
        first = present[0][0]
        providers.append(Provider(first.name, first.role, lines))
    return Claim(icd_codes, providers), {"method": "knn_vote", "masked": False, "codes": shares}


def predict_rows(retriever, notes: list[str], k: int, exclude_ids=None):
    """(row, cosine) neighbour lists for notes, k nearest, embedding once."""
    vecs = retriever.embed(notes)
    hits = retriever.neighbours(vecs, k, exclude_ids)
    return [[(row, 1.0 - d / 2.0) for row, d in h] for h in hits]


def score(preds: list[Claim], golds: list[Claim]) -> dict:
    """F1 from mean precision and mean recall, per code set, and their mean ("objective")."""
    out = {}
    for name in ("icd10", "cpt", "modifier"):
        prs = [precision_recall(getattr(p, f"{name}_set")(), getattr(g, f"{name}_set")()) for p, g in zip(preds, golds, strict=True)]
        p = float(np.mean([x for x, _ in prs]))
        r = float(np.mean([y for _, y in prs]))
        out[f"{name}_f1"] = f1(p, r)
    out["objective"] = float(np.mean([out["icd10_f1"], out["cpt_f1"], out["modifier_f1"]]))
    return out


def choose_params(retriever, val_cases: list[Case], k_grid=K_GRID, t_grid=T_GRID) -> tuple[KnnParams, list[dict]]:
    """Grid-search k and threshold on validation cases; returns the best and every row tried."""
    from opclaim.errors import InputError

    if not val_cases:
        raise InputError("no validation records", field="val")
    usable = len(retriever) - (1 if any(c.id in retriever for c in val_cases) else 0)
    ks = [k for k in k_grid if k <= usable]
    if not ks:
        raise InputError("index too small for any k in the grid", field="k")
    hits = predict_rows(retriever, [c.note for c in val_cases], max(ks), [c.id for c in val_cases])
    golds = [c.claim for c in val_cases]
    table, best = [], None
    for k in ks:
        for t in t_grid:
            preds = [vote([(retriever.claims[r], w) for r, w in h[:k]], t) for h in hits]
            row = {"k": k, "threshold": t, **score(preds, golds)}
            table.append(row)
            if best is None or row["objective"] > best["objective"] + 1e-12:
                best = row
    return KnnParams(best["k"], best["threshold"]), table


def predict(retriever, cases: list[Case], params: KnnParams, *, fmt_markers=None,
            batch_size: int = 256, progress: bool = True):
    """Yield prediction records {"id","config":"knn","output","latency_s"} in case order.

    latency_s is the batch's wall time (embedding, search, voting) divided by its size."""
    from tqdm import tqdm

    from opclaim.claim import PHI3_MARKERS, render_target

    markers = fmt_markers or PHI3_MARKERS
    bar = tqdm(total=len(cases), desc="knn", unit="case", disable=not progress)
    for start in range(0, len(cases), batch_size):
        batch = cases[start:start + batch_size]
        t0 = time.perf_counter()
        hits = predict_rows(retriever, [c.note for c in batch], params.k, [c.id for c in batch])
        voted = [vote_scored([(retriever.claims[r], w) for r, w in h], params.threshold) for h in hits]
        per_case = (time.perf_counter() - t0) / len(batch)
        for c, (claim, conf) in zip(batch, voted, strict=True):
            yield {"id": c.id, "config": "knn", "output": render_target(claim, markers),
                   "latency_s": round(per_case, 5), "confidence": conf}
        bar.update(len(batch))
    bar.close()
