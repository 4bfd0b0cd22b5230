"""The retrieval-only kNN baseline: voting rules, parameter choice, predictions scored by eval."""

from __future__ import annotations

import json

import pytest

import opclaim  # noqa: F401
from opclaim.claim import Claim, parse_target
from opclaim.cli import main as cli_main
from rag.knn import KnnParams, score, vote


def C(icd, *providers):
    """Claim from compact args: providers as [(cpt, [mods]), ...] lists."""
    return Claim.from_dict({"icd10": list(icd), "providers": [
        {"name": f"Dr. P{i}", "role": "surgeon" if i == 0 else "assistant",
         "lines": [{"cpt": c, "modifiers": m, "description": f"proc {c}"} for c, m in lines]}
        for i, lines in enumerate(providers)]})


# ---------------------------------------------------------------- voting
def test_vote_weighted_threshold():
    a = C(["K80.20"], [("47562", [])])
    b = C(["K80.20", "R10.11"], [("47562", []), ("47563", [])])
    c = C(["K81.0"], [("47600", [])])
    # weights .5/.3/.2 after normalisation
    got = vote([(a, 0.5), (b, 0.3), (c, 0.2)], threshold=0.5)
    assert got.icd10 == ["K80.20"] and got.cpt_set() == {"47562"}
    got = vote([(a, 0.5), (b, 0.3), (c, 0.2)], threshold=0.3)
    assert got.icd10_set() == {"K80.20", "R10.11"} and got.cpt_set() == {"47562", "47563"}
    got = vote([(a, 0.5), (b, 0.3), (c, 0.2)], threshold=0.2)
    assert got.icd10[0] == "K80.20" and got.icd10_set() == {"K80.20", "R10.11", "K81.0"}
    # Nothing reaches the threshold: the top diagnosis and the surgeon's top code stay.
    got = vote([(a, 0.4), (c, 0.6)], threshold=0.9)
    assert got.icd10 == ["K81.0"] and got.cpt_set() == {"47600"}
    # Negative similarities do not vote against; all non-positive falls back to equal votes.
    got = vote([(a, 0.9), (c, -0.5)], threshold=0.6)
    assert got.icd10 == ["K80.20"]
    assert vote([], 0.5) == Claim()


def test_vote_assistant_and_modifiers():
    solo = C(["K40.90"], [("49505", [])])
    assisted = C(["K40.90"], [("49505", ["50"])], [("49505", ["80"])])
    got = vote([(assisted, 0.6), (solo, 0.4)], threshold=0.5)
    assert len(got.providers) == 2 and got.providers[0].role == "surgeon"
    assert got.modifier_set() == {"49505-50", "49505-80"}  # surgeon's 50 (0.6 of 0.6+0.4 >= half)
    got = vote([(solo, 0.6), (assisted, 0.4)], threshold=0.5)
    assert len(got.providers) == 1 and got.modifier_set() == set()  # assistant share 0.4 < 0.5
    assert got.providers[0].name == "Dr. P0" and got.providers[0].lines[0].description == "proc 49505"


def test_score_follows_design_definitions():
    gold = [C(["K80.20", "R10.11"], [("47562", [])]), C(["K35.80"], [("44970", ["80"])])]
    pred = [C(["K80.20"], [("47562", [])]), C([], [])]
    s = score(pred, gold)
    p, r = (1 + 0) / 2, (0.5 + 0) / 2  # empty vs non-empty scores 0
    assert s["icd10_f1"] == pytest.approx(2 * p * r / (p + r))
    assert s["cpt_f1"] == pytest.approx(2 * 0.5 * 0.5 / 1.0)
    # modifiers: case 1 both empty -> 1/1; case 2 empty vs {44970-80} -> 0/0
    assert s["modifier_f1"] == pytest.approx(0.5)


# ---------------------------------------------------------------- end to end on a synthetic corpus
def corpus(n, seed):
    try:  # the project's synthetic generator; the hand-made families until it lands
        from opclaim.synth import generate_cases
    except ImportError:
        from test_rag import make_cases

        return make_cases(n, seed)
    return generate_cases(n, seed, style="dictation", length="short")


