"""`opclaim data validate` rejects (never converts) null lists and numeric modifiers, and rejects a
claim that bills no CPT line (issue 28). Each reject names file, line and field."""

import json

import pytest

from opclaim import ingest
from opclaim.claim import Claim
from opclaim.errors import InputError
from tests.malformed_records import GOOD, good_with


def _rec(rid, path, value):
    return good_with(rid, path, value)


CASES = [  # (path, value, field named, defect)
    ("claim.icd10", None, "claim.icd10", "wrong_type"),
    ("claim.providers", None, "claim.providers", "wrong_type"),
    ("claim.providers.0.lines", None, "claim.providers[0].lines", "wrong_type"),
    ("claim.providers.0.lines.0.modifiers", None, "claim.providers[0].lines[0].modifiers", "wrong_type"),
    ("claim.providers.0.lines.0.modifiers", [59], "claim.providers[0].lines[0].modifiers[0]", "wrong_type"),
    ("claim.providers.0.lines.0.modifiers", ["80", 51], "claim.providers[0].lines[0].modifiers[1]", "wrong_type"),
    ("claim.providers", [], "claim.providers", "no_cpt_line"),
    ("claim.providers.0.lines", [], "claim.providers", "no_cpt_line"),
]


@pytest.mark.parametrize("path,value,fld,defect", CASES)
def test_reject_names_line_and_field_and_keeps_the_record_as_written(path, value, fld, defect, tmp_path):
    bad = _rec("bad-1", path, value)
    p = tmp_path / "cases.jsonl"
    p.write_text(json.dumps(_rec("ok-1", "service", "General Surgery")) + "\n" + json.dumps(bad) + "\n")
    report = ingest.validate(p)
    assert [c.id for c in report.kept] == ["ok-1"]
    assert len(report.rejected) == 1
    prob, rec = report.rejected[0]
    assert (prob.where, prob.field, prob.kind, prob.id) == (2, fld, defect, "bad-1")
    assert rec == bad  # the rejects file carries the record exactly as it came
    row = ingest.reject_rows(report)[0]
    assert (row["file"], row["line"], row["field"]) == (str(p), 2, fld)


def test_the_issue_reproduction_is_three_rejects(tmp_path, capsys):
    from opclaim.cli import main

    base = {"date": "2020-01-01", "service": "Ophthalmology", "note": "Cataract extraction."}
    lines = [{**base, "id": "a1", "claim": {"icd10": None, "providers": [
                 {"name": "A", "lines": [{"cpt": "66984"}]}]}},
             {**base, "id": "a2", "claim": {"icd10": ["H25.12"], "providers": None}},
             {**base, "id": "a3", "claim": {"icd10": ["H25.12"], "providers": [
                 {"name": "A", "lines": [{"cpt": "66984", "modifiers": [59]}]}]}}]
    p = tmp_path / "three.jsonl"
    p.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["data", "validate", str(p), "--rejects", str(tmp_path / "rej.jsonl")]) == 2
    assert "records: 3  valid: 0  rejected: 3" in capsys.readouterr().out


def test_absent_lists_are_still_empty_and_a_billable_claim_is_kept(tmp_path):
    # an absent `modifiers` or `icd10` key is "none": only a present null or a wrong type is a reject
    d = _rec("ok-2", "claim", {"providers": [{"name": "A", "lines": [{"cpt": "47562"}]}]})
    p = tmp_path / "c.jsonl"
    p.write_text(json.dumps(d) + "\n")
    report = ingest.validate(p)
    assert [c.id for c in report.kept] == ["ok-2"] and not report.rejected
    assert report.kept[0].claim.to_dict()["providers"][0]["lines"][0]["modifiers"] == []


def test_claim_from_dict_rejects_null_lists_and_numeric_modifiers():
    for claim, fld in [({"icd10": None}, "claim.icd10"), ({"providers": None}, "claim.providers"),
                       ({"providers": [{"lines": None}]}, "claim.providers[0].lines"),
                       ({"providers": [{"lines": [{"cpt": "47562", "modifiers": None}]}]},
                        "claim.providers[0].lines[0].modifiers"),
                       ({"providers": [{"lines": [{"cpt": "47562", "modifiers": [59]}]}]},
                        "claim.providers[0].lines[0].modifiers[0]")]:
        with pytest.raises(InputError) as e:
            Claim.from_dict(claim)
        assert e.value.field == fld and e.value.kind == "wrong_type", (claim, e.value)


def test_queue_reader_keeps_a_record_without_claim_as_claimless(tmp_path):
    """The service's reading (require_claim False): no claim -> kept with claim None; a claim that
    is given is validated in full, a duplicate id is rejected and leaves the first record alone."""
    p = tmp_path / "q.jsonl"
    p.write_text("\n".join([json.dumps({"id": "p1", "note": "n", "claim": GOOD["claim"]}),
                            json.dumps({"id": "p1", "note": "dup"}),
                            json.dumps({"id": "p2", "note": "no claim"}),
                            json.dumps({"id": "p3", "note": "n", "claim": {"icd10": ["K80.20"], "providers": None}})]))
    report = ingest.validate(p, require_claim=False)
    kept = {c.id: c for c in report.kept}
    assert set(kept) == {"p1", "p2"} and kept["p2"].claim is None
    assert kept["p1"].claim.to_dict()["icd10"] == ["K80.20"]
    assert [(x.where, x.field) for x, _ in report.rejected] == [(2, "id"), (4, "claim.providers")]
