"""Synthetic operative notes with the claims a coder would derive from them.

    from opclaim.synth import generate_cases
    cases = generate_cases(1000, seed=0, style="terse")

Real notes are PHI and never ship, so demos, tests and benchmarks run on this corpus. Each case
is drawn as facts (scenario.py), written by one of two independent writers (dictation.py,
terse.py), and coded from the same facts (scenario.code_claim). Deterministic by seed: only a
local `random.Random` is used.
"""

from __future__ import annotations

import random

from opclaim.claim import Case
from opclaim.synth import dictation, scenario, terse

STYLES = {"dictation": dictation.write, "terse": terse.write}
LENGTHS = ("real", "short")


def iter_drawn(n: int, seed: int = 0, style: str = "dictation", length: str = "real", id_prefix: str = "c",
               services=None):
    """Yield (scenario, case) pairs: the facts behind each note, for tests that check the note
    and the claim against the same facts. `services`: only these services (a department's model)."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose from {sorted(STYLES)}")
    if length not in LENGTHS:
        raise ValueError(f"unknown length {length!r}; choose from {LENGTHS}")
    if n < 0:
        raise ValueError("n must be >= 0")
    unknown = sorted(set(services or ()) - set(scenario.SERVICES))
    if unknown:
        raise ValueError(f"unknown service(s) {', '.join(map(repr, unknown))}; choose from {', '.join(scenario.SERVICES)}")
    write = STYLES[style]
    rng = random.Random(f"opclaim-synth/{seed}/{style}/{length}")
    for i in range(n):
        s = scenario.draw(rng, f"{id_prefix}{i:06d}", length, services)
        facts: list = []
        note = write(rng, s, facts)
        claim = scenario.code_claim(s)
        case = Case(id=s.id, note=note, claim=claim, date=s.date, service=s.service, style=style,
                    evidence=scenario.gold_evidence(note, facts, claim))
        # The facts already drawn (no extra rng draw, so notes and claims stay the same by seed).
        # Set after construction: works whether or not Case declares `patient` yet.
        case.patient = {"age": s.age, "sex": s.sex}
        yield s, case


def generate_cases(n: int, seed: int = 0, style: str = "dictation", length: str = "real",
                   id_prefix: str = "c", services=None) -> list[Case]:
    """`n` cases; `length="short"` keeps every section but trims narrative (fast CPU demos);
    `services` limits the case mix to those services."""
    return [case for _, case in iter_drawn(n, seed, style, length, id_prefix, services)]


__all__ = ["generate_cases", "iter_drawn", "STYLES", "LENGTHS"]
