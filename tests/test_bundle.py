"""Signed bundles with OpenSSF model-signing: tampering of any kind is refused, offline."""

import json
import shutil
import subprocess

import pytest

from opclaim import bundle
from opclaim.errors import InputError
from tests.conftest import opclaim_exe


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return bundle.keygen(tmp_path_factory.mktemp("keys"))


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


def test_good_bundle_verifies_and_carries_only_needed_files(good_bundle, keys, tiny_phi3_dir):
    manifest = bundle.verify(good_bundle, keys[1])
    names = {p.split("/", 1)[1] for p in manifest["files"]}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    for rel, meta in manifest["files"].items():
        assert (good_bundle / rel).stat().st_size == meta["size"]
        assert len(meta["sha256"]) == 64
    assert (good_bundle / bundle.SIGNATURE).is_file()


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
