"""Top-layer LoRA (`lora_top_layers`) and the frozen-layer cache (`cache_frozen_layers`), tiny Phi-3.

- The cached run trains the same adapter as the uncached one (losses and weights, tolerance below).
- The cache is refused for a model whose frozen layers changed, and for an example it was not built from.
- A top-layer adapter adapts only its layers (and lm_head), and merges: merged = unmerged outputs.
"""

import contextlib
import json
import subprocess
import sys

import pytest
import torch

from opclaim.errors import InputError
from tests.conftest import ROOT
from tests.test_rag import write_cases_file
from tests.train_helpers import make_cases

RECIPE = "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml"
# The cached activations are computed one example at a time, training sees two examples in one row:
# the same maths, GEMMs of another shape (fp32 rounding), hence a tolerance, not equality.
RTOL = 1e-4


@pytest.fixture(scope="module")
def layered_phi3(tmp_path_factory):
    """A tiny Phi-3 with 4 layers: 1 adapted, 3 frozen (cached)."""
    from opclaim.registry import build_tiny_phi3

    return build_tiny_phi3(tmp_path_factory.mktemp("phi3-4") / "model", seed=0, layers=4)


def _train(tmp, model, cli_env, *extra):
    data = tmp / "train.jsonl"
    if not data.exists():
        write_cases_file(data, make_cases(8, seed=5))
    out = tmp / ("cached" if "--cache_frozen_layers" in extra else "plain")
    cmd = [sys.executable, "-m", "train", "--config", RECIPE, "--model_name_or_path", str(model),
           "--train_file", str(data), "--output_dir", str(out), "--max_steps", "3", "--load_in_4bit", "false",
           "--lora_dropout", "0", "--padding_free", "true", "--per_device_train_batch_size", "2",
           "--save_steps", "100", "--eval_strategy", "no", "--val_fraction", "0.25", "--logging_steps", "1",
           "--lora_top_layers", "1", *extra]
    r = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _weights(adapter):
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


@pytest.mark.slow
def test_cached_run_trains_the_uncached_adapter(tmp_path, layered_phi3, cli_env):
    plain = _train(tmp_path, layered_phi3, cli_env)
    cached = _train(tmp_path, layered_phi3, cli_env, "--cache_frozen_layers", "true")
    rp, rc = (json.loads((d / "opclaim_run.json").read_text()) for d in (plain, cached))
    assert rc["config"]["model"]["cache_frozen_layers"] is True
    assert rp["final_train_loss"] == pytest.approx(rc["final_train_loss"], rel=RTOL)
    assert rp["final_val_loss"] == pytest.approx(rc["final_val_loss"], rel=RTOL)
    wp, wc = _weights(plain), _weights(cached)
    assert wp.keys() == wc.keys()
    moved = 0
    for k in wp:
        torch.testing.assert_close(wc[k], wp[k], rtol=RTOL, atol=1e-6)
        moved += "lora_B" in k and bool(wp[k].abs().sum() > 0)
    assert moved  # training changed the adapter, so the comparison above means something
    # only the top layer (3 of 0..3) and the head are adapted
    layers = {k.split(".layers.")[1].split(".")[0] for k in wp if ".layers." in k}
    assert layers == {"3"} and any("lm_head" in k for k in wp)


def _model_and_examples(model_dir, n=3):
    from opclaim.registry import load_model, load_tokenizer

    tok = load_tokenizer(model_dir)
    model = load_model(model_dir, dtype=torch.float32, attn_implementation="eager")
    ids = [tok(c.note, add_special_tokens=False)["input_ids"][:40] for c in make_cases(n, seed=2)]
    return model, ids


def test_cache_refuses_changed_frozen_layers_and_unseen_examples(layered_phi3):
    from train.frozen_cache import FrozenCache

    model, ids = _model_and_examples(layered_phi3)
    cache = FrozenCache.build(model, 3, ids[:2], contextlib.nullcontext)
    assert len(cache.store) == 2
    # a batch of the two cached examples back to back (padding-free) is served ...
    row = torch.tensor([ids[0] + ids[1]])
    pos = torch.tensor([list(range(len(ids[0]))) + list(range(len(ids[1])))])
    got = cache.rows(row, pos, None)
    assert got.shape[1] == len(ids[0]) + len(ids[1])
    # ... and equals the real layers' output of each example
    with torch.no_grad():
        out = model.model(input_ids=torch.tensor([ids[0]]), output_hidden_states=True)
    torch.testing.assert_close(got[:, : len(ids[0])], out.hidden_states[3], rtol=RTOL, atol=1e-6)
    # an example the cache was not built from is refused
    with pytest.raises(InputError, match="data changed"):
        cache.rows(torch.tensor([ids[2]]), torch.arange(len(ids[2]))[None], None)
    # another model (a frozen weight changed) is refused; an upper-layer change is not the cache's business
    with torch.no_grad():
        model.model.layers[3].mlp.down_proj.weight.add_(1.0)
    cache.attach(model)
    cache.detach(model)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.add_(1.0)
    with pytest.raises(InputError, match="frozen layers differ"):
        cache.attach(model)