@pytest.fixture(scope="module")
def split(tmp_path_factory):
    from opclaim.io import write_cases

    cases = corpus(50, seed=3)
    d = tmp_path_factory.mktemp("knn")
    parts = {"train": cases[:30], "val": cases[30:40], "test": cases[40:]}
    for name, cs in parts.items():
        write_cases(d / f"{name}.jsonl", cs)
    return d, parts


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_knn_cli_predictions_score_through_eval(split, capsys):
    d, parts = split
    assert cli_main(["rag", "build", "--train", str(d / "train.jsonl"), "--out", str(d / "idx"),
                     "--no-progress"]) == 0
    out = d / "knn" / "preds.jsonl"
    assert cli_main(["knn", "--index", str(d / "idx"), "--cases", str(d / "test.jsonl"), "--val",
                     str(d / "val.jsonl"), "--train", str(d / "train.jsonl"), "--out", str(out),
                     "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert all(c.note[:30] not in captured.out + captured.err for c in parts["test"])
    assert out.stat().st_mode & 0o077 == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [c.id for c in parts["test"]]
    assert all(r["config"] == "knn" and r["latency_s"] >= 0 for r in rows)
    preds = [parse_target(r["output"]) for r in rows]  # the study's target text, strictly parseable
    assert all(p.icd10 and p.cpt_set() for p in preds)
    side = json.loads(out.with_suffix(".knn.json").read_text())
    assert side["chosen_on"] == "validation" and side["validation_grid"]
    best = max(side["validation_grid"], key=lambda r: r["objective"])
    assert (side["k"], side["threshold"]) == (best["k"], best["threshold"])
    # Retrieval must beat predicting the training set's most common claim for every note.
    from collections import Counter

    gold = [c.claim for c in parts["test"]]
    common = Counter(json.dumps(c.claim.to_dict(), sort_keys=True) for c in parts["train"]).most_common(1)[0][0]
    trivial = score([Claim.from_dict(json.loads(common))] * len(gold), gold)
    s = score(preds, gold)
    assert s["cpt_f1"] > trivial["cpt_f1"] and s["objective"] > trivial["objective"]

    # ... and `opclaim eval` scores the file like any LLM configuration's.
    assert cli_main(["eval", "--predictions", str(out), "--gold", str(d / "test.jsonl"), "--out",
                     str(d / "eval"), "--bootstrap", "20", "--workers", "1"]) == 0
    m = json.loads((d / "eval" / "metrics.json").read_text())
    assert list(m["configs"]) == ["knn"]
    block = m["configs"]["knn"]
    assert block["n_cases"] == len(parts["test"]) and block["n_missing_predictions"] == 0
    for comp in ("icd10", "cpt", "modifier"):  # eval's numbers are the ones knn computed itself
        assert block[comp]["f1"] == pytest.approx(s[f"{comp}_f1"])


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_knn_given_params_and_bad_input(split, capsys):
    from rag import knn
    from rag.retrieve import Retriever

    d, parts = split
    if not (d / "idx").exists():
        assert cli_main(["rag", "build", "--train", str(d / "train.jsonl"), "--out", str(d / "idx"),
                         "--no-progress"]) == 0
    r = Retriever.load(d / "idx")
    # Predicting the training cases excludes each case's own record (else k=1 would copy it).
    rows = list(knn.predict(r, parts["train"][:6], KnnParams(1, 0.5), progress=False))
    hits = r.neighbours(r.embed([c.note for c in parts["train"][:6]]), 1, [c.id for c in parts["train"][:6]])
    for row, h, c in zip(rows, hits, parts["train"][:6], strict=True):
        assert r.ids[h[0][0]] != c.id
        assert parse_target(row["output"]).cpt_set() == r.claims[h[0][0]].cpt_set()
    assert cli_main(["knn", "--index", str(d / "idx"), "--cases", str(d / "test.jsonl"), "--k", "99",
                     "--out", str(d / "bad.jsonl"), "--no-progress"]) == 2
    assert "larger than the index" in capsys.readouterr().err
    assert not (d / "bad.jsonl").exists()  # no partial predictions file
    assert cli_main(["knn", "--index", str(d / "idx"), "--cases", str(d / "test.jsonl"), "--k", "3",
                     "--threshold", "1.5", "--out", str(d / "bad.jsonl"), "--no-progress"]) == 2
    bad = d / "bad_cases.jsonl"
    bad.write_text('{"id": "x1", "note": "hernia", "claim": {"icd10": []}}\n{"id": "x2", "note": ""}\n')
    assert cli_main(["knn", "--index", str(d / "idx"), "--cases", str(bad), "--k", "3",
                     "--out", str(d / "bad.jsonl"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad_cases.jsonl:2" in err and "note" in err
