"""The adapter half of bundle verification, seen from the CLI: `opclaim infer` and `opclaim merge`
with a model from one bundle and an adapter that is tampered, from a bundle signed by another
key, or a plain folder. The model part is always a good bundle, so only the adapter's own check
can refuse these (verifying the model's bundle does not look at another bundle's files)."""

import json
import shutil
import subprocess

import pytest

from opclaim import bundle
from opclaim.io import write_cases
from tests.conftest import opclaim_exe
from tests.test_infer import make_cases


@pytest.fixture(scope="module")
def adapter(tiny_phi3_dir, tmp_path_factory):
    """A real (untrained) LoRA adapter on the tiny Phi-3, saved as training saves it."""
    from peft import LoraConfig, get_peft_model

    from opclaim.registry import load_model

    out = tmp_path_factory.mktemp("adapter")
    model = get_peft_model(load_model(tiny_phi3_dir), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    model.save_pretrained(out)
    (out / "opclaim_run.json").write_text(json.dumps({"schema": "opclaim.train-run/3", "prompt_format": "phi3", "load_in_4bit": False}))
    return out


@pytest.fixture(scope="module")
def world(tiny_phi3_dir, adapter, tmp_path_factory):
    """Bundle A (key A); bundle B (same model and adapter, key B); A's copy with a flipped adapter byte."""
    tmp = tmp_path_factory.mktemp("bundles")
    key_a, key_b = bundle.keygen(tmp / "ka"), bundle.keygen(tmp / "kb")
    a = bundle.create(tiny_phi3_dir, key_a[0], tmp / "A", adapter=adapter)
    b = bundle.create(tiny_phi3_dir, key_b[0], tmp / "B", adapter=adapter)
    tampered = tmp / "A-tampered"
    shutil.copytree(a, tampered)
    weights = tampered / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    write_cases(tmp / "cases.jsonl", make_cases(1))
    return {"A": a, "B": b, "tampered": tampered, "pub_a": key_a[1], "plain": adapter, "tmp": tmp}


def _opclaim(*args, env):
    env = {k: v for k, v in env.items() if k != "OPCLAIM_BUNDLE_KEY"}
    return subprocess.run([opclaim_exe(), *args], capture_output=True, text=True, env=env, timeout=600)


def _infer(world, adapter_dir, out, env):
    return _opclaim("infer", "--model", str(world["A"] / "model"), "--adapter", str(adapter_dir), "--mode",
                    "finetuned", "--cases", str(world["tmp"] / "cases.jsonl"), "--out", str(out),
                    "--max-new-tokens", "4", "--no-progress", "--bundle-key", str(world["pub_a"]), env=env)


@pytest.mark.parametrize("which,reason", [
    ("tampered", "changed file adapter/adapter_model.safetensors"),
    ("B", "signature does not verify"),
    ("plain", "not a signed bundle"),
])
@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_infer_refuses_an_adapter_that_is_not_verified_by_the_key(world, which, reason, tmp_path, cli_env):
    adapter_dir = world[which] / "adapter" if which != "plain" else world[which]
    out = tmp_path / "preds.jsonl"
    r = _infer(world, adapter_dir, out, cli_env)
    assert r.returncode == 2, r.stderr
    assert reason in r.stderr
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing loaded, nothing written


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_merge_verifies_a_bundle_and_merges_it(world, tmp_path, cli_env):
    """`opclaim merge` straight from a bundle: refused without a key or with a tampered adapter;
    with the key it writes a plain model folder that `opclaim infer` then runs without a key."""
    a, pub = world["A"], str(world["pub_a"])
    merged = tmp_path / "merged"
    r = _opclaim("merge", "--model", str(a / "model"), "--adapter", str(a / "adapter"), "--out", str(merged),
                 env=cli_env)
    assert r.returncode == 2 and "--bundle-key" in r.stderr and not merged.exists(), r.stderr
    r = _opclaim("merge", "--model", str(a / "model"), "--adapter", str(world["tampered"] / "adapter"),
                 "--out", str(merged), "--bundle-key", pub, env=cli_env)
    assert r.returncode == 2 and "changed file adapter/" in r.stderr and not merged.exists(), r.stderr
    r = _opclaim("merge", "--model", str(a / "model"), "--adapter", str(a / "adapter"), "--out", str(merged),
                 "--bundle-key", pub, env=cli_env)
    assert r.returncode == 0, r.stderr
    assert (merged / "config.json").is_file() and list(merged.glob("*.safetensors"))
    assert bundle.bundle_root(merged) is None  # a plain folder now: loads without a key
    out = tmp_path / "preds.jsonl"
    r = _opclaim("infer", "--model", str(merged), "--mode", "finetuned", "--cases",
                 str(world["tmp"] / "cases.jsonl"), "--out", str(out), "--max-new-tokens", "4", "--no-progress",
                 env=cli_env)
    assert r.returncode == 0, r.stderr
    assert len(out.read_text().splitlines()) == 1
    assert bundle.verify(a, world["pub_a"])  # using the bundle changed nothing in it
