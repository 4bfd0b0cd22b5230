"""The synthetic corpus: determinism, a real and billable catalog, claims that follow from their
notes (checked against the note text), distractors not coded, and two measurably different styles."""

import os
import random
import re
import stat
import statistics
import subprocess
from collections import Counter

import pytest

from opclaim.claim import parse_target, render_target
from opclaim.codes import CPT_RE, MODIFIERS, icd10_billable, icd10_description
from opclaim.io import read_cases
from opclaim.synth import catalog, generate_cases, iter_drawn
from tests.conftest import opclaim_exe

TOKEN_RE = re.compile(r"\w+|[^\w\s]")


@pytest.fixture(scope="module")
def drawn():
    """1,500 (scenario, case) pairs per style: the facts and what the writers made of them."""
    return {style: list(iter_drawn(1500, seed=11, style=style)) for style in ("dictation", "terse")}


def _all(drawn):
    return [(style, s, c) for style, pairs in drawn.items() for s, c in pairs]


def test_deterministic_by_seed_and_independent_of_global_random():
    random.seed(1)
    a = [c.to_dict() for c in generate_cases(150, seed=7, style="terse")]
    random.seed(2)
    b = [c.to_dict() for c in generate_cases(150, seed=7, style="terse")]
    assert a == b
    assert a != [c.to_dict() for c in generate_cases(150, seed=8, style="terse")]
    assert [c.to_dict() for c in generate_cases(50, 3)] == [c.to_dict() for c in generate_cases(50, 3)]


def test_catalog_is_large_real_and_billable():
    icd = catalog.all_icd10_codes()
    billable = icd10_billable()
    assert len(icd) >= 250
    assert sorted(c for c in icd if c not in billable) == []
    cpts = catalog.all_cpt_codes()
    assert len(cpts) >= 120 and all(CPT_RE.match(c) for c in cpts)
    assert len(catalog.BY_SERVICE) >= 15 and set(catalog.SERVICE_WEIGHTS) == set(catalog.BY_SERVICE)
    for p in catalog.PROCEDURES:
        assert all(c in catalog.BY_CPT for c in p.comp)
        assert p.name != p.terse and p.desc
    # Diagnosis wording is our own: longer phrases are almost never the CMS description verbatim
    # (one- to three-word clinical terms like "phimosis" inevitably coincide).
    same = total = 0
    for p in catalog.PROCEDURES:
        for dx in p.dx:
            if len(dx.words.split()) < 4:
                continue
            code = dx.code if isinstance(dx.code, str) else dx.code["R" if "R" in dx.code else sorted(dx.code)[0]]
            total += 1
            same += (icd10_description(code) or "").lower() == dx.words.lower()
    assert total > 150 and same / total < 0.05


def test_claims_use_real_codes_and_round_trip(drawn):
    icd_all, cpt_all = catalog.all_icd10_codes(), catalog.all_cpt_codes()
    billable = icd10_billable()
    for _, _, c in _all(drawn):
        claim = c.claim
        assert claim.icd10 and claim.providers and claim.providers[0].role == "surgeon"
        assert set(claim.icd10) <= icd_all and set(claim.icd10) <= billable
        assert claim.cpt_set() <= cpt_all
        assert all(m.split("-")[1] in MODIFIERS for m in claim.modifier_set())
        back = parse_target(render_target(claim))
        assert (back.icd10_set(), back.cpt_set(), back.modifier_set()) == (claim.icd10_set(), claim.cpt_set(), claim.modifier_set())
        assert c.date[:4] in {"2019", "2020", "2021", "2022", "2023"} and c.service and c.style


def test_service_mix_follows_the_study():
    mix = Counter(c.service for c in generate_cases(4000, seed=5, length="short"))
    assert len(mix) >= 15
    share = {k: v / 4000 for k, v in mix.items()}
    assert abs(share["Ophthalmology"] - 0.31) < 0.03
    assert abs(share["Orthopedics"] - 0.24) < 0.03
    assert abs(share["General Surgery"] - 0.13) < 0.025
    assert abs(share["Urology"] - 0.08) < 0.02


