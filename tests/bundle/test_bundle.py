"""Signed bundles with OpenSSF model-signing: tampering of any kind is refused, offline."""

import json
import shutil
import subprocess

import pytest

from opclaim import bundle
from opclaim.errors import InputError
from tests.conftest import opclaim_exe


@pytest.fixture(scope="module")
def good_bundle(tiny_phi3_dir, keys, tmp_path_factory):
    return bundle.create(tiny_phi3_dir, keys[0], tmp_path_factory.mktemp("b") / "bundle")


@pytest.fixture
def copy_of(good_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(good_bundle, dst)
    return dst


def test_keygen_private_key_is_owner_only_and_never_overwritten(keys):
    priv, pub = keys
    assert priv.stat().st_mode & 0o777 == 0o600
    assert b"BEGIN PUBLIC KEY" in pub.read_bytes()
    with pytest.raises(InputError, match="refusing to overwrite"):
        bundle.keygen(priv.parent)


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_good_bundle_verifies_and_carries_only_needed_files(good_bundle, keys, tiny_phi3_dir):
    manifest = bundle.verify(good_bundle, keys[1])
    names = {p.split("/", 1)[1] for p in manifest["files"]}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    for rel, meta in manifest["files"].items():
        assert (good_bundle / rel).stat().st_size == meta["size"]
        assert len(meta["sha256"]) == 64
    assert (good_bundle / bundle.SIGNATURE).is_file()


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_flipped_byte_is_refused(copy_of, keys):
    w = copy_of / "model" / "model.safetensors"
    data = bytearray(w.read_bytes())
    data[len(data) // 2] ^= 0x01
    w.write_bytes(bytes(data))
    with pytest.raises(bundle.BundleError, match="changed file model/model.safetensors"):
        bundle.verify(copy_of, keys[1])


def test_added_file_is_refused_even_a_git_file(copy_of, keys):
    (copy_of / "model" / ".gitattributes").write_text("* -text\n")
    with pytest.raises(bundle.BundleError, match="extra file model/.gitattributes"):
        bundle.verify(copy_of, keys[1])


def test_removed_file_is_refused(copy_of, keys):
    (copy_of / "model" / "tokenizer.json").unlink()
    with pytest.raises(bundle.BundleError, match="missing file model/tokenizer.json"):
        bundle.verify(copy_of, keys[1])


def test_forged_manifest_fails_the_signature(copy_of, keys):
    """An attacker who also rewrites the manifest still cannot forge the signature."""
    cfg = copy_of / "model" / "config.json"
    cfg.write_text(cfg.read_text().replace('"hidden_act"', '"hidden_act" ', 1))
    m = json.loads((copy_of / bundle.MANIFEST).read_text())
    m["files"]["model/config.json"] = {"sha256": bundle._sha256(cfg), "size": cfg.stat().st_size}
    (copy_of / bundle.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(bundle.BundleError, match="signature does not verify"):
        bundle.verify(copy_of, keys[1])


def test_wrong_public_key_is_refused(good_bundle, tmp_path):
    _, other_pub = bundle.keygen(tmp_path / "other")
    with pytest.raises(bundle.BundleError, match="signature does not verify"):
        bundle.verify(good_bundle, other_pub)


def test_symlink_in_bundle_is_refused(copy_of, keys):
    (copy_of / "model" / "tokenizer.json").unlink()
    (copy_of / "model" / "tokenizer.json").symlink_to("/etc/hostname")
    with pytest.raises(bundle.BundleError, match="symlink"):
        bundle.verify(copy_of, keys[1])


@pytest.mark.parametrize("name", ["pytorch_model.bin", "extra.pt", "state.pkl"])
def test_pickle_in_source_is_refused_at_create(tiny_phi3_dir, keys, tmp_path, name):
    src = tmp_path / "src"
    shutil.copytree(tiny_phi3_dir, src)
    (src / name).write_bytes(b"\x80\x04N.")  # a real (harmless) pickle
    out = tmp_path / "bundle"
    with pytest.raises(bundle.BundleError, match="pickled file refused"):
        bundle.create(src, keys[0], out)
    assert not out.exists() and not list(tmp_path.glob(".bundle.*"))  # nothing half-written left


def test_symlink_and_remote_code_refused_at_create(tiny_phi3_dir, keys, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(tiny_phi3_dir, src)
    (src / "tokenizer.json").unlink()
    (src / "tokenizer.json").symlink_to(tiny_phi3_dir / "tokenizer.json")
    with pytest.raises(bundle.BundleError, match="symlink"):
        bundle.create(src, keys[0], tmp_path / "b1")
    (src / "tokenizer.json").unlink()
    shutil.copy(tiny_phi3_dir / "tokenizer.json", src / "tokenizer.json")
    tc = json.loads((src / "tokenizer_config.json").read_text())
    tc["auto_map"] = {"AutoTokenizer": ["evil.Tok", None]}
    (src / "tokenizer_config.json").write_text(json.dumps(tc))
    with pytest.raises(InputError, match="auto_map"):
        bundle.create(src, keys[0], tmp_path / "b2")


def test_verify_if_bundle_needs_a_key_and_resolves_model(good_bundle, keys, tiny_phi3_dir, monkeypatch):
    monkeypatch.delenv("OPCLAIM_BUNDLE_KEY", raising=False)
    with pytest.raises(bundle.BundleError, match="--bundle-key"):
        bundle.verify_if_bundle(good_bundle)
    assert bundle.verify_if_bundle(good_bundle, keys[1]) == good_bundle / "model"
    assert bundle.verify_if_bundle(good_bundle / "model", keys[1]) == good_bundle / "model"
    assert bundle.verify_if_bundle(tiny_phi3_dir) == tiny_phi3_dir  # plain folder, no key: unchanged
    with pytest.raises(bundle.BundleError, match="not a signed bundle"):
        bundle.verify_if_bundle(tiny_phi3_dir, keys[1])


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_cli_offline_round_trip_and_exit_codes(tiny_phi3_dir, tmp_path, cli_env):
    """keygen/create/verify through the CLI inside a network namespace with no interfaces."""
    exe = opclaim_exe()

    def run(*args):
        return subprocess.run(["unshare", "-n", exe, *args], capture_output=True, text=True, env=cli_env)

    assert run("bundle", "keygen", "--out", str(tmp_path / "k")).returncode == 0
    r = run("bundle", "create", str(tiny_phi3_dir), "--key", str(tmp_path / "k/opclaim_signing.key"),
            "--out", str(tmp_path / "b"))
    assert r.returncode == 0, r.stderr
    r = run("bundle", "verify", str(tmp_path / "b"), "--key", str(tmp_path / "k/opclaim_signing.pub"))
    assert r.returncode == 0 and "signature OK" in r.stdout, r.stderr
    (tmp_path / "b/model/generation_config.json").unlink()
    r = run("bundle", "verify", str(tmp_path / "b"), "--key", str(tmp_path / "k/opclaim_signing.pub"))
    assert r.returncode == 2 and "missing file model/generation_config.json" in r.stderr


def test_verified_bundle_loads_and_generates(good_bundle, keys):
    """The model that comes out of a verified bundle is the one that went in, and it runs."""
    import torch

    from opclaim.registry import load_model, load_tokenizer

    path = bundle.verify_if_bundle(good_bundle, keys[1])
    model, tok = load_model(path), load_tokenizer(path)
    ids = tok("CPT 1:", return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 3


# ---------------------------------------------------------------- adapters and model cards
RUN_RECORD = {
    "schema": "opclaim.train-run/3", "prompt_format": "phi3", "load_in_4bit": True, "base_model": "/models/tiny-phi3", "global_step": 6, "world_size": 2,
    "final_train_loss": 7.4, "final_val_loss": 7.3,
    "data": {"train": {"cases": 13, "services": {"Urology": 9, "Orthopedics": 4},
                       "date_range": ["2021-01-10", "2021-09-18"],
                       "example_note": "PATIENT: ZQXCANARY7731PHI"},  # a field no card may copy
             "val": {"cases": 3, "services": {"Urology": 3}, "date_range": ["2021-02-10", "2021-06-15"]}},
    "config": {"model": {"lora_r": 64, "lora_alpha": 16, "load_in_4bit": True},
               "training": {"max_steps": 6, "learning_rate": 0.002}},
}
METRICS = {"schema": "opclaim.eval/1", "gold_sets": {"test": {}}, "configs": {"test/finetuned": {
    "config": "finetuned", "gold": "test", "n_cases": 8,
    "icd10": {"precision": 0.5, "recall": 0.25, "f1": 0.333, "precision_ci": [0.25, 0.75], "recall_ci": [0.0, 0.5]},
    "cpt": {"precision": 0.75, "recall": 0.5, "f1": 0.6, "precision_ci": [0.5, 1.0], "recall_ci": [0.25, 0.75]},
    "structure": {"rougeL": 0.41, "meteor": 0.38}}}}


@pytest.fixture(scope="module")
def adapter_dir(tiny_phi3_dir, tmp_path_factory):
    """A real (untrained) LoRA adapter on the tiny Phi-3, saved the way training saves it."""
    from peft import LoraConfig, get_peft_model

    from opclaim.registry import load_model

    out = tmp_path_factory.mktemp("adapter")
    model = get_peft_model(load_model(tiny_phi3_dir), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    model.save_pretrained(out)
    record = json.loads(json.dumps(RUN_RECORD))
    del record["data"]["train"]["example_note"]  # a training run never writes it: the reader refuses it
    (out / "opclaim_run.json").write_text(json.dumps(record))
    (out / "training_args.bin").write_bytes(b"\x80\x04N.")  # Trainer's pickle: skipped, not refused
    (out / "checkpoint-3").mkdir()
    (out / "checkpoint-3" / "optimizer.pt").write_bytes(b"\x80\x04N.")
    return out


def test_model_card_has_every_section_and_no_note_text(tmp_path):
    from opclaim.errors import InputError
    from opclaim.modelcard import is_opclaim_card, write_model_card

    (tmp_path / "opclaim_run.json").write_text(json.dumps(RUN_RECORD))
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    # The canary field is refused by the run record's reader, by name and without its text.
    with pytest.raises(InputError) as refused:
        write_model_card(tmp_path, tmp_path / "metrics.json")
    assert refused.value.field == "data.train.example_note" and "unknown field" in str(refused.value)
    assert "ZQXCANARY7731PHI" not in str(refused.value) and not (tmp_path / "README.md").exists()
    record = json.loads(json.dumps(RUN_RECORD))
    del record["data"]["train"]["example_note"]
    (tmp_path / "opclaim_run.json").write_text(json.dumps(record))
    card_path = write_model_card(tmp_path, tmp_path / "metrics.json")
    card = card_path.read_text()
    assert is_opclaim_card(card_path)
    for section in ("## Identity", "## Training data", "## Training", "## Evaluation", "## Intended use",
                    "## Limitations"):  # the card's own content: tests/test_modelcard.py
        assert section in card
    assert "/models/tiny-phi3" not in card and "| Base model | tiny-phi3 |" in card and "train: 13 cases" in card
    assert "Urology (12)" in card and "2021-01-10 to 2021-09-18" in card
    assert json.loads((tmp_path / "opclaim_config.json").read_text())["model"]["lora_r"] == 64
    assert "(max_steps 6)" in card
    assert "| finetuned | 8 | ICD-10-CM | 33.3 | – | 50.0 [25.0, 75.0] | 25.0 [0.0, 50.0] |" in card
    assert "ZQXCANARY7731PHI" not in card


def test_adapter_bundle_carries_a_generated_card_and_loads(tiny_phi3_dir, adapter_dir, keys, tmp_path):
    from peft import PeftModel

    from opclaim.registry import load_model

    (adapter_dir / "eval").mkdir(exist_ok=True)
    (adapter_dir / "eval" / "metrics.json").write_text(json.dumps(METRICS))
    out = bundle.create(tiny_phi3_dir, keys[0], tmp_path / "b", adapter=adapter_dir)
    manifest = bundle.verify(out, keys[1])
    assert {"adapter/adapter_model.safetensors", "adapter/adapter_config.json", "adapter/README.md",
            "adapter/opclaim_run.json", "adapter/opclaim_config.json"} <= set(manifest["files"])
    skipped = {s["path"] for s in manifest["skipped"]}
    assert {"adapter/training_args.bin", "adapter/checkpoint-3/", "adapter/eval/"} <= skipped
    card = (out / "adapter" / "README.md").read_text()
    assert "| finetuned | 8 | ICD-10-CM | 33.3 |" in card  # metrics found under the source
    model_path = bundle.verify_if_bundle(out, keys[1])
    adapter_path = bundle.verify_if_bundle(out / "adapter", keys[1])
    model = PeftModel.from_pretrained(load_model(model_path), adapter_path)
    assert model.peft_config["default"].r == 4


def test_native_auto_map_is_accepted(tiny_phi3_dir, keys, tmp_path):
    """Phi-3-mini-128k ships auto_map for a model_type transformers has built in: no remote code runs."""
    src = tmp_path / "src"
    shutil.copytree(tiny_phi3_dir, src)
    (src / "modeling_phi3.py").write_text("raise SystemExit('remote code ran')\n")
    cfg = json.loads((src / "config.json").read_text())
    cfg["auto_map"] = {"AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"}
    (src / "config.json").write_text(json.dumps(cfg))
    manifest = bundle.verify(bundle.create(src, keys[0], tmp_path / "b"), keys[1])
    assert "model/modeling_phi3.py" not in manifest["files"]  # Python files never travel


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_good_bundle_round_trips_into_opclaim_infer(tiny_phi3_dir, adapter_dir, keys, tmp_path, cli_env):
    """Create -> verify (CLI, no network) -> `opclaim infer` straight from the bundle's folders."""
    from opclaim.io import write_cases
    from opclaim.synth import generate_cases

    exe = opclaim_exe()
    b = tmp_path / "bundle"
    r = subprocess.run(["unshare", "-n", exe, "bundle", "create", str(tiny_phi3_dir), "--adapter", str(adapter_dir),
                        "--key", str(keys[0]), "--out", str(b)], capture_output=True, text=True, env=cli_env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run(["unshare", "-n", exe, "bundle", "verify", str(b), "--key", str(keys[1])],
                       capture_output=True, text=True, env=cli_env)
    assert r.returncode == 0, r.stderr
    cases = generate_cases(2, seed=11, style="terse", length="short")
    write_cases(tmp_path / "cases.jsonl", cases)
    preds = tmp_path / "preds.jsonl"
    env = {k: v for k, v in cli_env.items() if k != "OPCLAIM_BUNDLE_KEY"}

    def infer(bundle_dir, *key):
        return subprocess.run(["unshare", "-n", exe, "infer", "--model", str(bundle_dir / "model"),
                               "--adapter", str(bundle_dir / "adapter"), "--mode", "finetuned",
                               "--cases", str(tmp_path / "cases.jsonl"), "--out", str(preds),
                               "--max-new-tokens", "8", *key], capture_output=True, text=True, env=env)

    r = infer(b)  # a signed bundle is never loaded unverified
    assert r.returncode == 2 and "--bundle-key" in r.stderr and not preds.exists()
    tampered = tmp_path / "tampered"
    shutil.copytree(b, tampered)
    weights = tampered / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    r = infer(tampered, "--bundle-key", str(keys[1]))
    assert r.returncode == 2 and not preds.exists(), r.stderr
    r = infer(b, "--bundle-key", str(keys[1]))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in preds.read_text().splitlines() if x.strip()]
    assert sorted(p["id"] for p in rows) == sorted(c.id for c in cases)
    # Nothing in the bundle changed by being used.
    assert bundle.verify(b, keys[1])


def test_infer_model_bundle_uses_its_adapter_or_refuses_clearly(tiny_phi3_dir, adapter_dir, keys, tmp_path,
                                                                 capsys):
    """`opclaim infer --model BUNDLE` loads the bundle's adapter/ (verified with the rest); another
    --adapter beside it is refused with the way out, never silently preferred or dropped."""
    from opclaim.cli import main
    from opclaim.io import write_cases
    from opclaim.synth import generate_cases

    b = bundle.create(tiny_phi3_dir, keys[0], tmp_path / "b", adapter=adapter_dir)
    write_cases(tmp_path / "cases.jsonl", generate_cases(2, seed=3, style="terse", length="short"))
    base = ["infer", "--model", str(b), "--bundle-key", str(keys[1]), "--mode", "finetuned",
            "--cases", str(tmp_path / "cases.jsonl"), "--max-new-tokens", "4", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "p.jsonl")]) == 0
    cfg = json.loads((tmp_path / "p.jsonl.run.json").read_text())["config"]
    assert cfg["adapter"] == str((b / "adapter").resolve()) and cfg["model"] == str((b / "model").resolve())
    capsys.readouterr()
    assert main([*base, "--adapter", str(adapter_dir), "--out", str(tmp_path / "q.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "carries its own adapter/" in err and "BUNDLE/model" in err
    assert not (tmp_path / "q.jsonl").exists()


def test_merged_model_bundle_keeps_its_merge_record(tiny_phi3_dir, keys, tmp_path):
    """The merge record names the prompt format the merged weights expect: it must travel."""
    from opclaim import artifacts

    src = tmp_path / "merged"
    shutil.copytree(tiny_phi3_dir, src)
    artifacts.save(artifacts.MergeRecord(base_model="/b", adapter="/a", merged_into="original", dtype="float32",
                                         prompt_format="generic", untied_lm_head=False), src)
    out = bundle.create(src, keys[0], tmp_path / "b")
    assert "model/opclaim_merge.json" in bundle.verify(out, keys[1])["files"]
    from infer.loading import trained_format

    assert trained_format(out / "model") == "generic"
