"""The optional `patient: {age, sex}` of a case, read in one place.

`Case.patient` once opclaim.claim parses it; until then (and for any record shape) `patient_of`
reads it defensively and `attach_raw_fields` copies it from the raw file. Wrong types count as
unknown, never as an error: the field is descriptive, not part of the claim.
"""

from __future__ import annotations

from pathlib import Path

AGE_BANDS = ((0, 40, "<40"), (40, 65, "40-64"), (65, 80, "65-79"), (80, 121, "80+"))
SEXES = ("F", "M", "U")  # U: other / not recorded, as the export says
UNKNOWN = "unknown"


def patient_of(case) -> dict:
    """{"age": int | None, "sex": "F" | "M" | "U" | None}."""
    p = getattr(case, "patient", None)
    extra = getattr(case, "extra", None)
    if p is None and isinstance(extra, dict):
        p = extra.get("patient")
    if not isinstance(p, dict):
        return {"age": None, "sex": None}
    age, sex = p.get("age"), p.get("sex")
    age = age if isinstance(age, int) and not isinstance(age, bool) and 0 <= age <= 120 else None
    sex = sex.strip().upper() if isinstance(sex, str) else None
    return {"age": age, "sex": sex if sex in SEXES else None}


def age_band(age: int | None) -> str:
    if age is None:
        return UNKNOWN
    return next(label for lo, hi, label in AGE_BANDS if lo <= age < hi)


def attach_raw_fields(cases: list, path: str | Path, keys=("patient", "source")) -> None:
    """Copy `keys` from the raw JSONL records onto cases that lack them (a no-op once the Case
    record parses them itself)."""
    from opclaim.io import iter_jsonl

    by_id = {c.id: c for c in cases}
    for _, obj in iter_jsonl(path):
        c = by_id.get(str(obj.get("id")))
        if c is None:
            continue
        for key in keys:
            if getattr(c, key, None) is None and obj.get(key) is not None:
                setattr(c, key, obj[key])
