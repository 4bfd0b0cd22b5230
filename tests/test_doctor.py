"""`opclaim doctor` on CPU: one real run of the tiny Phi-3 recipe (ZeRO-3 on 2 CPU ranks through
accelerate launch, a few steps, merge, batched and constrained generation) serves the report
assertions; the bad-input cases stop before any model work."""

import json
import subprocess

import pytest

from tests.conftest import ROOT, opclaim_exe
from tests.train_helpers import make_cases

RECIPE = "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml"


def _doctor(*args, env, cwd=ROOT):
    return subprocess.run([opclaim_exe(), "doctor", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=900)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_phi3_dir):
    """One doctor run with a budget the tiny recipe cannot fit (0.01 GiB): everything is measured,
    and the fit check must say no."""
    from opclaim.io import write_cases
    from tests.conftest import make_cli_env

    tmp = tmp_path_factory.mktemp("doctor")
    write_cases(tmp / "train.jsonl", make_cases(8, seed=0))
    res = _doctor("--recipe", RECIPE, "--model", str(tiny_phi3_dir), "--train-file", str(tmp / "train.jsonl"),
                  "--gpu-gb", "0.01", "--json", str(tmp / "report.json"), "--scratch", str(tmp / "scratch"),
                  env=make_cli_env())
    report = json.loads((tmp / "report.json").read_text())
    return res, report, tmp


def _check(report, section, name):
    return next(c for c in report["checks"] if c["section"] == section and c["name"] == name)


