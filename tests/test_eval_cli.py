"""`opclaim extract` and `opclaim eval` end to end on the synthetic corpus."""

import csv
import json
import os
import random
import stat
import subprocess

import pytest

from opclaim.claim import Claim, render_target
from opclaim.cli import main as cli_main
from opclaim.io import write_cases, write_jsonl
from opclaim.synth import generate_cases
from tests.conftest import opclaim_exe

ISSUE_KEYS = {"icd10": {"precision", "recall", "f1", "full_match", "valid", "fabricated", "precision_ci",
                        "recall_ci", "n_generated"},
              "cpt": {"precision", "recall", "f1", "full_match", "valid", "fabricated", "precision_ci",
                      "recall_ci", "n_generated"},
              "modifier": {"precision", "recall", "f1", "full_match", "precision_ci", "recall_ci"},
              "structure": {"rougeL", "rougeLsum", "meteor"}}


def noisy_predictions(cases, config, seed, quality):
    """Deterministic imperfect outputs: drops, fabricated codes, lost modifiers, junk, gaps."""
    rng = random.Random(seed)
    rows = []
    for c in cases:
        r = rng.random()
        if r > quality + 0.1:
            continue  # no prediction for this case
        d = c.claim.to_dict()
        if r > quality:
            text = "I am unable to code this operative report."
        else:
            if rng.random() < 0.3 and d["icd10"]:
                d["icd10"] = d["icd10"][1:] + ["K80.2"]  # a non-billable category
            if rng.random() < 0.2:
                d["providers"][0]["lines"].append({"cpt": "99999", "modifiers": [], "description": "made up"})
            if rng.random() < 0.3:
                for p in d["providers"]:
                    for ln in p["lines"]:
                        ln["modifiers"] = []
            text = render_target(Claim.from_dict(d))
        rows.append({"id": c.id, "config": config, "output": text, "latency_s": round(0.2 + rng.random(), 3)})
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalcli")
    test = generate_cases(40, seed=1, style="dictation")
    test[0].note = "Patient said <script>alert('x')</script> & left.\n" + test[0].note
    terse = generate_cases(30, seed=2, style="terse", id_prefix="t")
    write_cases(d / "test.jsonl", test)
    write_cases(d / "terse.jsonl", terse)
    write_jsonl(d / "ft.jsonl", noisy_predictions(test, "finetuned", 1, 0.8))
    write_jsonl(d / "base.jsonl", noisy_predictions(test, "base", 2, 0.3))
    write_jsonl(d / "terse_ft.jsonl", noisy_predictions(terse, "finetuned", 3, 0.6))
    return d, test, terse


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_extract_cli_reads_stdin(tmp_path, cli_env):
    f = tmp_path / "out.txt"
    f.write_text("Here you go:\nICD-10-CM Diagnoses:\nk8020; R10.11\nCPT Codes with Modifiers:\n"
                 "CPT 1: 47562 | Modifiers: 80, 51 | Description: lap chole 49585\n")
    with f.open("rb") as fh:
        res = subprocess.run([opclaim_exe(), "extract"], stdin=fh, capture_output=True, env=cli_env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == {"icd10": ["K80.20", "R10.11"], "cpt": ["47562"],
                                      "modifiers": ["47562-80", "47562-51"]}
    assert cli_main(["extract", str(tmp_path / "missing.txt")]) == 2


def test_eval_single_file(data, capsys):
    d, test, _ = data
    out = d / "single"
    assert cli_main(["eval", "--predictions", str(d / "ft.jsonl"), "--gold", str(d / "test.jsonl"),
                     "--out", str(out), "--bootstrap", "200", "--seed", "1", "--gpu-hour-cost", "2"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    # issue layout at the top level (single configuration) and under configs
    for comp, keys in ISSUE_KEYS.items():
        assert keys <= set(m[comp]), comp
    assert {"n_cases", "n_missing_predictions", "by_service", "references", "conventions"} <= set(m)
    assert list(m["configs"]) == ["finetuned"] and m["configs"]["finetuned"]["icd10"] == m["icd10"]
    assert m["n_cases"] == 40 and m["n_missing_predictions"] > 0
    for comp in ("icd10", "cpt", "modifier"):
        b = m[comp]
        assert 0 <= b["precision"] <= 1 and 0 <= b["recall"] <= 1
        assert b["precision_ci"][0] <= b["precision"] <= b["precision_ci"][1]
    assert 0 < m["icd10"]["fabricated"] < 1 and m["cpt"]["fabricated"] > 0
    assert "synthetic catalog" in m["references"]["cpt"]["source"]
    assert m["latency"]["cost_per_1000_cases"] == pytest.approx(m["latency"]["mean_s"] * 1000 / 3600 * 2)
    # PHI: no note text in metrics.json; report and worklist owner-only
    text = (out / "metrics.json").read_text()
    for c in test:
        for chunk in (c.note[:40], c.note[len(c.note) // 2:][:40]):
            assert chunk not in text
    assert "<script>" not in text
    assert mode(out / "report.html") == 0o600 and mode(out / "cases.csv") == 0o600
    html = (out / "report.html").read_text()
    assert "&lt;script&gt;alert(" in html and "<script>alert(" not in html
    rows = list(csv.DictReader((out / "cases.csv").open()))
    assert len(rows) == 40
    scores = [float(r["mean_score"]) for r in rows]
    assert scores == sorted(scores)
    assert any("K80.2" in r["invalid_codes"].split() for r in rows)
    assert any(r["missing_prediction"] == "1" for r in rows)
    assert "finetuned: 40 cases" in capsys.readouterr().err


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_eval_several_configs_and_gold_sets(data):
    d, _, _ = data
    out = d / "compare"
    assert cli_main(["eval", "--predictions", f"base={d / 'base.jsonl'}", "--predictions",
                     f"finetuned={d / 'ft.jsonl'}", "--gold", str(d / "test.jsonl"), "--out", str(out),
                     "--bootstrap", "50", "--title", "Base vs fine-tuned"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["configs"]) == ["base", "finetuned"] and "icd10" not in m
    assert m["configs"]["finetuned"]["icd10"]["f1"] > m["configs"]["base"]["icd10"]["f1"]
    html = (out / "report.html").read_text()
    assert html.count("<th>base</th>") >= 1 and "Base vs fine-tuned" in html

    out = d / "generalisation"
    assert cli_main(["eval", "--gold", f"test={d / 'test.jsonl'}", "--gold", f"terse={d / 'terse.jsonl'}",
                     "--predictions", f"test/finetuned={d / 'ft.jsonl'}",
                     "--predictions", f"terse/finetuned={d / 'terse_ft.jsonl'}",
                     "--out", str(out), "--bootstrap", "50"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert list(m["configs"]) == ["test/finetuned", "terse/finetuned"]
    assert m["configs"]["terse/finetuned"]["gold"] == "terse" and m["configs"]["terse/finetuned"]["n_cases"] == 30
    assert m["gold_sets"] == {"test": {"file": "test.jsonl", "n_cases": 40, "role": "same-style"},
                              "terse": {"file": "terse.jsonl", "n_cases": 30, "role": "cross-style"}}
    # the headline comes from the cross-style set (no golden set given) and shows the gap
    h = m["headline"]
    assert (h["source"], h["role"], h["config"], h["n_cases"]) == ("terse", "cross-style", "finetuned", 30)
    assert h["f1"]["icd10"]["value"] == m["configs"]["terse/finetuned"]["icd10"]["f1"]
    (gap,) = h["gaps"]
    assert set(gap["sets"]) == {"same-style", "cross-style"}
    step = gap["steps"][0]
    assert (step["from"], step["to"]) == ("same-style", "cross-style")
    assert step["icd10"] == pytest.approx(m["configs"]["terse/finetuned"]["icd10"]["f1"]
                                          - m["configs"]["test/finetuned"]["icd10"]["f1"])
    html = (out / "report.html").read_text()
    assert "Headline numbers come from the <b>cross-style test</b> set" in html and 'id="gaps-table"' in html
    rows = list(csv.DictReader((out / "cases.csv").open()))
    assert {r["gold"] for r in rows} == {"test", "terse"} and len(rows) == 70


@pytest.mark.parametrize("argv_tail,words", [
    (["--predictions", "nosuchgold/ft={ft}"], "unknown gold set"),
    (["--predictions", "{ft}", "--predictions", "{ft}"], "given twice"),
    (["--predictions", "{terse_ft}"], "not in the gold file"),
    (["--predictions", "{ft}", "--bootstrap", "-1"], "--bootstrap"),
])
def test_eval_bad_usage_exit_2(data, capsys, argv_tail, words):
    d, _, _ = data
    tail = [a.format(ft=d / "ft.jsonl", terse_ft=d / "terse_ft.jsonl") for a in argv_tail]
    out = d / "bad"
    assert cli_main(["eval", "--gold", str(d / "test.jsonl"), "--out", str(out), *tail]) == 2
    assert words in capsys.readouterr().err
    assert not (out / "metrics.json").exists()


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_eval_malformed_line_exit_2_names_file_and_line(data, tmp_path, cli_env):
    d, test, _ = data
    lines = (d / "ft.jsonl").read_bytes().splitlines(keepends=True)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(lines[0] + b'{"id": "c000001", "output": "' + test[1].note[:30].encode() + b'\n' + lines[1])
    res = subprocess.run([opclaim_exe(), "eval", "--predictions", str(bad), "--gold", str(d / "test.jsonl"),
                          "--out", str(tmp_path / "o")], capture_output=True, text=True, env=cli_env, timeout=300)
    assert res.returncode == 2
    assert f"{bad}:2" in res.stderr and "malformed JSON" in res.stderr
    assert test[1].note[:30] not in res.stderr
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_help_lists_examples():
    from opclaim.cli import build_parser

    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices
    assert "opclaim eval --predictions" in sub["eval"].format_help()
    assert "opclaim extract < output.txt" in sub["extract"].format_help()
