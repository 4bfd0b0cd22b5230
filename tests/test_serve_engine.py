"""The serve engine adapter in process: the tiny Phi-3, plain and grammar-constrained, and the
claim rows it builds from an output."""

import pytest

import prompts
from opclaim.claim import Claim
from opclaim.serve.engine import Engine, claim_from_output

CLAIM = {"icd10": ["K80.20", "K80.2"], "providers": [
    {"name": "Dr. A", "lines": [{"cpt": "47562", "modifiers": ["80", "59"], "description": "Lap chole"}]},
    {"name": "Dr. B", "role": "assistant", "lines": [{"cpt": "47562", "modifiers": ["80"]}]}]}


def test_claim_rows_from_an_output():
    claim, rows = claim_from_output(prompts.target(Claim.from_dict(CLAIM), "phi3"))
    assert claim["icd10"] == ["K80.20", "K80.2"]
    icd = {r["code"]: r for r in rows if r["system"] == "icd10"}
    assert icd["K80.20"]["valid"] and not icd["K80.2"]["valid"]  # parses, but not billable: shown, flagged
    assert icd["K80.20"]["description"] and all(r["confidence"] is None and r["evidence"] is None for r in rows)
    assert [(r["provider"], r["modifiers"]) for r in rows if r["system"] == "cpt"] == [
        ("Dr. A", ["80", "59"]), ("Dr. B", ["80"])]
    assert next(r for r in rows if r["system"] == "cpt")["description"] == "Lap chole"
    assert claim_from_output("") == ({"icd10": [], "providers": []}, [])


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_engine_batches_and_constrains(tiny_phi3_dir, tmp_path):
    notes = ["Lap chole for calculus.", "A much longer note about an inguinal hernia repair with mesh, " * 3]
    plain = Engine(tiny_phi3_dir, max_new_tokens=6)
    one = [plain.generate([n])[0].output for n in notes]
    both = plain.generate(notes)
    assert [s.output for s in both] == one and both[0].batch_size == 2  # batching changes nothing
    (tmp_path / "icd.txt").write_text("K80.20\nK40.90\n")
    (tmp_path / "cpt.txt").write_text("47562\n49505\n")
    con = Engine(tiny_phi3_dir, max_new_tokens=24, constrain={
        "icd_ref": tmp_path / "icd.txt", "cpt_ref": tmp_path / "cpt.txt", "cache": tmp_path / "gc"})
    assert "+grammar:" in con.model_id
    for s in con.generate(notes):
        assert s.output.startswith("<|placeholder2|>ICD-10-CM Diagnoses:\n")
        assert set(s.claim["icd10"]) <= {"K80.20", "K40.90"}


def test_decision_items_for_a_code_billed_by_two_providers():
    from opclaim.serve.decisions import CodeRules, final_claim

    claim, rows = claim_from_output(prompts.target(Claim.from_dict(CLAIM), "phi3"))
    sug = {"codes": [r for r in rows if r["code"] != "K80.2"]}
    items = [{"system": "icd10", "code": "K80.20", "action": "accept"},
             {"system": "cpt", "code": "47562", "action": "accept", "provider": "Dr. B"},
             {"system": "cpt", "code": "47562", "action": "reject"}]  # no provider: the other row
    clean, final = final_claim(items, sug, CodeRules())
    assert final["providers"] == [{"name": "Dr. B", "role": "surgeon", "lines": [{"cpt": "47562", "modifiers": ["80"]}]}]
    import pytest

    from opclaim.errors import InputError

    with pytest.raises(InputError, match="decided twice"):
        final_claim(items + [{"system": "cpt", "code": "47562", "action": "accept"}], sug, CodeRules())


def test_evidence_spans_are_marked_and_everything_escaped():
    from opclaim.serve.page import highlight

    note = "<b>x</b> cholelithiasis & pain"
    rows = [{"code": "K80.20", "evidence": [{"start": 9, "end": 23}]}, {"code": "R10.9", "evidence": [{"start": 0, "end": 99}]},
            {"code": "Z", "evidence": None}]
    html = highlight(note, rows)
    assert html == '&lt;b&gt;x&lt;/b&gt; <mark data-code="K80.20">cholelithiasis</mark> &amp; pain'
