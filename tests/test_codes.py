"""Code systems: ICD-10-CM from the CMS release, CPT/HCPCS and modifier normalisation, user lists."""

import pytest

from opclaim import codes
from opclaim.errors import CodeFormatError, InputError


def test_icd10_release_size_and_billable():
    # simple-icd-10-cm lists 74,736 leaf entries; five 3-character codes (B20, F99, P84, R99,
    # Z66) also name a block of the same spelling, and 12 empty blocks (C00-C75, ...) are ranges,
    # not codes, so there are 74,719 distinct billable codes.
    assert len(codes.icd10_billable()) == 74719
    assert not any("-" in c for c in codes.icd10_billable())
    assert "B20" in codes.icd10_billable() and not codes.is_billable_icd10("C00-C75")
    assert codes.is_billable_icd10("K80.20") and codes.is_billable_icd10("k8020")
    assert not codes.is_billable_icd10("K80.2")  # a parent, not billable
    assert not codes.is_billable_icd10("K80.29")  # well-formed but not in the release
    assert "cholecystitis" in codes.icd10_description("K80.20")
    assert codes.icd10_description("K80.29") is None


@pytest.mark.parametrize("raw,norm", [("K8020", "K80.20"), ("k80.20", "K80.20"), (" E119 ", "E11.9"),
                                      ("S72001A", "S72.001A"), ("I10", "I10"), ("z68.41", "Z68.41")])
def test_icd10_normalise(raw, norm):
    assert codes.normalize_icd10(raw) == norm


@pytest.mark.parametrize("bad", ["", "K8", "80.20", "K80.200000", "K80-20", "KK0.20"])
def test_icd10_malformed_names_string(bad):
    with pytest.raises(CodeFormatError, match="malformed ICD-10-CM"):
        codes.normalize_icd10(bad)


def test_nearest_billable():
    assert codes.nearest_billable_icd10("K80.2") == ["K80.20", "K80.21"]
    assert codes.nearest_billable_icd10("K80.20") == ["K80.20"]
    near = codes.nearest_billable_icd10("K80.29")  # invalid leaf -> siblings under K80.2
    assert near and all(c.startswith("K80.2") and codes.is_billable_icd10(c) for c in near)
    assert codes.nearest_billable_icd10("not a code") == []


@pytest.mark.parametrize("raw,norm", [("47562", "47562"), ("cpt 47562", "47562"), ("3008f", "3008F"),
                                      ("0042T", "0042T"), ("CPT: 0001U", "0001U"), ("g0105", "G0105")])
def test_cpt_normalise(raw, norm):
    assert codes.normalize_cpt(raw) == norm


@pytest.mark.parametrize("bad", ["4756", "475620", "ABCDE", "4756X", ""])
def test_cpt_malformed(bad):
    with pytest.raises(CodeFormatError, match="malformed CPT"):
        codes.normalize_cpt(bad)


def test_modifier_table_covers_surgical_billing():
    required = ("22 50 51 52 59 62 76 77 78 79 80 81 82 AS LT RT E1 E2 E3 E4 F1 F2 F3 F4 F5 F6 F7 F8 F9 "
                "FA T1 T2 T3 T4 T5 T6 T7 T8 T9 TA XE XP XS XU GC QK QX QY QZ 23 47 73 74").split()
    assert set(required) <= set(codes.MODIFIERS)
    assert codes.normalize_modifier(" rt") == "RT"
    with pytest.raises(CodeFormatError):
        codes.normalize_modifier("RTX")
    current = "PT 33 53 54 55 56 63 66 91 95 Q6 KX GA GZ FS FY JW JZ".split()  # added 2026-12
    assert set(current) <= set(codes.MODIFIERS)
    assert len(codes.MODIFIERS) == len(set(codes.MODIFIERS)) and all(codes.MODIFIERS.values())
    assert all(codes.normalize_modifier(m.lower()) == m for m in codes.MODIFIERS)


def test_a_new_modifier_validates(tmp_path):
    """A claim line with PT (screening colonoscopy turned therapeutic) is kept; an unknown modifier
    on the same record is rejected, so the check is live."""
    import json

    from opclaim.ingest import validate

    def record(mod):
        return {"id": "c1", "note": "Screening colonoscopy; a polyp was removed by snare.",
                "claim": {"icd10": ["Z12.11"], "providers": [{"name": "Dr. A", "role": "surgeon", "lines": [
                    {"cpt": "45385", "modifiers": [mod], "description": "Colonoscopy with snare polypectomy"}]}]}}

    for mod, kept in (("PT", 1), ("ZZ", 0)):
        f = tmp_path / f"{mod}.jsonl"
        f.write_text(json.dumps(record(mod)) + "\n")
        report = validate(f)
        assert len(report.kept) == kept, [p.reason for p, _ in report.rejected]
    assert "unknown modifier 'ZZ'" in report.rejected[0][0].reason



def test_user_lists_override(tmp_path):
    f = tmp_path / "cpt.txt"
    f.write_text("# site list\n47562\tLap chole\ncpt 49505\n\n", encoding="utf-8")
    assert codes.load_code_list(f) == {"47562": "Lap chole", "49505": ""}
    m = tmp_path / "mods.txt"
    m.write_text("RT\tright\nzz\n", encoding="utf-8")
    assert codes.modifier_table(m) == {"RT": "right", "ZZ": ""}
    assert codes.modifier_table() == codes.MODIFIERS
    bad = tmp_path / "bad.txt"
    bad.write_text("47562\n4756\n", encoding="utf-8")
    with pytest.raises(InputError) as e:
        codes.load_code_list(bad)
    assert e.value.line == 2 and e.value.field == "code" and "bad.txt:2" in str(e.value)