# ------------------------------------------------------------------ claim follows note
SIDE_WORDS = {"dictation": {"R": "right", "L": "left"}, "terse": {"R": "r", "L": "l"}}
EYELID = {("L", "U"): "E1", ("L", "L"): "E2", ("R", "U"): "E3", ("R", "L"): "E4"}
FINGER = {("L", 1): "FA", ("L", 2): "F1", ("L", 3): "F2", ("L", 4): "F3", ("L", 5): "F4",
          ("R", 1): "F5", ("R", 2): "F6", ("R", 3): "F7", ("R", 4): "F8", ("R", 5): "F9"}
TOE = {("L", 1): "TA", ("L", 2): "T1", ("L", 3): "T2", ("L", 4): "T3", ("L", 5): "T4",
       ("R", 1): "T5", ("R", 2): "T6", ("R", 3): "T7", ("R", 4): "T8", ("R", 5): "T9"}
FINGER_WORDS = {"dictation": ["thumb", "index finger", "long finger", "ring finger", "small finger"],
                "terse": ["thumb", "2nd finger", "3rd finger", "4th finger", "5th finger"]}
TOE_WORDS = {"dictation": ["great toe", "second toe", "third toe", "fourth toe", "fifth toe"],
             "terse": ["great toe", "2nd toe", "3rd toe", "4th toe", "5th toe"]}


def _procedure_section(style, note):
    low = note.lower()
    if style == "terse":
        m = re.search(r"\nprocs?:(.*?)\nsurg:", low, re.S)
    else:
        m = re.search(r"\n(?:procedures? performed|operation|name of operation): (.*?)\n\nsurgeon:", low, re.S)
    assert m, "procedure section not found"
    return m.group(1)


def test_laterality_digits_eyelids_and_bilateral(drawn):
    seen = Counter()
    for style, s, c in _all(drawn):
        surgeon = c.claim.providers[0]
        section = _procedure_section(style, c.note)
        for d, line in zip(s.done, surgeon.lines, strict=True):
            assert line.cpt == d.proc.cpt
            mods = set(line.modifiers)
            if d.proc.lat is None:
                assert not mods & {"RT", "LT", "50"}
                continue
            if d.side == "B":
                assert "50" in mods and not mods & {"RT", "LT"}
                assert re.search(r"bilateral|both eyes|bilat|\bou\b", section)
                seen["50"] += 1
            elif d.proc.lat == "side":
                assert {"R": "RT", "L": "LT"}[d.side] in mods
                word = SIDE_WORDS[style][d.side]
                assert re.search(rf"\b{word}\b|\b{'od' if d.side == 'R' else 'os'}\b", section)
                seen["side"] += 1
            elif d.proc.lat == "eyelid":
                assert EYELID[(d.side, d.lid)] in mods
                lid = "upper" if d.lid == "U" else "lower"
                assert f"{SIDE_WORDS[style][d.side]} {lid} {'eyelid' if style == 'dictation' else 'lid'}" in section
                seen["eyelid"] += 1
            elif d.proc.lat == "finger":
                assert FINGER[(d.side, d.digit)] in mods
                assert f"{SIDE_WORDS[style][d.side]} {FINGER_WORDS[style][d.digit - 1]}" in section
                seen["finger"] += 1
            elif d.proc.lat == "toe":
                assert TOE[(d.side, d.digit)] in mods
                assert f"{SIDE_WORDS[style][d.side]} {TOE_WORDS[style][d.digit - 1]}" in section
                seen["toe"] += 1
    assert all(seen[k] >= 3 for k in ("50", "side", "eyelid", "finger", "toe")), seen


