"""Subgroup evaluation on synthetic cases: a planted subgroup difference is flagged, none is not;
missing patient fields form "unknown"; the tables reach metrics.json and the report; a golden set
takes the headline."""

import json

import pytest

from eval import subgroups
from eval.metrics import Prediction, score_case
from opclaim.claim import Claim, render_target
from opclaim.cli import main as cli_main
from opclaim.io import write_jsonl
from opclaim.synth import generate_cases


@pytest.fixture(scope="module")
def cases():
    return generate_cases(240, seed=3, style="dictation")


def _pred(case, wrong: bool) -> Prediction:
    d = case.claim.to_dict()
    if wrong:
        d["icd10"] = ["Z00.00"]  # a valid code, but not this case's
    return Prediction(case.id, render_target(Claim.from_dict(d)), "finetuned")


def _rows(cases, wrong):
    return [{**c.to_dict(), "patient": c.patient} for c in cases], \
           [{"id": c.id, "config": "finetuned", "output": _pred(c, wrong(i, c)).output} for i, c in enumerate(cases)]


def test_age_bands_and_the_patient_accessor():
    assert [subgroups.age_band(a) for a in (None, 0, 39, 40, 64, 65, 79, 80, 120)] == \
        ["unknown", "<40", "<40", "40-64", "40-64", "65-79", "65-79", "80+", "80+"]

    class C:  # any record shape: attribute, extra dict, or nothing
        pass

    c = C()
    assert subgroups.patient_of(c) == {"age": None, "sex": None}
    c.extra = {"patient": {"age": 70, "sex": "f"}}
    assert subgroups.patient_of(c) == {"age": 70, "sex": "F"}
    c.patient = {"age": "70", "sex": "X"}  # wrong types are unknown, never an error
    assert subgroups.patient_of(c) == {"age": None, "sex": None}


def test_planted_subgroup_difference_is_flagged(cases):
    # everyone 80 and over gets a wrong diagnosis; everyone else is coded right, except a few
    scores = [score_case(c, _pred(c, c.patient["age"] >= 80 or i % 9 == 0)) for i, c in enumerate(cases)]
    sg = subgroups.breakdown(cases, scores, n_boot=300, seed=0)
    old = sg["dimensions"]["age_band"]["80+"]
    assert old["n_cases"] == sum(c.patient["age"] >= 80 for c in cases) >= subgroups.MIN_FLAG_CASES
    assert old["flagged"] == ["icd10"] and old["icd10"]["f1_ci"][1] < sg["overall"]["icd10"]["f1"]
    flagged = {(f["dimension"], f["group"], f["component"]) for f in sg["flags"]}
    assert ("age_band", "80+", "icd10") in flagged
    assert not any(f[2] in ("cpt", "modifier") for f in flagged)  # CPT was right for everyone
    assert sum(r["n_cases"] for r in sg["dimensions"]["sex"].values()) == len(cases)
    assert set(sg["dimensions"]["service"]) == {c.service for c in cases}


def test_no_difference_no_flag(cases):
    scores = [score_case(c, _pred(c, i % 9 == 0)) for i, c in enumerate(cases)]
    sg = subgroups.breakdown(cases, scores, n_boot=300, seed=0)
    assert sg["flags"] == []
    assert all(g["icd10"]["f1_ci"] is not None for d in sg["dimensions"].values() for g in d.values())


def test_missing_patient_fields_form_unknown_and_small_groups_never_flag(cases):
    some = cases[:40]
    saved = [c.patient for c in some]
    try:
        for c in some[:10]:
            c.patient = None
        scores = [score_case(c, _pred(c, i < 10)) for i, c in enumerate(some)]
        sg = subgroups.breakdown(some, scores, n_boot=200, seed=0)
        assert sg["dimensions"]["age_band"]["unknown"]["n_cases"] == 10
        assert sg["dimensions"]["sex"]["unknown"]["flagged"] == ["icd10"]  # the 10 without fields were wrong
        tiny = subgroups.breakdown(some[:3], scores[:3], n_boot=200, seed=0)
        assert tiny["flags"] == []  # under MIN_FLAG_CASES
        assert subgroups.breakdown(some, scores, n_boot=0)["flags"] == []  # no intervals, no flags
    finally:
        for c, p in zip(some, saved, strict=True):
            c.patient = p


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_eval_writes_subgroups_and_golden_headline(cases, tmp_path):
    test, gold = cases[:160], cases[160:]
    gold_rows, gold_preds = _rows(gold, lambda i, c: c.patient["age"] >= 80)
    for r in gold_rows:
        r["source"] = "golden"
        r["id"] = "g-" + r["id"]
        r.pop("style", None)
    for p in gold_preds:
        p["id"] = "g-" + p["id"]
    test_rows, test_preds = _rows(test, lambda i, c: False)
    write_jsonl(tmp_path / "test.jsonl", test_rows)
    write_jsonl(tmp_path / "gold.jsonl", gold_rows)
    write_jsonl(tmp_path / "pt.jsonl", test_preds)
    write_jsonl(tmp_path / "pg.jsonl", gold_preds)
    out = tmp_path / "eval"
    assert cli_main(["eval", "--gold", f"test={tmp_path / 'test.jsonl'}", "--gold", f"hand={tmp_path / 'gold.jsonl'}",
                     "--predictions", f"test/finetuned={tmp_path / 'pt.jsonl'}",
                     "--predictions", f"hand/finetuned={tmp_path / 'pg.jsonl'}",
                     "--out", str(out), "--bootstrap", "200"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["gold_sets"]["hand"]["role"] == "golden"  # by the records' "source", not the name
    h = m["headline"]
    assert (h["source"], h["role"], h["label"]) == ("hand", "golden", "golden (hand-written)")
    assert h["gaps"][0]["steps"][0]["from"] == "same-style" and h["gaps"][0]["steps"][0]["to"] == "golden"
    assert h["f1"]["icd10"]["f1_ci"] is not None
    sg = m["configs"]["hand/finetuned"]["subgroups"]
    assert sg["dimensions"]["age_band"]["80+"]["n_cases"] == sum(c.patient["age"] >= 80 for c in gold)
    assert ("age_band", "80+", "icd10") in {(f["dimension"], f["group"], f["component"]) for f in sg["flags"]}
    assert m["configs"]["test/finetuned"]["subgroups"]["flags"] == []
    html = (out / "report.html").read_text()
    assert "Headline numbers come from the <b>golden (hand-written)</b> set" in html
    assert html.count('class="subgroup-table"') == 6 and "No subgroup flagged." in html
    assert "Flagged: age_band = 80+ (icd10" in html
    for note_word in ("year-old",):  # subgroup output carries no note text
        assert note_word not in json.dumps(sg)


def test_headline_takes_the_configuration_asked_for():
    from types import SimpleNamespace

    from eval import headline

    def run(gold, cfg, f1):
        comp = {"f1": f1, "precision_ci": None, "recall_ci": None}
        return SimpleNamespace(gold=gold, config=cfg, label=f"{gold}/{cfg}",
                               block={"n_cases": 3, "icd10": comp, "cpt": comp, "modifier": comp})

    runs = [run("test", "knn", 0.9), run("test", "finetuned", 0.1), run("test", "rag-tuned", 0.5)]
    golds = {"test": []}
    assert headline.build(runs, golds)["config"] == "finetuned"
    assert headline.build(runs, golds, prefer="rag-tuned")["config"] == "rag-tuned"
    assert headline.build(runs, golds, prefer="absent")["config"] == "finetuned"
    assert headline.build(runs[:1], golds)["config"] == "knn"
