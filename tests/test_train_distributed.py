"""2-rank DeepSpeed ZeRO-3 QLoRA on the tiny Phi-3 through `accelerate launch` (real gloo ranks)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port
from tests.train_helpers import make_cases

pytestmark = [pytest.mark.distributed, pytest.mark.slow]


def test_zero3_qlora_two_ranks(tmp_path, tiny_phi3_dir, cli_env):
    from opclaim.io import write_cases

    write_cases(tmp_path / "train.jsonl", make_cases(20, seed=0))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "ds_configs/zero3-cpu2.yaml",
           "--main_process_port", str(free_port()), "-m", "train",
           "--config", "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml",
           "--model_name_or_path", str(tiny_phi3_dir), "--train_file", str(tmp_path / "train.jsonl"),
           "--output_dir", str(out)]
    res = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=480)
    assert res.returncode == 0, res.stderr[-3000:]

    run = json.loads((out / "opclaim_run.json").read_text())
    assert run["world_size"] == 2
    assert run["deepspeed"] and run["zero_stage"] == 3
    assert run["zero3_partitioned_params"] > 0  # base weights really carry ZeRO-3 partition state
    assert run["load_in_4bit"] and run["linear4bit_layers"] >= 2 * 4  # 2 layers x (qkv, o, gate_up, down)
    assert run["prompt_format"] == "phi3" and run["attn_implementation"] == "sdpa"
    assert run["data"]["train"]["cases"] == 16 and run["data"]["val"]["cases"] == 4

    history = json.loads((out / "checkpoint-20" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert len(losses) >= 8
    assert losses[-1] < 0.9 * losses[0], losses
    assert (out / "checkpoint-20" / "opclaim_complete.json").is_file()
    assert (out / "loss.png").stat().st_size > 1000
    assert list((out / "runs").rglob("events.out.tfevents.*"))

    # The adapter loads on one process onto the 4-bit base and is not the untrained init.
    import torch
    from bitsandbytes.nn import Linear4bit
    from peft import PeftModel
    from safetensors.torch import load_file

    from opclaim.registry import load_model
    from train.model import bnb_config

    saved = load_file(out / "adapter_model.safetensors")
    lora_b = {k: v for k, v in saved.items() if "lora_B" in k}
    assert lora_b and all(v.numel() > 0 for v in saved.values())
    assert any(k.startswith("base_model.model.lm_head.lora_") for k in saved)
    assert max(v.abs().max().item() for v in lora_b.values()) > 0  # B starts at zero: it was trained
    base = load_model(tiny_phi3_dir, dtype=torch.float32, quantization_config=bnb_config())
    model = PeftModel.from_pretrained(base, out)
    assert any(isinstance(m, Linear4bit) for m in model.modules())
    loaded = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    key = next(iter(lora_b))
    match = [v for k, v in loaded.items() if k.replace(".default", "") == key]
    assert match and torch.allclose(match[0].float(), lora_b[key].float())