@pytest.mark.slow
@pytest.mark.distributed
def test_tiny_recipe_report_fields(tiny_run):
    res, report, _ = tiny_run
    assert report["schema"] == "opclaim.doctor/1"
    env = report["environment"]
    for pkg in ("transformers", "peft", "trl", "accelerate", "deepspeed", "bitsandbytes", "xgrammar", "faiss"):
        assert env["packages"][pkg], pkg
    assert env["bnb_kernels_ok"] is True and env["gpus"] == []
    assert all(c["status"] in ("ok", "warning", "error") for c in report["checks"])
    assert _check(report, "environment", "torch")["status"] == "ok"
    shape = report["shape"]
    assert shape["model_type"] == "phi3" and shape["attention"] == "sdpa"
    assert shape["lora"]["targets"] == {"o_proj": 2, "qkv_proj": 2, "gate_up_proj": 2, "down_proj": 2, "lm_head": 1}
    assert shape["quantisation"].startswith("nf4")
    ranks = report["steps"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(len(r["step_s"]) == 3 for r in ranks)
    assert _check(report, "steps", "optimizer steps")["status"] == "ok"
    assert "tokens/s" in _check(report, "steps", "optimizer steps")["detail"]
    assert report["projection"]["steps"] == 20 and report["projection"]["wall_h"] > 0  # the recipe's max_steps
    for kind in ("plain", "constrained"):
        hf = report["inference"]["hf"][kind]
        assert hf["batched_equals_single"] and hf["prompts"] == 3
    assert "vllm" not in report["inference"]
    # everything but the stated budget is fine; nothing else is an error
    errors = [(c["section"], c["name"]) for c in report["checks"] if c["status"] == "error"]
    assert errors == [("fit", "estimate")], errors


@pytest.mark.slow
@pytest.mark.distributed
def test_memory_estimate_within_documented_tolerance(tiny_run):
    _, report, _ = tiny_run
    mem = report["memory"]
    assert mem["tolerance"] == 0.25
    assert abs(mem["relative_error"]) <= 0.25, mem
    measured = max(mem["measured_peak_bytes_per_rank"])
    assert abs(mem["estimate_measured_bytes"] - measured) <= 0.25 * measured
    assert _check(report, "steps", "memory")["status"] == "ok"


@pytest.mark.slow
@pytest.mark.distributed
def test_stated_budget_too_small_is_not_fitting(tiny_run):
    res, report, _ = tiny_run
    assert res.returncode == 2, res.stderr[-2000:]
    assert "would NOT fit" in res.stdout and "exit 2" in res.stdout
    assert report["memory"]["fits"] is False and report["exit"] == 2
    knobs = {k["knob"] for k in report["memory"]["knobs"]}
    assert {"batch", "gradient checkpointing", "max_length"} <= knobs
    est = report["memory"]["estimate_bytes"] / 2**30
    assert all(k["estimate_gib"] < est for k in report["memory"]["knobs"])  # each knob lowers it


@pytest.mark.slow
@pytest.mark.distributed
def test_writes_only_json_and_scratch(tiny_run):
    _, _, tmp = tiny_run
    assert sorted(p.name for p in tmp.iterdir()) == ["report.json", "scratch", "train.jsonl"]
    assert (tmp / "scratch" / "cache").is_dir()  # library caches were sent there


def test_environment_only_exit_0(cli_env, tmp_path):
    res = _doctor("--json", str(tmp_path / "r.json"), env=cli_env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert {c["name"] for c in report["checks"]} >= {"python", "torch", "bitsandbytes", "flash-attn", "vllm",
                                                      "offline", "nccl"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_bad_input_exit_2_names_file_and_field(cli_env, tmp_path, tiny_phi3_dir):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("lora_r: [1,\n")
    bad_accel = tmp_path / "accel.yaml"
    bad_accel.write_text("distributed_type: DEEPSPEED\nnum_processes: two\n")
    no_config = tmp_path / "empty-model"
    no_config.mkdir()
    recipe = str(ROOT / RECIPE)
    cases = [
        (["--recipe", str(bad_yaml)], "bad.yaml"),
        (["--recipe", recipe, "--model", str(tiny_phi3_dir), "--accelerate-config", str(bad_accel)], "num_processes"),
        (["--recipe", recipe, "--model", str(no_config)], "config.json"),
        (["--recipe", recipe, "--model", str(tiny_phi3_dir), "--train-file", str(tmp_path / "nope.jsonl")],
         "--train-file"),
        (["--recipe", recipe], "model_name_or_path"),  # the tiny recipe names no model
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for args, named in cases:
        res = _doctor(*args, env=cli_env, cwd=tmp_path)
        assert res.returncode == 2, (args, res.stdout[-500:], res.stderr[-500:])
        assert named in res.stderr, (named, res.stderr)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_cuda_build_without_gpus_is_an_error():
    from opclaim.environment import judge

    facts = {"python": "3.11", "python_ok": True, "torch": "2.5.0+cu124", "cuda_build": "12.4", "rocm_build": None,
             "gpus": [], "nccl": None, "packages": {"transformers": "5", "peft": "1", "trl": "1", "accelerate": "1",
                                                     "deepspeed": "1", "bitsandbytes": "1", "flash-attn": None,
                                                     "xgrammar": "1", "vllm": None, "faiss": "1"},
             "env": {}, "bnb_kernels_ok": False, "bnb_kernels": "no GPU"}
    checks = {c.name: c for c in judge(facts, {"gpu": True, "load_in_4bit": True, "deepspeed": True})}
    assert checks["torch"].status == "error" and "no GPU is visible" in checks["torch"].detail
    assert checks["torch"].fix and checks["bitsandbytes"].status == "error"
    assert checks["offline"].status == "warning"


@pytest.mark.gpu
def test_gpu_recipe_on_a_gpu(cli_env, tmp_path, tiny_phi3_dir):
    """On a GPU machine: the study's single-GPU path (bf16, CUDA bitsandbytes kernels, peak from the
    CUDA allocator) on the tiny model; GPU lines present; exit 0 or 2 with the reason named."""
    from opclaim.io import write_cases

    write_cases(tmp_path / "train.jsonl", make_cases(8, seed=0))
    res = _doctor("--recipe", RECIPE, "--model", str(tiny_phi3_dir), "--train-file", str(tmp_path / "train.jsonl"),
                  "--accelerate-config", "ds_configs/single-gpu.yaml", "--json", str(tmp_path / "r.json"),
                  "--scratch", str(tmp_path / "s"), env=cli_env)
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["environment"]["gpus"] and report["environment"]["bnb_kernels_ok"]
    assert any(c["name"].startswith("gpu ") for c in report["checks"])
    assert res.returncode in (0, 2), res.stderr[-2000:]
