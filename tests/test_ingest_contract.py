"""opclaim.ingest, detail by detail: the defect class each reason maps to, age and sex cells, and
the report summary. Cases found by mutation testing (docs/mutation.md); whole files through
validate() are test_data_validate.py."""

from collections import Counter

import pytest

from opclaim import ingest
from opclaim.errors import InputError

MODS = "claim.providers[0].lines[0].modifiers[0]"


@pytest.mark.parametrize("reason,fld,kind", [
    ("bytes that are not UTF-8", "note", "non_utf8"),
    ("invalid JSON", None, "malformed_record"),
    ("row has more cells than the header", None, "malformed_record"),
    ("missing", "id", "missing_id"),
    ("empty", "note", "missing_note"),
    ("missing or empty", "claim", "missing_claim"),
    ("missing", "service", "invalid_record"),     # only id, note and claim have a "missing" class
    ("duplicate id (first on line 2)", "id", "duplicate_id"),
    ("unparseable date", "date", "bad_date"),
    ("unknown modifier 'ZZ'", MODS, "unknown_modifier"),  # before the modifiers-field rule
    ("malformed code", None, "malformed_code"),
    ("must be a string", "claim.icd10[0]", "malformed_code"),
    ("must be a string", "claim.providers[0].lines[0].cpt", "malformed_code"),
    ("must be a list", "claim.providers[0].lines[0].modifiers", "malformed_code"),
    ("must be a string", "claim.providers[0].name", "invalid_record"),
    ("something else", None, "invalid_record"),
])
def test_defect_class_of_each_reason(reason, fld, kind):
    assert ingest._kind(reason, fld) == kind


@pytest.mark.parametrize("value,want,counted", [
    ("42", 42, True), (" 7 ", 7, True), ("1234", "1234", False), ("4a", "4a", False),
    (42.0, 42, True), (0.0, 0, True), (1000.0, 1000, True), (1001.0, 1001.0, False),
    (-1.0, -1.0, False), (42.5, 42.5, False), (42, 42, False),
])
def test_age_cells(value, want, counted):
    changes = Counter()
    got = ingest._age(value, changes)
    assert got == want and type(got) is type(want)
    assert changes == (Counter(age_from_text=1) if counted else Counter())


@pytest.mark.parametrize("value,want,counted", [
    ("F", "F", False), ("U", "U", False), ("female", "F", True), (" Male ", "M", True),
    ("other", "U", True), ("n/a", "U", True), (1, 1, False),
])
def test_sex_cells(value, want, counted):
    changes = Counter()
    assert ingest._sex(value, changes) == want
    assert changes == (Counter(sex_code=1) if counted else Counter())


def test_unknown_sex_is_an_invalid_value_of_patient_sex():
    with pytest.raises(InputError) as e:
        ingest._sex("zz", Counter())
    assert (e.value.field, e.value.kind) == ("patient.sex", "invalid_value")
    assert e.value.reason == "unrecognised value; expected F, M or U (or female, male, unknown, other)"


def test_report_summary_and_defect_counts():
    p = ingest.Problem
    r = ingest.Report("in.csv", "csv", read=5)
    r.rejected = [(p(2, "id", "missing", "missing_id"), {}), (p(3, None, "bad", "malformed_record"), None),
                  (p(4, "id", "missing", "missing_id"), {})]
    r.flagged = [(p(5, "note", "long", "over_token_limit", "c5"), "c5")]
    r.changes = Counter(case=2, whitespace=1, not_a_rule=9)
    r.unknown_fields = Counter(zeta=1, alpha=2)
    assert r.defect_counts() == Counter(missing_id=2, malformed_record=1, over_token_limit=1)
    s = r.summary()
    assert s == {"file": "in.csv", "format": "csv", "records": 5, "valid": 0, "rejected": 3, "flagged": 1,
                 "defects": {"malformed_record": 1, "missing_id": 2, "over_token_limit": 1},
                 "cleanup": {"whitespace": 1, "case": 2}, "unknown_fields": {"alpha": 2, "zeta": 1}}
    assert list(s["defects"]) == sorted(s["defects"]) and list(s["cleanup"]) == ["whitespace", "case"]
