"""Evidence spans (eval/evidence.py): offsets inside the note on sentence/line boundaries, a code
without support flagged, and hit@1 against the synthetic writers' fact sentences."""

import pytest

from eval import evidence


def test_sentences_snap_to_boundaries():
    note = "PROCEDURE: Lap chole.\n1. Gallbladder removed. Cystic duct clipped!\n  - Hemostasis ok\n"
    spans = evidence.sentences(note)
    assert [note[s:e] for s, e in spans] == ["PROCEDURE: Lap chole.", "Gallbladder removed.", "Cystic duct clipped!",
                                             "Hemostasis ok"]


@pytest.mark.parametrize("style", ["dictation", "terse"])
def test_bm25_offsets_inside_the_note_on_boundaries_and_flags(style):
    from opclaim.synth import iter_drawn

    for _, case in iter_drawn(15, seed=5, style=style):
        bounds = set(evidence.sentences(case.note))
        claim = case.claim.to_dict()
        claim["icd10"] = [*claim["icd10"], "Z99.89"]  # an extra code the note does not support
        found = evidence.find(case.note, claim, "bm25", top=2)
        for ev in found.values():
            for s, e in ev["spans"]:
                assert 0 <= s < e <= len(case.note) and (s, e) in bounds
                assert case.note[s:e] == case.note[s:e].strip()
        assert set(found) >= {("icd10", c) for c in case.claim.icd10}


def test_unsupported_code_is_flagged():
    note = "Laparoscopic cholecystectomy for acute cholecystitis with gallstones.\nThe patient tolerated it well."
    claim = {"icd10": ["K80.00"], "providers": [{"name": "A", "lines": [
        {"cpt": "47562", "description": "Laparoscopic cholecystectomy"},
        {"cpt": "64721", "description": "Neuroplasty median nerve at carpal tunnel"}]}]}
    found = evidence.find(note, claim, "bm25")
    assert found[("cpt", "47562")]["spans"] == [[0, note.index(".") + 1]] and not found[("cpt", "47562")]["no_evidence"]
    assert found[("cpt", "64721")]["no_evidence"]


@pytest.mark.parametrize("style", ["dictation", "terse"])
def test_writers_gold_evidence_lies_inside_the_note_on_sentences(style):
    """Every gold code of a synthetic case has gold evidence from its writer: offsets inside the
    note, on sentence/line boundaries, and the sentence states the fact (round-trips through JSON)."""
    import json

    from opclaim.claim import Case
    from opclaim.synth import generate_cases

    for case in generate_cases(25, seed=6, style=style):
        bounds = set(evidence.sentences(case.note))
        assert set(case.evidence["icd10"]) == case.claim.icd10_set()
        assert set(case.evidence["cpt"]) == case.claim.cpt_set()
        for d in case.evidence.values():
            for spans in d.values():
                assert spans
                for s, e in spans:
                    assert 0 <= s < e <= len(case.note) and (s, e) in bounds
        assert Case.from_dict(json.loads(json.dumps(case.to_dict()))).evidence == case.evidence
    # a one-procedure terse note: the "proc:" line is among its CPT code's gold sentences
    case = next(c for c in generate_cases(10, seed=6, style="terse") if len(c.claim.cpt_set()) == 1)
    (cpt,) = case.claim.cpt_set()
    assert any(case.note[s:e].lower().startswith("proc: ") for s, e in case.evidence["cpt"][cpt])


def test_hit_at_1_against_the_writers_gold_compares_two_methods():
    from opclaim.synth import generate_cases

    cases = generate_cases(20, seed=3, style="dictation", length="short")
    res = evidence.measure(cases, "bm25")
    assert res["n"] >= 40 and res["hit_at_1"] >= 0.7
    assert res["by_system"]["icd10"]["n"] + res["by_system"]["cpt"]["n"] == res["n"]
    # a case without gold evidence (old records) is left out, not counted as a miss
    bare = [type(c)(id=c.id, note=c.note, claim=c.claim) for c in cases]
    assert evidence.measure(bare, "bm25")["n"] == 0


def test_serve_rows_get_evidence_offsets():
    from opclaim.claim import PHI3_MARKERS, Claim, render_target
    from opclaim.serve.engine import add_evidence, claim_from_output

    note = "Indication: pain.\nLaparoscopic cholecystectomy was performed."
    claim = Claim.from_dict({"icd10": ["K80.20"], "providers": [{"name": "A", "lines": [
        {"cpt": "47562", "modifiers": [], "description": "Laparoscopic cholecystectomy"}]}]})
    c, rows = claim_from_output(render_target(claim, PHI3_MARKERS))
    add_evidence(note, c, rows)
    cpt = next(r for r in rows if r["system"] == "cpt")
    assert cpt["evidence"] == [{"start": note.index("Lap"), "end": len(note)}]
