"""eval.extract: every output variant the issue lists, plus a fuzz test (never raises)."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eval.extract import extract, extract_codes
from opclaim.claim import PHI3_MARKERS, PLAIN_MARKERS, Claim, render_target

CLAIM = Claim.from_dict({
    "icd10": ["K80.20", "R10.11"],
    "providers": [
        {"name": "Dr. A. Rivera", "role": "surgeon",
         "lines": [{"cpt": "47562", "modifiers": [], "description": "Laparoscopic cholecystectomy"},
                   {"cpt": "49585", "modifiers": ["51"], "description": "Umbilical hernia repair"}]},
        {"name": "Dr. B. Chen", "role": "assistant",
         "lines": [{"cpt": "47562", "modifiers": ["80"], "description": "Laparoscopic cholecystectomy"}]}]})
WANT = {"icd10": ["K80.20", "R10.11"], "cpt": ["47562", "49585"], "modifiers": ["49585-51", "47562-80"]}


def sets(d):
    return {k: set(v) for k, v in d.items()}


@pytest.mark.parametrize("markers", [PHI3_MARKERS, PLAIN_MARKERS])
def test_exact_target_format(markers):
    text = render_target(CLAIM, markers)
    assert extract_codes(text) == WANT
    ex = extract(text)
    assert ex.headers
    assert [(p, c, m) for p, c, m in ex.lines] == [("Dr. A. Rivera", "47562", []),
                                                    ("Dr. A. Rivera", "49585", ["51"]),
                                                    ("Dr. B. Chen", "47562", ["80"])]


def test_empty_claim_target():
    assert extract_codes(render_target(Claim())) == {"icd10": [], "cpt": [], "modifiers": []}


@pytest.mark.parametrize("mangle", [
    lambda t: t.replace("<|placeholder3|>", "").replace("<|placeholder5|>", ""),  # missing closers
    lambda t: t.replace("<|placeholder2|>", "").replace("<|placeholder4|>", ""),  # missing openers
    lambda t: t.replace("<|placeholder2|>", "<|placeholder2").replace("<|placeholder5|>", "placeholder5|>"),
    lambda t: t.replace("<|placeholder3|>", "<placeholder 3>").replace("<|placeholder4|>", "|placeholder4|"),
    lambda t: t.replace("<|", "").replace("|>", ""),  # bare names
    lambda t: t + "<|end|><|endoftext|>",
    lambda t: t.replace("\n", " "),  # every newline lost
    lambda t: t.replace("\n", "\r\n"),
])
def test_missing_or_mangled_special_tokens(mangle):
    assert sets(extract_codes(mangle(render_target(CLAIM)))) == sets(WANT)


@pytest.mark.parametrize("line", [
    "CPT 1: 47562 | Modifiers: 80 | Description: Laparoscopic cholecystectomy",
    "CPT Code 1: 47562 | Modifiers: 80 | Description: Laparoscopic cholecystectomy",
    "1. 47562-80 Laparoscopic cholecystectomy",
    "2) 47562 - mod 80",
    "- 47562 (modifier 80)",
    "* CPT: 47562-80",
    "• 47562, Modifier(s): 80",
    "CPT #1: 47562 | Mods: 80",
    "Code 1: 47562 | Modifiers: 80",
    "  47562 -80",
])
def test_cpt_line_variants(line):
    text = f"ICD-10-CM Diagnoses:\nK80.20\nCPT Codes with Modifiers:\nProvider Name: Dr. X\n{line}\n"
    assert extract_codes(text) == {"icd10": ["K80.20"], "cpt": ["47562"], "modifiers": ["47562-80"]}


@pytest.mark.parametrize("mods,want", [
    ("Modifiers: 80, 51", ["80", "51"]),
    ("Modifiers: 80,51", ["80", "51"]),
    ("Modifiers: 80 51", ["80", "51"]),
    ("Modifiers: 80; 51", ["80", "51"]),
    ("Modifiers: 80 and 51", ["80", "51"]),
    ("Modifiers: None", []),
    ("Modifiers: none", []),
    ("Modifiers: N/A", []),
    ("Modifiers: NA", []),
    ("Modifiers: -", []),
    ("Modifiers: —", []),
    ("Modifiers: RT, 59", ["RT", "59"]),
    ("Modifiers: lt", ["LT"]),
    ("mod 80", ["80"]),
    ("with modifier 80 as assistant", ["80"]),
])
def test_modifier_variants(mods, want):
    text = f"CPT Codes with Modifiers:\nCPT 1: 47562 | {mods} | Description: Lap chole 80"
    assert extract_codes(text)["modifiers"] == [f"47562-{m}" for m in want]


def test_attached_modifiers_and_several_codes_per_line():
    text = "CPT Codes with Modifiers:\n47562-80-51, 49585-LT; 44970 with modifiers 59 and XS\n"
    assert sets(extract_codes(text)) == sets({"icd10": [], "cpt": ["47562", "49585", "44970"],
                                              "modifiers": ["47562-80", "47562-51", "49585-LT", "44970-59",
                                                            "44970-XS"]})


def test_modifier_counts_only_on_its_code():
    text = ("CPT Codes with Modifiers:\nCPT 1: 47562 | Modifiers: None | Description: x\n"
            "CPT 2: 49585 | Modifiers: 51 | Description: y")
    assert extract_codes(text)["modifiers"] == ["49585-51"]


@pytest.mark.parametrize("icd_body", [
    "k80.20, r10.11",           # lower case
    "K8020, R1011",             # without dots
    "k8020; r1011",             # semicolons
    "K80.20\nR10.11",           # newlines
    "- K80.20\n- R10.11",       # bullets
    "• K80.20 • R10.11",
    "1. K80.20 Calculus of gallbladder with acute cholecystitis\n2. R10.11 Right upper quadrant pain",
    "K80.20 (calculus of gallbladder, K81 category), R10.11",
    "K80.20 R10.11",
    "Diagnosis 1: K80.20\nDiagnosis 2: R10.11",
])
def test_icd_variants(icd_body):
    text = f"ICD-10-CM Diagnoses:\n{icd_body}\n\nCPT Codes with Modifiers:\nCPT 1: 47562 | Modifiers: None"
    assert extract_codes(text) == {"icd10": ["K80.20", "R10.11"], "cpt": ["47562"], "modifiers": []}


@pytest.mark.parametrize("icd_header,cpt_header", [
    ("ICD-10-CM Diagnoses:", "CPT Codes with Modifiers:"),
    ("**ICD-10-CM Diagnoses:**", "**CPT Codes with Modifiers:**"),
    ("## ICD-10 Codes", "## CPT Codes"),
    ("ICD-10-CM Diagnosis Codes:", "CPT/HCPCS Codes:"),
    ("Diagnoses (ICD-10-CM):", "Procedure codes:"),
    ("icd-10-cm diagnoses:", "cpt codes and modifiers:"),
])
def test_header_variants(icd_header, cpt_header):
    text = f"{icd_header}\nK80.20, R10.11\n{cpt_header}\n47562-80"
    assert extract_codes(text) == {"icd10": ["K80.20", "R10.11"], "cpt": ["47562"], "modifiers": ["47562-80"]}


def test_several_providers():
    text = ("CPT Codes with Modifiers:\nProvider Name: Dr. A\nProvider Billables:\n"
            "CPT 1: 27447 | Modifiers: RT | Description: Total knee\n"
            "Provider Name: Dr. B\nProvider Billables:\nCPT 1: 27447 | Modifiers: 80, RT | Description: Total knee\n"
            "Surgeon: Dr. C\n- 20985 | Modifiers: None")
    ex = extract(text)
    assert ex.cpt == ["27447", "20985"]
    assert ex.modifiers == ["27447-RT", "27447-80"]
    assert [p for p, _, _ in ex.lines] == ["Dr. A", "Dr. B", "Dr. C"]


def test_prose_before_after_and_in_descriptions_is_not_codes():
    text = ("Sure! Based on the operative report (history of I10, prior 99213 visit), here is the claim.\n"
            + render_target(CLAIM) +
            "\nNote: you might also consider K81.0 and CPT 47563; please verify with a coder.")
    text = text.replace("Description: Laparoscopic cholecystectomy",
                        "Description: Laparoscopic cholecystectomy (not 47563, see K81.0)", 1)
    assert sets(extract_codes(text)) == sets(WANT)


def test_prose_lines_inside_sections_are_ignored():
    text = ("ICD-10-CM Diagnoses:\nK80.20\nThe patient also had hypertension (I10).\n"
            "CPT Codes with Modifiers:\nProvider Name: Dr. A\nThe surgeon considered 47563 but did 47562.\n"
            "CPT 1: 47562 | Modifiers: None")
    assert extract_codes(text) == {"icd10": ["K80.20"], "cpt": ["47562"], "modifiers": []}


def test_no_headers_conservative_fallback():
    text = "The patient had acute cholecystitis (K81.0). We billed CPT 47562 and 49585-51. Blood loss 15000 mL."
    assert extract_codes(text) == {"icd10": ["K81.0"], "cpt": ["47562", "49585"], "modifiers": ["49585-51"]}
    assert not extract(text).headers
    # undotted look-alikes and bare 5-digit numbers are not taken without a header
    assert extract_codes("Room K80 at 12:00, order 47562, zip 02139.") == {"icd10": [], "cpt": [], "modifiers": []}


def test_headers_for_one_section_only():
    # no CPT header: labelled CPT lines are still found; ICD codes only from the ICD section
    text = "ICD-10-CM Diagnoses:\nK80.20<|placeholder3|>\nCPT 1: 47562 | Modifiers: 80 | Description: lap chole"
    assert extract_codes(text) == {"icd10": ["K80.20"], "cpt": ["47562"], "modifiers": ["47562-80"]}


@pytest.mark.parametrize("junk", [None, "", b"\xff\xfe\x00", "<|placeholder", "CPT", "ICD-10-CM Diagnoses:",
                                  "Modifiers:", "CPT 1: | Modifiers: 80", 12345, "\x00\x00", "ICD-10-CM Diagnoses:\n" * 50])
def test_junk_never_raises(junk):
    d = extract_codes(junk)
    assert set(d) == {"icd10", "cpt", "modifiers"}


FRAGMENTS = st.sampled_from([
    "ICD-10-CM Diagnoses:", "CPT Codes with Modifiers:", "Provider Name:", "Provider Billables:", "CPT 1:",
    "<|placeholder2|>", "<|placeholder3|>", "<|placeholder5|>", "placeholder4|>", "|", "Modifiers:", "mod",
    "Description:", "K80.20", "k8020", "47562", "47562-80", "-80", "None", "N/A", ",", ";", "\n", " ", "(", ")",
    "1.", "- ", "•", "and", "\x00", "é", "\r", "**", "#", "0042T", "A1B", "999999"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=400), st.lists(FRAGMENTS | st.text(max_size=6), max_size=60).map("".join),
                 st.binary(max_size=200)))
def test_fuzz_never_raises_and_codes_are_normalised(text):
    d = extract_codes(text)
    assert all(isinstance(c, str) and c == c.upper() for v in d.values() for c in v)
    for pair in d["modifiers"]:
        cpt, _, mod = pair.partition("-")
        assert cpt in d["cpt"] and len(mod) == 2
    assert len(set(d["icd10"])) == len(d["icd10"]) and len(set(d["cpt"])) == len(d["cpt"])


@pytest.mark.parametrize("style", ["dictation", "terse"])
def test_round_trip_over_synthetic_claims(style):
    """Every claim the synthetic corpus can produce comes back exactly from its target text."""
    from opclaim.synth import generate_cases

    for c in generate_cases(300, seed=7, style=style):
        for markers in (PHI3_MARKERS, PLAIN_MARKERS):
            d = extract_codes(render_target(c.claim, markers))
            assert (set(d["icd10"]), set(d["cpt"]), set(d["modifiers"])) == \
                (c.claim.icd10_set(), c.claim.cpt_set(), c.claim.modifier_set()), c.id


# ---- claim lines after the diagnoses with the "CPT Codes with Modifiers:" header left out
@pytest.mark.parametrize("text,want", [
    ("ICD-10-CM Diagnoses:\nK80.20, R10.11\nCPT 1: 47562 | Modifiers: 80 | Description: lap chole",
     {"icd10": ["K80.20", "R10.11"], "cpt": ["47562"], "modifiers": ["47562-80"]}),
    ("<|placeholder2|>ICD-10-CM Diagnoses:\nK80.20\nProvider Name: Dr. A. Rivera\nProvider Billables:\n"
     "CPT 1: 47562 | Modifiers: None | Description: Laparoscopic cholecystectomy\n"
     "CPT 2: 49585 | Modifiers: 51 | Description: umbilical hernia repair<|placeholder5|>",
     {"icd10": ["K80.20"], "cpt": ["47562", "49585"], "modifiers": ["49585-51"]}),
    ("**ICD-10-CM Diagnoses:**\n- K35.80\n\n  CPT 1: 44970 | Modifiers: None | Description: lap appy\n"
     "  cpt 2: 49320 | Modifiers: 59, 51 | Description: diagnostic laparoscopy\nThanks!",
     {"icd10": ["K35.80"], "cpt": ["44970", "49320"], "modifiers": ["49320-59", "49320-51"]}),
    ("ICD-10-CM Diagnoses: H25.11\nCPT 1: 66984 RT", {"icd10": ["H25.11"], "cpt": ["66984"], "modifiers": []}),
    ("ICD-10-CM Diagnoses:\nK80.20\nProvider Name: Dr B\nCPT 1: 47562 | Modifiers: 80 | Description: K81.0 noted",
     {"icd10": ["K80.20"], "cpt": ["47562"], "modifiers": ["47562-80"]}),
])
def test_claim_lines_without_cpt_header_are_found(text, want):
    got = extract_codes(text)
    assert got == want
