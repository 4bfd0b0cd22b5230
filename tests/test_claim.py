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
CPT = st.one_of(st.from_regex(r"\d{5}", fullmatch=True), st.from_regex(r"\d{4}[FTU]", fullmatch=True))
TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=40)
line_st = st.builds(lambda c, m, d: {"cpt": c, "modifiers": m, "description": d}, CPT,
                    st.lists(st.sampled_from(sorted(MODIFIERS)), max_size=3, unique=True), TEXT)
prov_st = st.builds(lambda n, ls: {"name": n, "lines": ls}, TEXT, st.lists(line_st, min_size=1, max_size=4))
claim_st = st.builds(lambda i, p: {"icd10": i, "providers": p},
                     st.lists(st.sampled_from(ICD), max_size=6, unique=True), st.lists(prov_st, max_size=3))


@settings(max_examples=150, deadline=None)
@given(claim_st, st.sampled_from([PHI3_MARKERS, PLAIN_MARKERS]))
def test_render_parse_round_trip(d, markers):
    claim = Claim.from_dict(d)
    back = parse_target(render_target(claim, markers))
    assert back.icd10 == claim.icd10
    assert [(p.name, [ln.to_dict() for ln in p.lines]) for p in back.providers] == \
           [(p.name, [ln.to_dict() for ln in p.lines]) for p in claim.providers]
