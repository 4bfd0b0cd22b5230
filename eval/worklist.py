"""`cases.csv`: the coding supervisor's worklist, one row per case and configuration, worst first.

Codes and scores only (no note text), but written owner-only like every per-case output.
"""

from __future__ import annotations

import csv
from pathlib import Path

from eval.metrics import COMPONENTS, CaseScore, References, Run
from opclaim.io import atomic_write

COLUMNS = ["gold", "config", "id", "service", "missing_prediction", "predicted_icd10", "predicted_cpt",
           "predicted_modifiers", "missing_codes", "extra_codes", "invalid_codes",
           *(f"{c}_{m}" for c in COMPONENTS for m in ("precision", "recall")), "mean_score"]


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _cell(text) -> str:
    # Spreadsheet formula injection (OWASP CSV injection): a cell starting with = + - @ TAB or CR,
    # like a service name "=cmd()", must stay text.
    text = "" if text is None else str(text)
    return "'" + text if text.startswith(_FORMULA_START) else text


def invalid_codes(s: CaseScore, refs: References) -> list[str]:
    return sorted(s.pred["icd10"] - refs.icd10) + sorted(s.pred["cpt"] - refs.cpt)


def row(run: Run, s: CaseScore, refs: References) -> dict:
    missing = sorted(s.gold["icd10"] - s.pred["icd10"]) + sorted(s.gold["cpt"] - s.pred["cpt"]) \
        + sorted(s.gold["modifier"] - s.pred["modifier"])
    extra = sorted(s.pred["icd10"] - s.gold["icd10"]) + sorted(s.pred["cpt"] - s.gold["cpt"]) \
        + sorted(s.pred["modifier"] - s.gold["modifier"])
    r = {"gold": _cell(run.gold), "config": _cell(run.config), "id": _cell(s.id), "service": _cell(s.service),
         "missing_prediction": int(s.missing),
         "predicted_icd10": " ".join(s.extraction.icd10), "predicted_cpt": " ".join(s.extraction.cpt),
         "predicted_modifiers": " ".join(s.extraction.modifiers),
         "missing_codes": " ".join(missing), "extra_codes": " ".join(extra),
         "invalid_codes": " ".join(invalid_codes(s, refs))}
    for c in COMPONENTS:
        r[f"{c}_precision"] = round(s.p[c], 4)
        r[f"{c}_recall"] = round(s.r[c], 4)
    r["mean_score"] = round(s.worst_key() / (2 * len(COMPONENTS)), 4)
    return r


def write(path: str | Path, runs: list[Run], refs: References) -> int:
    rows = [row(run, s, refs) for run in runs for s in run.scores]
    rows.sort(key=lambda r: (r["mean_score"], r["gold"], r["config"], r["id"]))
    with atomic_write(path, private=True) as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return len(rows)
