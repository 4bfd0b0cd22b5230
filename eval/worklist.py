"""`cases.csv`: the coding supervisor's worklist, one row per case and configuration, worst first.

Per predicted code: its confidence (calibrated with `eval --calibration`, else the decoding's raw
score), its route (auto/review) and its evidence sentence from the note. The evidence is note
text, so the file is owner-only (0600); every cell is formula-safe.
"""

from __future__ import annotations

import csv
from pathlib import Path

from eval.metrics import COMPONENTS, CaseScore, References, Run
from opclaim.io import atomic_write

COLUMNS = ["gold", "config", "id", "service", "missing_prediction", "predicted_icd10", "predicted_cpt",
           "predicted_modifiers", "missing_codes", "extra_codes", "invalid_codes",
           *(f"{c}_{m}" for c in COMPONENTS for m in ("precision", "recall")), "mean_score",
           "route", "n_review_codes", "confidence_calibrated", "code_confidence", "code_route", "code_evidence"]
SYSTEMS = ("icd10", "cpt", "modifiers")


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


def predicted_codes(s: CaseScore) -> list[tuple[str, str]]:
    ex = s.extraction
    return [("icd10", c) for c in ex.icd10] + [("cpt", c) for c in ex.cpt] + [("modifiers", c) for c in ex.modifiers]


def code_cells(run: Run, i: int) -> dict:
    """The per-code columns of case i: "CODE=value" items (evidence one line per code)."""
    from eval.confidence import code_scores

    s, cid = run.scores[i], run.cases[i].id
    codes = predicted_codes(s)
    if run.scored is not None:
        conf = {m: {c: v["score"] for c, v in run.scored[cid][m].items()} for m in SYSTEMS}
    else:
        conf = code_scores(run.confidence[i]) if i < len(run.confidence) and run.confidence[i] else None
    routes = run.routes[cid] if run.routes is not None else None
    ev = run.evidence[i] if run.evidence is not None else None
    note = run.cases[i].note
    cells = {"route": routes["route"] if routes else "",
             "n_review_codes": sum(r == "review" for d in routes["codes"].values() for r in d.values()) if routes else "",
             "confidence_calibrated": int(run.scored is not None) if conf is not None else "",
             "code_confidence": "", "code_route": "", "code_evidence": ""}
    if conf is not None:
        cells["code_confidence"] = " ".join(f"{c}={_num(conf[m].get(c))}" for m, c in codes)
    if routes:
        cells["code_route"] = " ".join(f"{c}={routes['codes'][m].get(c, 'review')}" for m, c in codes)
    if ev is not None:
        lines = []
        for m, c in codes:
            e = ev.get((m, c))
            if not e or not e["spans"]:
                lines.append(f"{c}: (no sentence)")
                continue
            a, b = e["spans"][0]
            lines.append(f"{c}: {note[a:b]}" + (" [below evidence floor]" if e["no_evidence"] else ""))
        cells["code_evidence"] = "\n".join(lines)
    return {k: _cell(v) if isinstance(v, str) else v for k, v in cells.items()}


def _num(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def write(path: str | Path, runs: list[Run], refs: References) -> int:
    rows = [{**row(run, s, refs), **code_cells(run, i)} for run in runs for i, s in enumerate(run.scores)]
    rows.sort(key=lambda r: (r["mean_score"], r["gold"], r["config"], r["id"]))
    with atomic_write(path, private=True) as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS)
        w.writeheader()
        w.writerows(rows)
    return len(rows)