def test_assistants_and_teaching_physician(drawn):
    seen = Counter()
    for style, s, c in _all(drawn):
        low = c.note.lower()
        surgeon, *assistants = c.claim.providers
        assert len(assistants) == len(s.assistants)
        has_resident = ("resident:" in low) if style == "dictation" else ("\nres:" in low)
        assert all(("GC" in ln.modifiers) == has_resident for ln in surgeon.lines)
        seen["GC"] += has_resident
        for (person, _), prov in zip(s.assistants, assistants, strict=True):
            assert prov.role == "assistant" and [ln.cpt for ln in prov.lines] == [ln.cpt for ln in surgeon.lines]
            assert all("GC" not in ln.modifiers for ln in prov.lines)
            rows = [x for x in low.splitlines() if re.match(r"assistants?:|asst:", x)]
            row = next(seg for x in rows for seg in x.split(";")
                       if person.last.lower() in seg and person.cred.lower() in seg)
            mods = set(prov.lines[0].modifiers)
            if "pa-c" in row or " np" in row:
                assert "AS" in mods and not mods & {"80", "82"}
                seen["AS"] += 1
            elif "no qualified resident" in row:
                assert "82" in mods and "80" not in mods
                seen["82"] += 1
            else:
                assert "80" in mods and not mods & {"82", "AS"}
                seen["80"] += 1
    assert all(seen[k] >= 3 for k in ("GC", "AS", "80", "82")), seen


def test_return_to_or_and_volume_modifiers(drawn):
    seen = Counter()
    for _style, s, c in _all(drawn):
        low = c.note.lower()
        mods = [set(ln.modifiers) for ln in c.claim.providers[0].lines]
        related = "unplanned return" in low
        unrelated = ("unrelated" in low and "global" in low)
        assert all(("78" in m) == related for m in mods)
        assert all(("79" in m) == unrelated for m in mods)
        increased = "ninety minutes longer" in low or "+90 min" in low
        reduced = "reduced in scope" in low or "reduced procedure" in low
        assert ("22" in mods[0]) == increased and ("52" in mods[0]) == reduced
        assert all(not m & {"22", "52"} for m in mods[1:])
        for i, m in enumerate(mods):
            assert ("51" in m) == (i > 0)
        for d, m in zip(s.done, mods, strict=True):
            assert ("59" in m) == (d.distinct == "59") and ("XS" in m) == (d.distinct == "XS")
        seen["78"] += related
        seen["79"] += unrelated
        seen["22"] += increased
        seen["52"] += reduced
        seen["51"] += len(mods) > 1
        seen["59"] += "separate incision" in low
        seen["XS"] += "different anatomic structure" in low or "different structure" in low
    assert all(seen[k] >= 3 for k in ("78", "79", "22", "52", "51", "59", "XS")), seen


def _bmi_in_note(low):
    m = re.search(r"(?:body mass index (?:of |today is )|bmi )(\d+\.\d)", low)
    return float(m.group(1)) if m else None


def test_secondary_diagnoses_only_when_documented(drawn):
    seen = Counter()
    for style, s, c in _all(drawn):
        low = c.note.lower()
        codes = set(c.claim.icd10)
        for cm in s.comorbid:
            phrase = (cm.words if style == "dictation" else cm.terse).lower()
            assert phrase in low
            assert set(cm.codes) <= codes
            seen["comorbid"] += 1
        smoker = "smokes cigarettes daily" in low or "current smoker" in low
        former = "former smoker" in low
        assert ("F17.210" in codes) == smoker and ("Z87.891" in codes) == former
        obesity = re.search(r"\bobesity\b", low) is not None
        bmi_codes = {x for x in codes if x.startswith("Z68")}
        if obesity:
            bmi = _bmi_in_note(low)
            assert bmi is not None and bmi_codes == {catalog.bmi_code(bmi)}
            assert ("E66.01" in codes) == (bmi >= 40) or s.done[0].proc.cpt in ("43775", "43644")
            seen["obesity"] += 1
        else:
            assert not bmi_codes and "E66.9" not in codes  # a BMI alone is not coded
            seen["bmi_alone"] += _bmi_in_note(low) is not None and _bmi_in_note(low) >= 30
    assert seen["comorbid"] > 100 and seen["obesity"] > 20 and seen["bmi_alone"] > 5, seen


