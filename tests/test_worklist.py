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


def test_per_code_confidence_route_and_evidence_columns(tmp_path):
    """Each predicted code's confidence, route and evidence sentence; note text in a 0600 file,
    a sentence that starts like a formula stays text."""
    import os
    import stat

    from eval import evidence

    claim = Claim.from_dict({"icd10": ["K80.20"], "providers": [{"name": "A", "lines": [
        {"cpt": "47562", "modifiers": ["80"], "description": "Laparoscopic cholecystectomy"}]}]})
    note = "=HYPERLINK(\"x\") gallbladder.\nLaparoscopic cholecystectomy was performed for calculus of gallbladder."
    case = Case(id="c1", note=note, claim=claim, service="Eye")
    out = ("ICD-10-CM Diagnoses:\nK80.20, I10\nCPT Codes with Modifiers:\nProvider Name: A\n"
           "CPT 1: 47562 | Modifiers: 80 | Description: x")
    s = score_case(case, Prediction("c1", out, "m", None, 1))
    run = Run("m", "m", "test", [case], [s], [], {}, {}, [None])
    refs = References(frozenset({"K80.20", "I10"}), "test", frozenset({"47562"}), "test",
                      {"47562": "Laparoscopic cholecystectomy"})
    run.scored = {"c1": {"icd10": {"K80.20": {"score": 0.97, "correct": True}, "I10": {"score": 0.2, "correct": False}},
                         "cpt": {"47562": {"score": 0.99, "correct": True}},
                         "modifiers": {"47562-80": {"score": 0.9, "correct": True}}}}
    run.routes = {"c1": {"route": "review", "codes": {"icd10": {"K80.20": "auto", "I10": "review"},
                                                      "cpt": {"47562": "auto"}, "modifiers": {"47562-80": "review"}}}}
    run.evidence = evidence.for_run(run, refs, "bm25")
    path = tmp_path / "cases.csv"
    worklist.write(path, [run], refs)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    (r,) = list(csv.DictReader(path.open(newline="")))
    assert r["route"] == "review" and r["n_review_codes"] == "2" and r["confidence_calibrated"] == "1"
    assert r["code_confidence"] == "K80.20=0.970 I10=0.200 47562=0.990 47562-80=0.900"
    assert r["code_route"] == "K80.20=auto I10=review 47562=auto 47562-80=review"
    ev = r["code_evidence"].split("\n")
    assert ev[2] == "47562: Laparoscopic cholecystectomy was performed for calculus of gallbladder."
    assert ev[3].startswith("47562-80: Laparoscopic")  # a modifier shares its line's sentence
    assert ev[1].startswith("I10: ") and ev[1].endswith("[below evidence floor]")  # nothing supports it
    for v in r.values():
        assert not v.startswith(("=", "+", "-", "@"))


def test_without_confidence_the_code_columns_stay_empty(tmp_path):
    claim = Claim.from_dict({"icd10": ["K80.20"], "providers": []})
    case = Case(id="c1", note="n", claim=claim)
    s = score_case(case, Prediction("c1", "ICD-10-CM Diagnoses:\nK80.20", "m", None, 1))
    run = Run("m", "m", "test", [case], [s], [], {}, {}, [None])
    refs = References(frozenset({"K80.20"}), "test", frozenset(), "test")
    worklist.write(tmp_path / "c.csv", [run], refs)
    (r,) = list(csv.DictReader((tmp_path / "c.csv").open(newline="")))
    assert r["route"] == r["code_confidence"] == r["code_route"] == r["code_evidence"] == ""
