"""Train/val/test split balanced across encounter date.

Cases are grouped by month (undated cases form their own group), shuffled within the month with
a seeded `random.Random`, and dealt out in month order so that every split keeps its share of
every month (largest-deficit rule: each case goes to the split furthest behind its target).
Each id lands in exactly one split.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict

from opclaim.claim import Case

SPLITS = ("train", "val", "test")
DEFAULT_RATIOS = (0.6, 0.2, 0.2)


def month_of(case: Case) -> str:
    return case.date[:7] if case.date else "undated"


def split_cases(cases: list[Case], seed: int = 0, ratios=DEFAULT_RATIOS) -> dict[str, list[Case]]:
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or sum(ratios) <= 0:
        raise ValueError("ratios must be three non-negative numbers")
    total = float(sum(ratios))
    shares = [r / total for r in ratios]
    rng = random.Random(f"opclaim-split/{seed}")
    by_month: dict[str, list[Case]] = defaultdict(list)
    for c in sorted(cases, key=lambda c: c.id):  # input order must not matter
        by_month[month_of(c)].append(c)
    out: dict[str, list[Case]] = {s: [] for s in SPLITS}
    counts = [0, 0, 0]
    dealt = 0
    for month in sorted(by_month):
        group = by_month[month]
        rng.shuffle(group)
        for c in group:
            dealt += 1
            deficit = [shares[i] * dealt - counts[i] for i in range(3)]
            k = max(range(3), key=lambda i: (deficit[i], -i))
            counts[k] += 1
            out[SPLITS[k]].append(c)
    return out


def month_table(parts: dict[str, list[Case]]) -> dict[str, dict[str, int]]:
    """month -> {split: count}: the balance check, free of note text."""
    table: dict[str, Counter] = defaultdict(Counter)
    for name, cs in parts.items():
        for c in cs:
            table[month_of(c)][name] += 1
    return {m: {s: table[m][s] for s in SPLITS} for m in sorted(table)}