def test_postoperative_diagnosis_drives_codes(drawn):
    changed = 0
    for style, s, c in _all(drawn):
        first = s.done[0]
        post_codes = list(dict.fromkeys(x for dx in first.post for x in dx.for_side(first.side, first.digit, first.lid)))
        assert c.claim.icd10[:len(post_codes)] == post_codes
        if [dx.code for dx in first.post] != [dx.code for dx in first.pre]:
            changed += 1
            pre_codes = {x for dx in first.pre for x in dx.for_side(first.side, first.digit, first.lid)}
            assert not (pre_codes - set(post_codes)) & set(c.claim.icd10)
            low = c.note.lower()
            word = first.post[0].words if style == "dictation" else first.post[0].terse
            post_part = re.split(r"postoperative diagnos[ei]s:|diagnosis after operation:|post-op dx:", low, maxsplit=1)[1]
            assert word.lower() in post_part
    assert changed >= 10


def test_distractors_are_never_coded(drawn):
    seen = Counter()
    for style, s, c in _all(drawn):
        low = c.note.lower()
        cpts = c.claim.cpt_set()
        done = {d.proc.cpt for d in s.done}
        for name, terse, _year in s.prior_surgeries:
            assert (name if style == "dictation" else terse).lower() in low
            prior = next(p.cpt for p in catalog.PROCEDURES if p.name == name)
            assert prior in done or prior not in cpts
            seen["prior"] += 1
        if s.ruled_out:
            assert "ruled out" in low or "r/o" in low
            seen["ruled_out"] += 1
        # Numbers that look like codes: lot numbers, extensions, MRNs, EBL.
        for number in re.findall(r"\b\d{4,8}\b", c.note):
            if number not in done:
                assert number not in cpts
                seen["numbers"] += 1
        # Nothing outside the documented facts: ruled-out conditions have no codes.
        assert not {x for x in c.claim.icd10 if x[:3] in {"I26", "I82", "I21", "I63"} or x == "N39.0"}
    assert seen["prior"] > 500 and seen["ruled_out"] > 300 and seen["numbers"] > 2000, seen


# ------------------------------------------------------------------ styles and lengths
def _words(cases):
    return [re.findall(r"[a-z0-9/']+", c.note.lower()) for c in cases]


def _jaccard(a, b):
    return len(a & b) / len(a | b)


def test_styles_differ_measurably():
    d0, d1 = generate_cases(300, 0, "dictation"), generate_cases(300, 1, "dictation")
    t0 = generate_cases(300, 0, "terse")
    vocab = [set(w for ws in _words(x) for w in ws) for x in (d0, d1, t0)]
    tri = [set(t for ws in _words(x) for t in zip(ws, ws[1:], ws[2:], strict=False)) for x in (d0, d1, t0)]
    within_v, cross_v = _jaccard(vocab[0], vocab[1]), _jaccard(vocab[0], vocab[2])
    within_t, cross_t = _jaccard(tri[0], tri[1]), _jaccard(tri[0], tri[2])
    assert cross_v < 0.5 * within_v, (cross_v, within_v)
    assert cross_t < 0.1 * within_t, (cross_t, within_t)
    # terse markers vs formal markers
    t_text, d_text = "\n".join(c.note for c in t0), "\n".join(c.note for c in d0)
    for marker in ("s/p", " w/ ", "\n- ", "pre-op dx:"):
        assert marker in t_text and marker not in d_text
    assert "lap chole" in t_text and "laparoscopic cholecystectomy" in d_text


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_lengths_like_real_notes_and_short_mode_keeps_sections():
    real = generate_cases(2000, 2, "dictation")
    n = sorted(len(TOKEN_RE.findall(c.note)) for c in real)
    assert 300 <= statistics.median(n) <= 900 and n[-1] > 1500
    short = generate_cases(300, 2, "dictation", length="short")
    ns = [len(TOKEN_RE.findall(c.note)) for c in short]
    assert statistics.median(ns) < 0.75 * statistics.median(n) and max(ns) < 1000
    for c in short:
        for header in ("DATE OF OPERATION", "SURGEON:", "ASSISTANT", "ANESTHESIA:", "ESTIMATED BLOOD LOSS",
                       "SPECIMENS:", "COMPLICATIONS:", "FINDINGS:", "DISPOSITION:"):
            assert header in c.note
    for c in generate_cases(300, 2, "terse", length="short"):
        low = c.note.lower()
        for header in ("pre-op dx:", "post-op dx:", "surg:", "asst:", "anes:", "ebl:", "cx:", "procedure:", "findings:"):
            assert header in low


