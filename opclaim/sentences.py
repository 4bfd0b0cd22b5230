"""A note's sentences as character spans: split at sentence ends and line breaks, whitespace and
bullet/number markers trimmed. Evidence spans (eval/evidence.py, the synthetic writers' gold
`evidence` field, opclaim serve) are snapped to these."""

from __future__ import annotations

import re

_BOUNDARY_RE = re.compile(r"\n+|(?<=[.!?;])\s+(?=[A-Z0-9(\[])")
_BULLET_RE = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.)])\s*")


def sentences(note: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence or line of the note, whitespace and bullet markers trimmed."""
    spans, pos = [], 0
    for m in [*_BOUNDARY_RE.finditer(note), None]:
        end = m.start() if m else len(note)
        seg = note[pos:end]
        lead = len(seg) - len(seg.lstrip())
        b = _BULLET_RE.match(seg[lead:])
        if b:
            lead += b.end()
        s, e = pos + lead, pos + len(seg.rstrip())
        if e > s:
            spans.append((s, e))
        pos = m.end() if m else len(note)
    return spans
