"""cases.csv worklist: cells that a spreadsheet would run as a formula stay text (OWASP CSV injection)."""

import csv

import pytest

from eval import worklist
from eval.metrics import Prediction, References, Run, score_case
from opclaim.claim import Case, Claim


@pytest.mark.parametrize("raw,want", [
    ("=cmd()", "'=cmd()"), ("+1", "'+1"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"),
    ("\t=1", "'\t=1"), ("\r=1", "'\r=1"), ("General Surgery", "General Surgery"), ("", ""), (None, ""),
])
def test_cell_neutralises_formula_starts(raw, want):
    assert worklist._cell(raw) == want


def test_written_worklist_keeps_injected_cells_as_text(tmp_path):
    claim = Claim.from_dict({"icd10": ["K80.20"], "providers": [{"name": "A", "lines": [{"cpt": "47562"}]}]})
    cases = [Case(id=f"c{i}", note="n", claim=claim, service=svc)
             for i, svc in enumerate(["\tEye", "\r=HYPERLINK(x)", "=1+1", "Eye"])]
    scores = [score_case(c, Prediction(c.id, "ICD-10-CM Diagnoses:\nK80.20", "m", None, 1)) for c in cases]
    run = Run("model", "@cfg", "-gold", cases, scores, [], {}, {})
    refs = References(frozenset({"K80.20"}), "test", frozenset({"47562"}), "test")
    path = tmp_path / "cases.csv"
    assert worklist.write(path, [run], refs) == 4
    rows = list(csv.DictReader(path.open(newline="")))
    assert {r["service"] for r in rows} == {"'\tEye", "'\r=HYPERLINK(x)", "'=1+1", "Eye"}
    assert {r["config"] for r in rows} == {"'@cfg"} and {r["gold"] for r in rows} == {"'-gold"}
