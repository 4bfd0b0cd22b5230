"""eval.extract, detail by detail: the cases mutation testing (docs/records/mutation.md) showed nothing
checked - line endings and inline markup, modifiers written in unusual places, descriptions that
must not be scanned, the header-less fallback, and the provider each billing line is credited to.
Each expected value is worked out by hand from the rule the module states."""

from collections import UserString

import pytest

from eval.extract import extract, extract_codes


def lines(text):
    return extract(text).lines


CPT = "CPT Codes with Modifiers:\n"


# ---------------------------------------------------------------- normalising the text
def test_old_mac_line_endings_split_lines():
    # A lone "\r" is a line break: without it the CPT header would sit inside the ICD line.
    text = "Diagnosis codes:\rK80.20\rProcedure codes:\r47562-80"
    assert extract_codes(text) == {"icd10": ["K80.20"], "cpt": ["47562"], "modifiers": ["47562-80"]}


def test_nul_byte_is_a_space_between_codes():
    assert extract_codes("ICD-10-CM Diagnoses: K80.20\x00R10.11")["icd10"] == ["K80.20", "R10.11"]


def test_no_break_space_separates_codes():
    assert extract_codes("ICD-10-CM Diagnoses: K80.20\u00a0R10.11")["icd10"] == ["K80.20", "R10.11"]


@pytest.mark.parametrize("mark", ["**", "__"])
def test_inline_bold_or_underline_around_a_code(mark):
    # Markdown emphasis inside the line is dropped, so the attached modifier still attaches.
    got = extract_codes(f"{CPT}CPT 1: {mark}47562{mark}-80")
    assert got == {"icd10": [], "cpt": ["47562"], "modifiers": ["47562-80"]}


def test_special_token_inside_a_line_is_a_line_break():
    assert extract_codes("ICD-10-CM Diagnoses: K80.20<|placeholder7|>R10.11")["icd10"] == ["K80.20", "R10.11"]


def test_str_like_object_is_read_through_str():
    assert extract_codes(UserString("ICD-10-CM Diagnoses: K80.20"))["icd10"] == ["K80.20"]


# ---------------------------------------------------------------- ICD section
def test_parenthesised_description_between_icd_codes():
    got = extract_codes("ICD-10-CM Diagnoses: K80.20 (calculus of gallbladder) R10.11")
    assert got["icd10"] == ["K80.20", "R10.11"]


# ---------------------------------------------------------------- CPT lines and modifiers
def test_modifier_none_then_next_code_on_the_same_line():
    assert lines(f"{CPT}47562 mod: none, 49585") == [("", "47562", []), ("", "49585", [])]


def test_spaced_known_letter_modifier():
    assert lines(f"{CPT}CPT 1: 47562 - LT") == [("", "47562", ["LT"])]


@pytest.mark.parametrize("item", ["47562-80-51", "47562 - 80 - 51", "47562-80 mod 51"])
def test_two_modifiers_in_one_item_both_kept_in_order(item):
    assert lines(f"{CPT}CPT 1: {item}") == [("", "47562", ["80", "51"])]


@pytest.mark.parametrize("item", ["47562 | Description: lap chole, mod 80",
                                  "47562 | Description: lap chole mod 80; 49585"])
def test_modifier_word_inside_the_description_is_not_a_modifier(item):
    # Descriptions are never scanned, even when a later code follows on the line.
    assert lines(CPT + item) == [("", "47562", [])]


def test_lines_before_any_provider_line_have_no_provider():
    assert lines(f"{CPT}47562") == [("", "47562", [])]


def test_billing_lines_after_diagnoses_start_the_cpt_section():
    # No CPT header: the provider line opens the section, so a bare code below it counts and is
    # credited to that provider (the header-less fallback would drop the bare 47562).
    text = "ICD-10-CM Diagnoses: K80.20\nProvider Name: Dr. X\n47562\n49585-51"
    assert lines(text) == [("Dr. X", "47562", []), ("Dr. X", "49585", ["51"])]
    assert extract_codes(text)["icd10"] == ["K80.20"]


# ---------------------------------------------------------------- header-less fallback
def test_fallback_labelled_undotted_icd():
    ex = extract("Diagnosis ICD-10: K8020")
    assert not ex.headers and ex.icd10 == ["K80.20"]


def test_fallback_never_reads_codes_from_a_description():
    assert extract_codes("Description: K80.20") == {"icd10": [], "cpt": [], "modifiers": []}
    assert lines("Billed CPT 47562 Description: revision 49585-51") == [("", "47562", [])]


def test_fallback_code_with_modifier_suffix():
    assert lines("Surgery 49585-51 done") == [("", "49585", ["51"])]


def test_fallback_adds_a_modifier_line_for_a_code_seen_without_one():
    # 47562 first without a modifier, then as 47562-80 on another line: both lines, one code.
    ex = extract("Billed CPT 47562\nAssistant 47562-80")
    assert ex.lines == [("", "47562", []), ("", "47562", ["80"])]
    assert ex.to_dict() == {"icd10": [], "cpt": ["47562"], "modifiers": ["47562-80"]}


def test_fallback_does_not_repeat_a_labelled_code_with_its_modifier():
    assert lines("Billed CPT 47562-80") == [("", "47562", ["80"])]
