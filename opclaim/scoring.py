"""The study's per-case rule for precision and recall, shared by evaluation (eval/metrics.py) and
the kNN baseline's parameter search (rag/knn.py) so the two never disagree (docs/design.md,
"Evaluation definitions").
"""

from __future__ import annotations


def precision_recall(model: set, gold: set) -> tuple[float, float]:
    """precision = |M∩P|/|M|, recall = |M∩P|/|P|; both empty -> (1, 1); any other 0/0 -> 0."""
    if not model and not gold:
        return 1.0, 1.0
    hit = len(model & gold)
    return (hit / len(model) if model else 0.0), (hit / len(gold) if gold else 0.0)


def f1(p: float, r: float) -> float:
    """F1 from mean precision and mean recall; 0 when both are 0."""
    return 2 * p * r / (p + r) if p + r > 0 else 0.0
