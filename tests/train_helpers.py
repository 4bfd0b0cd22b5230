"""Small cases for the training tests: the synthetic generator's terse, short notes (the real
corpus shape, and short notes keep the tiny runs tiny)."""

from __future__ import annotations

from opclaim.claim import Case


def make_cases(n: int, seed: int = 0) -> list[Case]:
    from opclaim.synth import generate_cases

    return generate_cases(n, seed, style="terse", length="short")