def test_attached_cache_gives_the_real_forward_and_detaches(layered_phi3):
    from train.frozen_cache import FrozenCache

    model, ids = _model_and_examples(layered_phi3)
    row = torch.tensor([ids[0] + ids[1]])
    pos = torch.tensor([list(range(len(ids[0]))) + list(range(len(ids[1])))])
    model.config._attn_implementation = "sdpa"
    from train import attention

    model.set_attn_implementation(attention.register())
    with torch.no_grad():
        want = model(input_ids=row, position_ids=pos).logits
    cache = FrozenCache.build(model, 3, ids[:2], contextlib.nullcontext)
    cache.attach(model)
    assert type(model.model.layers[0]).__name__ == "_Skip"
    with torch.no_grad():
        got = model(input_ids=row, position_ids=pos).logits
    torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-5)
    cache.detach(model)
    assert type(model.model.layers[0]).__name__ != "_Skip"


@pytest.mark.parametrize("kw,field", [({"lora_top_layers": 0}, "cache_frozen_layers"),
                                      ({"load_in_4bit": True}, "cache_frozen_layers"),
                                      ({"padding_free": False}, "padding_free")])
def test_cache_settings_it_cannot_serve_are_refused(kw, field):
    from types import SimpleNamespace

    from train.frozen_cache import check_args

    margs = SimpleNamespace(cache_frozen_layers=True, lora_top_layers=2, load_in_4bit=False)
    targs = SimpleNamespace(deepspeed=None, padding_free=True)
    for k, v in kw.items():
        setattr(targs if k == "padding_free" else margs, k, v)
    with pytest.raises(InputError) as e:
        check_args(margs, targs, world_size=1)
    assert e.value.field == field
    with pytest.raises(InputError):
        check_args(SimpleNamespace(cache_frozen_layers=True, lora_top_layers=2, load_in_4bit=False),
                   SimpleNamespace(deepspeed=None, padding_free=True), world_size=2)


def test_top_layers_pattern_keeps_the_head_and_only_the_top_layers():
    import re

    from train.model import top_layers_pattern

    p = top_layers_pattern(["q_proj", "down_proj", "lm_head"], 30, 2)
    assert re.fullmatch(p, "base_model.model.model.layers.29.self_attn.q_proj")
    assert re.fullmatch(p, "model.layers.28.mlp.down_proj")
    assert re.fullmatch(p, "lm_head")
    assert not re.fullmatch(p, "model.layers.27.self_attn.q_proj")
    assert not re.fullmatch(p, "model.layers.128.self_attn.q_proj")
    assert not re.fullmatch(p, "model.layers.29.self_attn.k_proj")
    with pytest.raises(InputError):
        top_layers_pattern(["q_proj"], 30, 31)


def test_top_layer_adapter_merges_like_any_other(layered_phi3, tmp_path):
    """A LoRA on the top layer + lm_head only (the regex target PEFT stores): merged = unmerged."""
    from peft import LoraConfig, get_peft_model

    from opclaim.artifacts import TrainRun, save
    from opclaim.cli import main
    from opclaim.registry import load_model, load_tokenizer
    from tests.test_merge import _outputs
    from train.model import top_layers_pattern

    tok = load_tokenizer(layered_phi3)
    base_out = _outputs(load_model(layered_phi3), tok)
    torch.manual_seed(1)
    targets = top_layers_pattern(["qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"], 4, 1)
    peft = get_peft_model(load_model(layered_phi3), LoraConfig(r=8, lora_alpha=16, target_modules=targets,
                                                                init_lora_weights=False))
    adapted = {n.split(".lora_")[0] for n, _ in peft.named_parameters() if "lora_B" in n}
    assert adapted and all(".layers.3." in n or n.endswith("lm_head") for n in adapted)
    for name, p in peft.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)
    peft.save_pretrained(tmp_path / "adapter", safe_serialization=True)
    save(TrainRun(prompt_format="phi3", load_in_4bit=False), tmp_path / "adapter")
    unmerged = _outputs(peft, tok)
    assert unmerged != base_out
    assert main(["merge", "--model", str(layered_phi3), "--adapter", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "merged")]) == 0
    assert _outputs(load_model(tmp_path / "merged"), tok) == unmerged
