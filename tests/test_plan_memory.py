"""`opclaim plan-memory`: the estimate's behaviour, the CLI contract, and agreement (within 25%)
with peak tensor memory measured on CPU during real LoRA training steps."""

import json
import subprocess

import pytest

from tests.conftest import opclaim_exe


def _plan(*args, env):
    res = subprocess.run([opclaim_exe(), "plan-memory", *args, "--json"], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_study_setup_fits_and_limits(cli_env):
    p = _plan("--model", "phi3-mini", "--gpus", "4", "--gpu-gb", "24", "--seq-len", "4096", "--grad-ckpt", env=cli_env)
    assert p["fits"] and p["max_seq_len"] > 4096
    assert p["lora_param_count"] > 50e6  # r=64 on every linear + lm_head of a 3.8B model
    huge = _plan("--model", "phi3-mini", "--gpus", "4", "--gpu-gb", "24", "--seq-len", str(p["max_seq_len"] + 1),
                 "--grad-ckpt", env=cli_env)
    assert not huge["fits"] and huge["max_seq_len"] == p["max_seq_len"]


def test_estimate_moves_the_right_way():
    from train.memory import PRESETS, estimate, plan

    s = PRESETS["phi3-medium"]
    base = estimate(s, seq_len=2048, gpus=4, zero=3)["total"]
    assert estimate(s, seq_len=2048, gpus=1, zero=3)["total"] > base  # fewer shards
    assert estimate(s, seq_len=2048, gpus=4, zero=0)["total"] > base  # no sharding
    assert estimate(s, seq_len=2048, gpus=4, zero=3, grad_ckpt=True)["total"] < base
    assert estimate(s, seq_len=4096, gpus=4, zero=3)["total"] > base
    assert estimate(s, seq_len=2048, gpus=4, zero=3, load_in_4bit=False)["parts"]["weights"] > \
        3 * estimate(s, seq_len=2048, gpus=4, zero=3)["parts"]["weights"]
    a = plan("phi3-medium", gpus=4, gpu_gb=24, seq_len=1024)["max_seq_len"]
    b = plan("phi3-medium", gpus=4, gpu_gb=24, seq_len=1024, grad_ckpt=True)["max_seq_len"]
    assert b > a > 0


def test_bad_input_exit_2(cli_env, tmp_path):
    for args in (["--model", "nope", "--seq-len", "10"], ["--model", "phi3-mini", "--seq-len", "0"],
                 ["--model", str(tmp_path), "--seq-len", "10"]):
        res = subprocess.run([opclaim_exe(), "plan-memory", *args], capture_output=True, text=True, env=cli_env)
        assert res.returncode == 2, (args, res.stderr)
        assert "--model" in res.stderr or "--seq-len" in res.stderr or "config.json" in res.stderr


@pytest.fixture(scope="module")
def smollm2_shaped(tmp_path_factory):
    """SmolLM2-135M's exact layer shapes and vocabulary (Llama family, tied embeddings), 4 of its
    30 layers, random weights: the memory formula depends on shapes only, and this needs no download."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("smollm2-shaped")
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=4,
                      num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True,
                      max_position_embeddings=2048)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("which,seq,batch", [("tiny", 256, 2), ("smollm2", 128, 2)])
def test_estimate_within_25pct_of_measured(which, seq, batch, tiny_phi3_dir, smollm2_shaped):
    from train.memory import estimate, measure_peak, shape_from_dir

    model_dir = tiny_phi3_dir if which == "tiny" else smollm2_shaped
    measured = measure_peak(model_dir, seq_len=seq, batch=batch, steps=2, load_in_4bit=True)
    est = estimate(shape_from_dir(model_dir), seq_len=seq, batch=batch, gpus=1, zero=0, device="cpu")["total"]
    assert abs(est - measured) <= 0.25 * measured, f"estimate {est / 2**20:.1f} MiB vs measured {measured / 2**20:.1f} MiB"