def test_cli_synth_writes_private_jsonl(tmp_path, cli_env):
    out = tmp_path / "t.jsonl"
    r = subprocess.run([opclaim_exe(), "data", "synth", "--n", "40", "--seed", "3", "--style", "terse", "--out", str(out)],
                       env=cli_env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o600
    cases = read_cases(out)
    assert len(cases) == 40 and all(c.style == "terse" and c.id.startswith("t") for c in cases)
    assert [c.note for c in cases] == [c.note for c in generate_cases(40, 3, "terse")]
    bad = subprocess.run([opclaim_exe(), "data", "synth", "--n", "0", "--out", str(tmp_path / "x.jsonl")],
                         env=cli_env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and not (tmp_path / "x.jsonl").exists()


def test_services_restrict_the_case_mix(tmp_path, cli_env):
    """A department's corpus: only the named services, their relative weights kept, the default
    stream unchanged; an unknown service is refused by name."""
    eye = generate_cases(300, seed=4, services=["Ophthalmology"])
    assert {c.service for c in eye} == {"Ophthalmology"}
    eye_cpt = {p.cpt for p in catalog.BY_SERVICE["Ophthalmology"]}
    first = {c.claim.providers[0].lines[0].cpt for c in eye}
    assert first <= eye_cpt | set(catalog.RETURN_PROCS) | set(catalog.DISTINCT_PROCS)
    two = Counter(c.service for c in generate_cases(1000, seed=4, services=["Ophthalmology", "Urology"]))
    assert set(two) == {"Ophthalmology", "Urology"}
    share = two["Ophthalmology"] / 1000
    want = catalog.SERVICE_WEIGHTS["Ophthalmology"] / (catalog.SERVICE_WEIGHTS["Ophthalmology"]
                                                      + catalog.SERVICE_WEIGHTS["Urology"])
    assert abs(share - want) < 0.05
    assert [c.to_dict() for c in generate_cases(30, 4)] == [c.to_dict() for c in generate_cases(30, 4, services=None)]
    with pytest.raises(ValueError, match="Eyes"):
        generate_cases(3, services=["Eyes"])
    bad = subprocess.run([opclaim_exe(), "data", "synth", "--n", "3", "--services", "Ophthalmology,Eyes",
                          "--out", str(tmp_path / "x.jsonl")], env=cli_env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--services" in bad.stderr and "'Eyes'" in bad.stderr
    assert not (tmp_path / "x.jsonl").exists()


def test_patient_fields_come_from_the_drawn_facts(drawn):
    """age/sex on every synthetic case are the scenario's own facts, which both writers state."""
    for _style, s, c in _all(drawn):
        assert c.patient == {"age": s.age, "sex": s.sex}
        assert str(s.age) in c.note
    ages = [s.age for _, s, _ in _all(drawn)]
    assert min(ages) < 12 and max(ages) >= 80  # pediatric and 80+ age bands are both drawn
    by_service = {}
    for _, _s, c in _all(drawn):
        by_service.setdefault(c.service, set()).add(c.patient["sex"])
    assert by_service["Obstetrics"] == {"F"} and by_service["Gynecology"] == {"F"}
    again = next(iter(iter_drawn(1, seed=11, style="terse")))[1]
    assert again.patient == drawn["terse"][0][1].patient
