"""The hand-written golden set (data/golden): valid, billable, every service, ≥ 30 Ophthalmology,
and no note near-duplicate of what our generator writes; and the check itself catches a planted
near-duplicate. OPCLAIM_GOLDEN_DIR points the set tests at another folder."""

import json
import os
import re
from pathlib import Path

import pytest

from opclaim import neardup
from opclaim.cli import main as cli_main
from opclaim.commands import golden
from opclaim.synth.scenario import SERVICES
from tests.conftest import ROOT

GOLDEN = Path(os.environ.get("OPCLAIM_GOLDEN_DIR") or ROOT / "data" / "golden")
HAVE_GOLDEN = GOLDEN.is_dir() and any(GOLDEN.glob("*.jsonl"))

# Two fixture notes written for this test only (not golden notes, not synthetic).
OWN = [
    "Left knee scope. Findings: a flap tear of the medial meniscus posterior horn, trimmed back to a stable rim "
    "with a shaver and biter. Lateral compartment and patellofemoral joint unremarkable. Portals closed with nylon.",
    "Procedure note, dictated late. Excision of a 2 cm lipoma from the right forearm through a transverse "
    "incision; the mass shelled out intact and was sent to pathology. Layered closure, dermabond, no drain.",
]


def _case(cid, note, service="Orthopedics"):
    return {"id": cid, "date": "2022-03-04", "service": service, "note": note, "source": "golden",
            "claim": {"icd10": ["M23.222"], "providers": [{"name": "Dr. A. Test", "role": "surgeon",
                                                         "lines": [{"cpt": "29881", "modifiers": ["LT"]}]}]}}


def _planted(sample):
    """A synthetic note with its numbers and a few words changed: what copy-and-edit looks like."""
    note = sample[3].note
    note = re.sub(r"\d+", "7", note).replace("patient", "pt").replace("The ", "This ")
    return note


@pytest.fixture(scope="module")
def small_sample():
    return neardup.synthetic_sample(300, seed=5)


def test_shingles_ignore_numbers_and_case():
    a = neardup.shingles("The patient, aged 71, was brought to the OR on 3/4/2022.")
    b = neardup.shingles("the PATIENT aged 45 was brought to the or on 9/9/1999")
    assert a == b and neardup.jaccard(a, b) == 1.0
    assert neardup.jaccard(a, neardup.shingles("completely different words in this short line")) == 0.0


def test_check_catches_a_planted_near_duplicate(tmp_path, small_sample):
    rows = [_case("own-1", OWN[0]), _case("own-2", OWN[1]), _case("planted", _planted(small_sample))]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = golden.check(tmp_path, sample=small_sample)
    nd = r["near_duplicate"]
    assert nd["near_duplicates"] == ["planted"]
    per = {x["id"]: x for x in nd["per_note"]}
    assert per["planted"]["max_jaccard"] >= 0.5 and per["planted"]["nearest_synthetic"] == small_sample[3].id
    assert per["own-1"]["max_jaccard"] < 0.05 and per["own-2"]["max_jaccard"] < 0.05
    # fresh synthetic notes sit at or above the threshold: the line separates our writers from others
    assert nd["synthetic_baseline"]["median"] > nd["threshold"]
    assert not r["ok"] and "Ophthalmology" in r["services_missing"]
    assert r["distribution"]["services"]["Orthopedics"]["cpt"] == {"29881": 3}
    assert r["distribution"]["totals"]["modifiers"] == {"LT": 3}
    assert "flap tear" not in json.dumps(r)  # the report carries ids and codes, never note text


def test_cli_fails_on_the_planted_note_and_names_it(tmp_path, small_sample, capsys):
    rows = [_case("own-1", OWN[0]), _case("planted", _planted(small_sample))]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    rc = cli_main(["data", "golden-check", str(tmp_path), "--sample", "300", "--seed", "5",
                   "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr().out
    assert rc == 2 and "near-duplicate: planted" in out and "threshold 0.2" in out and "FAIL" in out
    assert json.loads((tmp_path / "r.json").read_text())["near_duplicate"]["near_duplicates"] == ["planted"]


def test_check_reports_invalid_and_non_billable_records(tmp_path, small_sample):
    bad = _case("own-2", OWN[1])
    bad["claim"]["icd10"] = ["M23.2"]  # a category, not a billable code
    styled = {**_case("own-3", OWN[0] + " Addendum: none."), "style": "terse"}
    styled.pop("source")
    rows = [_case("own-1", OWN[0]), bad, {"id": "x", "note": "", "claim": {}, "source": "golden"}, styled]
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    r = golden.check(tmp_path, sample=small_sample)
    assert sorted((p["line"], p["field"]) for p in r["invalid"]) == [(3, "claim"), (4, "source"), (4, "style")]
    assert r["not_billable"] == [{"id": "own-2", "code": "M23.2"}]


# ---------------------------------------------------------------- the shipped golden set
needs_golden = pytest.mark.skipif(not HAVE_GOLDEN, reason=f"no golden set under {GOLDEN}")


@pytest.fixture(scope="module")
def report():
    return golden.check(GOLDEN)


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
@needs_golden
def test_golden_set_validates_with_the_repo_validator(report):
    assert report["invalid"] == []
    assert report["cases"] >= 80


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
@needs_golden
def test_golden_icd10_codes_are_billable_in_the_shipped_release(report):
    assert report["not_billable"] == []


@needs_golden
def test_golden_set_covers_every_service_and_the_department(report):
    assert report["services_missing"] == []
    assert set(report["distribution"]["services"]) <= set(SERVICES)
    assert report["department"]["cases"] >= golden.MIN_DEPARTMENT


@needs_golden
def test_no_golden_note_is_a_near_duplicate_of_a_synthetic_note(report):
    nd = report["near_duplicate"]
    assert nd["n_synthetic"] == neardup.SAMPLE and set(nd["synthetic_styles"]) == {"dictation", "terse"}
    assert nd["near_duplicates"] == [], nd["per_note"]
    assert nd["max_similarity"] < nd["threshold"]


@needs_golden
def test_golden_records_are_marked_and_unstyled():
    for f in sorted(GOLDEN.glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                assert rec.get("source") == "golden" and "style" not in rec, rec.get("id")


def test_synthetic_sample_spans_styles_and_services():
    s = neardup.synthetic_sample(400, seed=0)
    assert {c.style for c in s} == {"dictation", "terse"}
    assert len({c.service for c in s}) == 16
    assert [c.note for c in s] == [c.note for c in neardup.synthetic_sample(400, seed=0)]
