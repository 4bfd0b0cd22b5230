"""Claim model: JSON round trip, target text render/parse, normalisation."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from opclaim.claim import (
    PHI3_MARKERS,
    PLAIN_MARKERS,
    Case,
    Claim,
    parse_target,
    render_target,
    strip_special_tokens,
)
from opclaim.codes import MODIFIERS, icd10_billable
from opclaim.errors import CodeFormatError, InputError

DESIGN_TARGET = """<|placeholder2|>ICD-10-CM Diagnoses:
K80.20, R10.11<|placeholder3|>
<|placeholder4|>CPT Codes with Modifiers:
Provider Name: Dr. A. Rivera
Provider Billables:
CPT 1: 47562 | Modifiers: None | Description: Laparoscopic cholecystectomy
Provider Name: Dr. B. Chen
Provider Billables:
CPT 1: 47562 | Modifiers: 80 | Description: Laparoscopic cholecystectomy<|placeholder5|>"""

DESIGN_CLAIM = {"icd10": ["K80.20", "R10.11"], "providers": [
    {"name": "Dr. A. Rivera", "role": "surgeon",
     "lines": [{"cpt": "47562", "modifiers": [], "description": "Laparoscopic cholecystectomy"}]},
    {"name": "Dr. B. Chen", "role": "assistant",
     "lines": [{"cpt": "47562", "modifiers": ["80"], "description": "Laparoscopic cholecystectomy"}]}]}


def test_render_matches_design_exactly():
    assert render_target(Claim.from_dict(DESIGN_CLAIM)) == DESIGN_TARGET


def test_parse_design_target():
    claim = parse_target(DESIGN_TARGET)
    assert claim.to_dict() == DESIGN_CLAIM
    assert claim.modifier_set() == {"47562-80"}
    assert claim.cpt_set() == {"47562"}


def test_plain_markers_and_strip():
    plain = render_target(Claim.from_dict(DESIGN_CLAIM), PLAIN_MARKERS)
    assert "<|" not in plain and "\n\nCPT Codes with Modifiers:" in plain
    assert strip_special_tokens(DESIGN_TARGET).startswith("ICD-10-CM Diagnoses:\nK80.20")
    assert parse_target(plain).to_dict() == DESIGN_CLAIM


def test_normalisation_on_load():
    c = Claim.from_dict({"icd10": ["k8020", "K80.20", " r1011 "], "providers": [
        {"name": "Dr  X\n", "lines": [{"cpt": "CPT 0042t", "modifiers": "rt, 51", "description": "a | b"}]}]})
    assert c.icd10 == ["K80.20", "R10.11"]
    line = c.providers[0].lines[0]
    assert (line.cpt, line.modifiers, line.description) == ("0042T", ["RT", "51"], "a / b")
    assert c.providers[0].name == "Dr X"


@pytest.mark.parametrize("bad,field", [
    ({"icd10": ["80.20K"]}, "claim.icd10[0]"),
    ({"providers": [{"name": "a", "lines": [{"cpt": "4756"}]}]}, "claim.providers[0].lines[0].cpt"),
    ({"providers": [{"name": "a", "lines": [{"cpt": "47562", "modifiers": ["800"]}]}]},
     "claim.providers[0].lines[0].modifiers[0]"),
])
def test_malformed_codes_name_field_and_string(bad, field):
    with pytest.raises(CodeFormatError) as e:
        Claim.from_dict(bad)
    assert e.value.field == field
    assert "malformed" in str(e.value)


def test_case_json_round_trip():
    d = {"id": "c1", "date": "2021-03-14", "service": "General Surgery", "note": "PREOP: x",
         "claim": DESIGN_CLAIM, "style": "dictation"}
    case = Case.from_dict(json.loads(json.dumps(d)))
    assert Case.from_dict(case.to_dict()).to_dict() == d


@pytest.mark.parametrize("missing", ["id", "note", "claim"])
def test_case_missing_fields(missing):
    d = {"id": "c1", "note": "x", "claim": DESIGN_CLAIM}
    d[missing] = "" if missing != "claim" else None
    with pytest.raises(InputError) as e:
        Case.from_dict(d)
    assert e.value.field == missing


# ---- property-based round trip
ICD = sorted(icd10_billable())
CPT = st.one_of(st.from_regex(r"[0-9]{5}", fullmatch=True), st.from_regex(r"[0-9]{4}[FTU]", fullmatch=True))
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40)
line_st = st.builds(lambda c, m, d: {"cpt": c, "modifiers": m, "description": d}, CPT,
                    st.lists(st.sampled_from(sorted(MODIFIERS)), max_size=3, unique=True), TEXT)
prov_st = st.builds(lambda n, ls: {"name": n, "lines": ls}, TEXT, st.lists(line_st, min_size=1, max_size=4))
claim_st = st.builds(lambda i, p: {"icd10": i, "providers": p},
                     st.lists(st.sampled_from(ICD), max_size=6, unique=True), st.lists(prov_st, max_size=3))


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
@settings(max_examples=150, deadline=None)
@given(claim_st, st.sampled_from([PHI3_MARKERS, PLAIN_MARKERS]))
def test_render_parse_round_trip(d, markers):
    claim = Claim.from_dict(d)
    back = parse_target(render_target(claim, markers))
    assert back.icd10 == claim.icd10
    assert [(p.name, [ln.to_dict() for ln in p.lines]) for p in back.providers] == \
           [(p.name, [ln.to_dict() for ln in p.lines]) for p in claim.providers]


# ---- strict types, optional fields, known codes (issue 16)
def _case(**over):
    d = {"id": "c1", "note": "x", "claim": json.loads(json.dumps(DESIGN_CLAIM))}
    d.update(over)
    return d


@pytest.mark.parametrize("over,field,msg", [
    ({"note": 12345}, "note", "must be a string, got integer"),
    ({"note": True}, "note", "must be a string, got boolean"),
    ({"id": False}, "id", "got boolean"),
    ({"service": ["General Surgery"]}, "service", "must be a string, got list"),
    ({"date": "03/14/2021"}, "date", "YYYY-MM-DD"),
    ({"patient": {"age": 121}}, "patient.age", "from 0 to 120"),
    ({"patient": {"age": "40"}}, "patient.age", "must be a integer, got string"),
    ({"patient": {"sex": "female"}}, "patient.sex", "one of F, M, U"),
    ({"patient": {"age": 40, "mrn": "1"}}, "patient", "unknown key"),
    ({"rationale": {"why": "x"}}, "rationale", "got object"),
    ({"extra": ["x"]}, "extra", "got list"),
])
def test_wrong_types_are_rejected_not_coerced(over, field, msg):
    with pytest.raises(InputError) as e:
        Case.from_dict(_case(**over))
    assert e.value.field == field and msg in e.value.reason


@pytest.mark.parametrize("path,value,field", [
    (("providers", 0, "lines", 0, "modifiers"), {"80": 1}, "claim.providers[0].lines[0].modifiers"),
    (("providers", 0, "name"), ["Dr A"], "claim.providers[0].name"),
    (("providers", 0, "lines", 0, "description"), {"d": 1}, "claim.providers[0].lines[0].description"),
    (("providers", 0, "lines", 0, "cpt"), 47562.0, "claim.providers[0].lines[0].cpt"),
    (("icd10",), "K80.20", "claim.icd10"),
])
def test_claim_fields_of_the_wrong_type(path, value, field):
    d = json.loads(json.dumps(DESIGN_CLAIM))
    node = d
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    with pytest.raises(InputError) as e:
        Claim.from_dict(d)
    assert e.value.field == field and "got" in e.value.reason


def test_unknown_and_letter_o_icd_codes(monkeypatch):
    with pytest.raises(CodeFormatError) as e:
        Case.from_dict(_case(claim={"icd10": ["Z99.99"]}))
    assert e.value.kind == "unknown_code" and "'Z99.99'" in e.value.reason
    assert Case.from_dict(_case(claim={"icd10": ["Z99.99"]}), allow_unknown_icd=True).claim.icd10 == ["Z99.99"]
    monkeypatch.setenv("OPCLAIM_ALLOW_UNKNOWN_ICD", "1")
    assert Case.from_dict(_case(claim={"icd10": ["Z99.99"]})).claim.icd10 == ["Z99.99"]
    for allow in (True, False):  # letter O is never accepted, whatever the release
        with pytest.raises(CodeFormatError, match="letter O where a zero belongs.*'K80.20'"):
            Case.from_dict(_case(claim={"icd10": ["K8O.2O"]}), allow_unknown_icd=allow)


def test_optional_fields_and_extra_round_trip():
    d = _case(patient={"age": 67, "sex": "F"}, rationale="Chole with stones.", source="golden", mrn="123",
              extra={"site": "A"})
    case = Case.from_dict(d)
    assert case.patient == {"age": 67, "sex": "F"} and case.rationale == "Chole with stones."
    assert case.source == "golden" and case.extra == {"site": "A", "mrn": "123"}
    back = Case.from_dict(json.loads(json.dumps(case.to_dict())))
    assert back.to_dict() == case.to_dict() and "mrn" not in case.to_dict()
    assert Case.from_dict(_case(patient={})).patient == {}
    assert "patient" not in Case.from_dict(_case()).to_dict()


def test_case_evidence_is_optional_and_offsets_must_lie_inside_the_note():
    from opclaim.claim import Case
    from opclaim.errors import InputError

    base = {"id": "c1", "note": "Lap chole.\nGallstones.", "claim": {"icd10": ["K80.20"], "providers": [
        {"name": "A", "lines": [{"cpt": "47562"}]}]}}
    assert Case.from_dict(base).evidence is None and "evidence" not in Case.from_dict(base).to_dict()
    ok = Case.from_dict({**base, "evidence": {"icd10": {"K80.20": [[11, 22]]}, "cpt": {"47562": [[0, 10]]}}})
    assert ok.note[slice(*ok.evidence["icd10"]["K80.20"][0])] == "Gallstones."
    assert Case.from_dict(ok.to_dict()).evidence == ok.evidence
    for bad, words in ((["x"], "must be an object"), ({"loinc": {}}, "unknown code system"),
                       ({"icd10": {"K80.20": [[0, 99]]}}, "outside the note"),
                       ({"icd10": {"K80.20": [[-1, 3]]}}, "outside the note"),
                       ({"icd10": {"K80.20": [[5, 5]]}}, "outside the note"),
                       ({"icd10": {"K80.20": [[0, True]]}}, "integers"),
                       ({"icd10": {"K80.20": [0, 3]}}, "integers"), ({"icd10": {"K80.20": "0-3"}}, "must be a list")):
        with pytest.raises(InputError, match=words) as e:
            Case.from_dict({**base, "evidence": bad})
        assert e.value.field.startswith("evidence")
