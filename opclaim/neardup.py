"""Near-duplicate check: is any golden note close to a note our own generator writes?

Each note becomes the set of its word 5-shingles (lower-cased, every number replaced by "0", so a
synthetic note with only its names, dates and lot numbers changed still matches), and each golden
note is compared with every note of a large synthetic sample (both styles, all 16 services) by
Jaccard similarity |A∩B| / |A∪B|. A golden note at or above THRESHOLD is a near-duplicate.

Why exact Jaccard and not MinHash (datasketch): MinHash exists to avoid all-pairs comparison over
millions of documents. Here it is ~100 golden notes against 2,000 synthetic ones, 200k set
intersections of a few hundred integers: about a second in pure Python, exact, and no new
dependency; MinHash would add estimation error to the very number the check reports.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

SHINGLE = 5
# Measured (100 fresh synthetic notes of another seed against the 2,000-note sample): max
# similarity 0.11-0.56, median 0.35 -- our writers' phrase lists make nearly every note of theirs
# look like some other note of theirs. Independent hand-written text shares only surgical stock
# phrases ("the patient was brought to the"). 0.2 sits below most of what our generator writes and
# far above what unrelated notes share; a copied-and-edited synthetic note scores 0.5 and more.
THRESHOLD = 0.2
SAMPLE = 2000

_WORD = re.compile(r"[a-z]+|\d+")


def shingles(text: str, k: int = SHINGLE) -> frozenset[int]:
    """Hashed word k-grams of a note (hashes live only in this process; never stored)."""
    words = ["0" if w[0].isdigit() else w for w in _WORD.findall(text.lower())]
    if len(words) < k:
        return frozenset([hash(" ".join(words))]) if words else frozenset()
    return frozenset(hash(" ".join(words[i:i + k])) for i in range(len(words) - k + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


@dataclass
class Nearest:
    id: str  # the golden case
    max_jaccard: float
    nearest_id: str | None  # the synthetic case it is closest to
    containment: float  # share of the golden note's shingles found in that synthetic note

    def to_dict(self) -> dict:
        return {"id": self.id, "max_jaccard": round(self.max_jaccard, 4), "nearest_synthetic": self.nearest_id,
                "containment": round(self.containment, 4)}


def synthetic_sample(n: int = SAMPLE, seed: int = 0) -> list:
    """`n` synthetic notes in-process, split evenly over both styles and all 16 services (not by the
    study's mix: a rare service's golden notes need as many synthetic neighbours as a common one's)."""
    from opclaim.synth import generate_cases
    from opclaim.synth.scenario import SERVICES

    cells = [(style, svc) for style in ("dictation", "terse") for svc in SERVICES]
    out = []
    for i, (style, svc) in enumerate(cells):
        k = n // len(cells) + (i < n % len(cells))
        out += generate_cases(k, seed=seed, style=style, id_prefix=f"nd{i:02d}-", services=[svc])
    return out


def nearest(golden: list, sample: list) -> list[Nearest]:
    """For each golden case, its most similar synthetic case."""
    pool = [(c.id, shingles(c.note)) for c in sample]
    out = []
    for g in golden:
        a = shingles(g.note)
        best, best_id, best_b = -1.0, None, frozenset()
        for sid, b in pool:
            j = jaccard(a, b)
            if j > best:
                best, best_id, best_b = j, sid, b
        out.append(Nearest(g.id, max(best, 0.0), best_id, len(a & best_b) / len(a) if a else 0.0))
    return out


def baseline(sample: list, n: int = 60, seed: int = 1) -> dict:
    """What the check gives for notes our generator did write (fresh ones, another seed): the
    range a golden note must stay clear of."""
    fresh = synthetic_sample(n, seed=seed + 7919)
    sims = sorted(r.max_jaccard for r in nearest(fresh, sample))
    return {"n": len(sims), "min": sims[0], "median": sims[len(sims) // 2], "max": sims[-1]} if sims else {}


def check(golden: list, sample: list | None = None, threshold: float = THRESHOLD, seed: int = 0,
          n_baseline: int = 0) -> dict:
    """The near-duplicate report: per golden note its max similarity, the threshold, and which fail.
    `n_baseline` > 0 also scores that many fresh synthetic notes, for comparison."""
    if sample is None:
        sample = synthetic_sample(seed=seed)
    rows = nearest(golden, sample)
    sims = [r.max_jaccard for r in rows]
    extra = {"synthetic_baseline": baseline(sample, n_baseline, seed)} if n_baseline > 0 else {}
    return {**extra, "method": f"Jaccard over word {SHINGLE}-shingles (lower case, numbers as 0), exact",
            "threshold": threshold, "n_golden": len(golden), "n_synthetic": len(sample),
            "synthetic_styles": dict(Counter(getattr(c, "style", None) or "unknown" for c in sample)),
            "max_similarity": max(sims) if sims else None,
            "median_similarity": sorted(sims)[len(sims) // 2] if sims else None,
            "near_duplicates": [r.id for r in rows if r.max_jaccard >= threshold],
            "per_note": [r.to_dict() for r in rows]}


def code_distribution(cases: list) -> dict:
    """Per service: cases and how often each ICD-10-CM code, CPT code and modifier is billed."""
    services: dict[str, dict] = {}
    for c in cases:
        s = services.setdefault(c.service or "unknown", {"cases": 0, "icd10": Counter(), "cpt": Counter(),
                                                         "modifiers": Counter()})
        s["cases"] += 1
        s["icd10"].update(c.claim.icd10_set())
        s["cpt"].update(c.claim.cpt_set())
        s["modifiers"].update({m for p in c.claim.providers for ln in p.lines for m in ln.modifiers})
    total = {k: Counter() for k in ("icd10", "cpt", "modifiers")}
    for s in services.values():
        for k in total:
            total[k].update(s[k])
    return {"cases": len(cases), "n_services": len(services),
            "distinct": {k: len(v) for k, v in total.items()},
            "totals": {k: dict(v.most_common()) for k, v in total.items()},
            "services": {name: {"cases": s["cases"], **{k: dict(s[k].most_common()) for k in total}}
                         for name, s in sorted(services.items())}}
