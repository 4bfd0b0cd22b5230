"""`make demo` on the tiny Phi-3 with tiny sizes: a real run of every stage, then a re-run that
skips everything, then a config edit (train_overrides) that re-runs exactly the stages that
depend on it, and says why.

Kept cheap (it is the slowest test): one case per test set where one will do, and no
finetuned+constrained configuration (`infer.constrain: false`; constrained decoding has its own
tests, tests/test_constrain*.py): the constrained runs were the dearest stages."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def _config(tmp_path: Path, golden: Path, max_steps: int) -> Path:
    cfg = {"out": str(tmp_path / "demo"), "seed": 0,
           "data": {"n": 24, "style": "terse", "length": "short", "services": ["Ophthalmology"],
                    "val_eval": 1, "test_eval": 2, "cross_style": "dictation", "cross_eval": 2},
           "golden": {"files": [str(golden)]},
           "model": "tiny-phi3", "recipe": "train/recipes/smollm2-135m_qlora_cpu.yaml",
           "train_overrides": {"max_steps": max_steps, "bf16": "false", "eval_strategy": "no",
                               "save_strategy": "no", "logging_steps": 1, "prompt_mode": "mixed",
                               "max_length": 2048},
           # base on one case of each set (sets "-1"); one mixed adapter serves both tuned rows;
           # rag-tuned's penalty scope is chosen on val
           "configs": {"base": {"weights": "base", "mode": "base", "cases": 1},
                       "finetuned": {"weights": "tuned", "mode": "finetuned"},
                       "rag-tuned": {"weights": "tuned", "mode": "rag", "scope": "val"},
                       "rag-tuned+constrained": {"weights": "tuned", "mode": "rag", "scope": "val",
                                                 "constrain": True}},
           "scope_choice": {"config": "rag-tuned", "scopes": ["prompt", "generated"]},
           "routing": {"config": "rag-tuned", "target_precision": 0.5},
           "infer": {"batch_size": 4, "max_new_tokens": 8, "repetition_penalty": 1.1, "constrain": False},
           "eval": {"bootstrap": 0}, "title": "tiny demo"}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _demo(config: Path, env) -> tuple[list[str], str]:
    r = subprocess.run([sys.executable, "-m", "opclaim.demo", "--config", str(config)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=1500)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    timings = json.loads((Path(yaml.safe_load(config.read_text())["out"]) / "timings.json").read_text())
    return timings["ran"], r.stdout


@pytest.fixture
def golden_file(tmp_path):
    from opclaim.synth import generate_cases

    cases = (generate_cases(2, seed=7, style="dictation", length="short", id_prefix="g-oph-",
                            services=["Ophthalmology"])
             + generate_cases(1, seed=8, style="dictation", length="short", id_prefix="g-oth-",
                              services=["Urology"]))
    path = tmp_path / "golden.jsonl"
    path.write_text("".join(json.dumps({**c.to_dict(), "source": "golden"}) + "\n" for c in cases))
    return path


def test_demo_reruns_what_a_config_edit_changed(tmp_path, golden_file, cli_env):
    config = _config(tmp_path, golden_file, max_steps=2)
    ran, out = _demo(config, cli_env)
    sets = ("test", "dictation", "golden")
    tuned = [f"infer/{s}/{c}" for s in sets for c in ("finetuned", "rag-tuned")]
    base = [f"infer/{s}-1/base" for s in sets]
    val = {"infer/val/rag-tuned@prompt", "infer/val/rag-tuned@generated", "scope", "calibrate"}
    everything = {"data", "golden", "model", "rag", "train", "merge", *val, *tuned, *base,
                  *(f"knn/{s}" for s in sets), *(f"knn/{s}-1" for s in sets), "eval", "card"}
    assert set(ran) == everything  # no constrained rows: infer.constrain is false
    assert "golden (hand-written)" in out  # the third test set is in the headline table
    assert "repetition scope for rag-tuned:" in out
    run = json.loads((tmp_path / "demo" / "adapter" / "opclaim_run.json").read_text())
    assert run["prompt_mode"] == "mixed" and run["rag"]["k"] == 2
    metrics = json.loads((tmp_path / "demo" / "report" / "metrics.json").read_text())
    routed = metrics["configs"]["test/rag-tuned"]
    assert "routing" in routed or "routing_skipped" in routed  # calibrated on val, routed on test
    assert "routing" not in metrics["configs"]["test/finetuned"]  # only the configuration asked for
    table = (tmp_path / "demo" / "table.md").read_text()
    assert "base on the first 1 cases" in table and "chosen on val" in table
    for s in ("test", "dictation"):
        assert len((tmp_path / "demo" / "preds" / f"{s}-1" / "base.jsonl").read_text().splitlines()) == 1
        assert len((tmp_path / "demo" / "preds" / s / "rag-tuned.jsonl").read_text().splitlines()) == 2
    golden = (tmp_path / "demo" / "golden" / "golden.jsonl").read_text().splitlines()
    assert len(golden) == 2  # only the demo's department

    ran, out = _demo(config, cli_env)
    assert ran == [] and "up to date" in out

    _config(tmp_path, golden_file, max_steps=3)  # the edit demo.yaml suggests
    ran, out = _demo(config, cli_env)
    assert set(ran) == {"train", "merge", *val, *tuned, "eval", "card"}
    assert "fine-tune (LoRA/QLoRA, CPU recipe): running (changed: train_overrides)" in out
    assert "merge adapter: running (changed: train)" in out
    assert "infer base on test-1: up to date" in out
    run = json.loads((tmp_path / "demo" / "adapter" / "opclaim_run.json").read_text())
    assert run["global_step"] == 3  # the new adapter, not the old one


def test_golden_set_is_skipped_with_a_message_when_absent(tmp_path, capsys):
    from opclaim.demo import Demo

    demo = Demo({"out": str(tmp_path / "d"), "data": {"services": ["Ophthalmology"]},
                 "golden": {"files": [str(tmp_path / "nope.jsonl")]}})
    demo.golden()
    assert "golden test set: skipped" in capsys.readouterr().out and not demo.has_golden
