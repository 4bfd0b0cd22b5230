"""Every recipe parses into the training dataclasses; every ds_config loads and is consistent."""

import json

import pytest
import yaml

from tests.conftest import ROOT

RECIPES = sorted((ROOT / "train" / "recipes").glob("*.yaml"))
ACCEL = sorted((ROOT / "ds_configs").glob("*.yaml"))
DS_JSON = sorted((ROOT / "ds_configs").glob("*.json"))
STUDY = {"lora_r": 64, "lora_alpha": 16, "lora_dropout": 0.1, "load_in_4bit": True}


def test_all_present():
    names = {p.name for p in RECIPES}
    assert {"phi3-mini-128k_qlora_zero3-4gpu.yaml", "phi3-medium-128k_qlora_zero3-4gpu.yaml",
            "smollm2-135m_qlora_cpu.yaml", "tiny-phi3_qlora_zero3-cpu2.yaml"} <= names
    assert {"zero3-4gpu.yaml", "single-gpu.yaml", "zero3-cpu2.yaml", "zero3-multinode.yaml"} <= {p.name for p in ACCEL}
    assert {"zero3.json", "zero3-cpu.json"} <= {p.name for p in DS_JSON}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_parses(recipe):
    from train.run import parse

    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# ") and "-m train --config train/recipes/" + recipe.name in first
    launcher = first.split("--config_file ")[1].split()[0] if "--config_file" in first else None
    if launcher:
        assert (ROOT / launcher).is_file(), launcher
    raw = yaml.safe_load(recipe.read_text())
    if "phi3-m" in recipe.name:  # the study's settings, line by line
        for k, v in STUDY.items():
            assert raw[k] == v, k
        assert raw["lora_target_modules"] == ["o_proj", "qkv_proj", "gate_up_proj", "down_proj", "lm_head"]
        assert raw["bf16"] is True and raw["attn_implementation"] == "auto"
    if "zero3-cpu" in recipe.name:  # DeepSpeed on CPU ranks: fp32 (its bf16 path needs a GPU)
        assert raw["bf16"] is False and raw["use_cpu"] is True
    if recipe.name.endswith("_cpu.yaml"):  # one CPU process: bf16 autocast (AVX-512 BF16) is allowed
        assert raw["use_cpu"] is True
    # Every key must be a known argument. GPU recipes ask for bf16, which TrainingArguments
    # refuses on a CPU-only machine, so parse those here with the CPU switch.
    import torch

    extra = [] if torch.cuda.is_available() or raw.get("use_cpu") else ["--use_cpu", "true", "--bf16", "false"]
    margs, dargs, targs = parse(["--config", str(recipe), "--output_dir", "/tmp/opclaim-recipe-test", *extra])
    assert margs.lora_r == raw["lora_r"] and dargs.train_file == raw["train_file"]
    assert targs.report_to == ["tensorboard"]
    assert targs.save_total_limit and targs.save_steps


def test_cli_overrides_recipe():
    from train.run import parse

    margs, dargs, targs = parse(["--config", str(ROOT / "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml"),
                                 "--max_steps", "7", "--lora_r", "8", "--train_file", "x.jsonl"])
    assert (targs.max_steps, margs.lora_r, dargs.train_file) == (7, 8, "x.jsonl")


@pytest.mark.parametrize("path", ACCEL, ids=lambda p: p.name)
def test_accelerate_config_loads(path):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(path))
    raw = yaml.safe_load(path.read_text())
    assert path.read_text().startswith("# ")
    if raw["distributed_type"] == "DEEPSPEED":
        ds = ROOT / cfg.deepspeed_config["deepspeed_config_file"]
        assert ds.is_file()
        assert json.loads(ds.read_text())["zero_optimization"]["stage"] == 3
    if path.name == "zero3-multinode.yaml":
        assert "machine_rank" not in raw and "main_process_ip" not in raw  # filled from SLURM at launch
        assert "$SLURM_NODEID" in path.read_text()


@pytest.mark.parametrize("path", DS_JSON, ids=lambda p: p.name)
def test_deepspeed_json(path):
    from accelerate.utils import DeepSpeedPlugin

    cfg = json.loads(path.read_text())
    assert cfg["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    if "cpu" in path.name:
        assert "train_batch_size" not in cfg  # Trainer mis-fills it on CPU ranks
        assert cfg["bf16"]["enabled"] is False
    plugin = DeepSpeedPlugin(hf_ds_config=str(path))
    assert plugin.zero_stage == 3


def test_dash_flags_equal_trl_underscore_flags():
    """`opclaim train` takes --key-name like every other verb; TRL's --key_name still works."""
    from train.run import parse

    recipe = str(ROOT / "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml")
    dash = parse(["--config", recipe, "--max-steps", "7", "--lora-r", "8", "--train-file", "x.jsonl",
                  "--model-name-or-path", "m"])
    under = parse(["--config", recipe, "--max_steps", "7", "--lora_r", "8", "--train_file", "x.jsonl",
                   "--model_name_or_path", "m"])
    assert dash[0] == under[0] and dash[1] == under[1] and dash[2].max_steps == under[2].max_steps == 7


@pytest.mark.parametrize("problem", ["missing", "not-a-mapping", "unknown-key"])
def test_bad_recipe_is_input_error(tmp_path, problem):
    from opclaim.errors import InputError
    from train.run import parse

    recipe = tmp_path / "r.yaml"
    if problem == "not-a-mapping":
        recipe.write_text("- a\n- b\n")
    elif problem == "unknown-key":
        recipe.write_text("no_such_key: 1\n")
    with pytest.raises(InputError) as e:
        parse(["--config", str(recipe)])
    assert e.value.field == "--config" or e.value.file == recipe
