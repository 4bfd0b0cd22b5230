"""How each writer names a side, digit or eyelid, and the phrase for a diagnosis or procedure."""

from __future__ import annotations

from opclaim.synth.scenario import Done

_SIDE = {"R": "right", "L": "left", "B": "bilateral"}
_FINGER = ["thumb", "index finger", "long finger", "ring finger", "small finger"]
_TOE = ["great toe", "second toe", "third toe", "fourth toe", "fifth toe"]
_ORGAN = {"eye": "eye", "laser": "eye"}


def formal_place(d: Done) -> str:
    """'right eye', 'left upper eyelid', 'right long finger', 'bilateral' ... ('' when unsided)."""
    p = d.proc
    if p.lat is None or d.side is None:
        return ""
    side = _SIDE[d.side]
    if p.lat == "eyelid":
        lid = "upper" if d.lid == "U" else "lower"
        return f"{side} {lid} eyelids" if d.side == "B" else f"{side} {lid} eyelid"
    if p.lat == "finger":
        return f"{side} {_FINGER[d.digit - 1]}"
    if p.lat == "toe":
        return f"{side} {_TOE[d.digit - 1]}"
    organ = _ORGAN.get(p.approach)
    if organ:
        return "both eyes" if d.side == "B" else f"{side} {organ}"
    return side


def terse_place(d: Done) -> str:
    """'R', 'L upper lid', 'R 3rd finger', 'L 2nd toe', 'bilat', 'OD'/'OS' for eyes."""
    p = d.proc
    if p.lat is None or d.side is None:
        return ""
    side = {"R": "R", "L": "L", "B": "bilat"}[d.side]
    if p.lat == "eyelid":
        return f"{side} {'upper' if d.lid == 'U' else 'lower'} lid"
    if p.lat == "finger":
        return f"{side} {['thumb', '2nd', '3rd', '4th', '5th'][d.digit - 1]}{'' if d.digit == 1 else ' finger'}"
    if p.lat == "toe":
        return f"{side} {['great', '2nd', '3rd', '4th', '5th'][d.digit - 1]} toe"
    if p.approach in ("eye", "laser"):
        return {"R": "OD", "L": "OS", "B": "OU"}[d.side]
    return side


def formal_dx(d: Done, dx) -> str:
    place = formal_place(d)
    return f"{dx.words[0].upper()}{dx.words[1:]}, {place}" if place else f"{dx.words[0].upper()}{dx.words[1:]}"


def formal_proc(d: Done, name: str | None = None) -> str:
    place = formal_place(d)
    name = name or d.proc.name
    name = name[0].upper() + name[1:]
    return f"{name}, {place}" if place else name


def terse_dx(d: Done, dx) -> str:
    place = terse_place(d)
    return f"{place} {dx.terse}" if place else dx.terse


def terse_proc(d: Done, name: str | None = None) -> str:
    place = terse_place(d)
    name = name or d.proc.terse
    return f"{place} {name}" if place else name
