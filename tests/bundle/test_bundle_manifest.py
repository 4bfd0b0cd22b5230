"""opclaim.bundle, detail by detail: what `create` leaves behind and why (the manifest's `skipped`
list), the exact refusal for each unsafe source and the file it names, and keygen's errors. Cases
found by mutation testing (docs/records/mutation.md); tampering and loading are test_bundle.py."""

import json
import shutil

import pytest

from opclaim import bundle
from opclaim.errors import InputError


@pytest.fixture(scope="module")
def messy(tiny_phi3_dir, tmp_path_factory):
    """The tiny model folder plus what a training run leaves beside it."""
    src = tmp_path_factory.mktemp("messy") / "model"
    shutil.copytree(tiny_phi3_dir, src)
    (src / "checkpoint-5").mkdir()
    (src / "training_args.bin").write_bytes(b"\x80\x04N.")
    (src / "notes.txt").write_text("not needed\n")
    (src / "zz_extra.safetensors").write_bytes(b"{}")  # sorts after training_args.bin
    return src


def test_skipped_files_are_listed_with_their_reasons(messy, keys, tmp_path):
    out = bundle.create(messy, keys[0], tmp_path / "b")
    manifest = bundle.verify(out, keys[1])
    assert manifest["skipped"] == [
        {"path": "model/checkpoint-5/", "reason": "folder (checkpoints, logs) not needed"},
        {"path": "model/notes.txt", "reason": "not needed to load the model"},
        {"path": "model/training_args.bin", "reason": "training pickle, not needed to load"},
    ]
    # a skipped pickle does not end the scan: files after it are still selected
    assert "model/zz_extra.safetensors" in manifest["files"]


def _refusal(call):
    with pytest.raises(InputError) as e:
        call()
    return type(e.value), e.value.reason, e.value.file


def test_each_unsafe_source_is_refused_naming_the_file(messy, keys, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(messy, src)
    (src / "weights.pt").write_bytes(b"\x80\x04N.")
    assert _refusal(lambda: bundle.create(src, keys[0], tmp_path / "b1")) == (
        bundle.BundleError, "pickled file refused: bundles carry safetensors only", src / "weights.pt")
    (src / "weights.pt").unlink()
    (src / "tokenizer.json").unlink()
    (src / "tokenizer.json").symlink_to(messy / "tokenizer.json")
    assert _refusal(lambda: bundle.create(src, keys[0], tmp_path / "b2")) == (
        bundle.BundleError, "symlink in the model folder; refused (copy the real file in)", src / "tokenizer.json")


def test_adapter_folder_symlink_or_missing(messy, keys, tmp_path):
    # _select is what create runs per part; called directly to reach the folder-level refusals.
    link = tmp_path / "link"
    link.symlink_to(messy, target_is_directory=True)
    assert _refusal(lambda: bundle._select(link, "adapter")) == (bundle.BundleError, "is a symlink; refused", link)
    assert _refusal(lambda: bundle._select(tmp_path / "nope", "adapter")) == (
        InputError, "folder not found", tmp_path / "nope")


def test_keygen_makes_missing_parents_and_names_the_existing_key(tmp_path):
    priv, pub = bundle.keygen(tmp_path / "a" / "b")
    assert priv.is_file() and pub.is_file()
    assert _refusal(lambda: bundle.keygen(tmp_path / "a" / "b")) == (
        InputError, "already exists; refusing to overwrite a key", priv)


def test_key_files_are_checked_for_kind(keys, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    priv, pub = keys
    assert bundle._check_key(priv, private=True) == priv and bundle._check_key(pub, private=False) == pub
    assert _refusal(lambda: bundle._check_key(tmp_path / "none.key", True)) == (
        InputError, "key file not found", tmp_path / "none.key")
    assert _refusal(lambda: bundle._check_key(pub, True))[1] == "not a PEM private key (ValueError)"
    assert _refusal(lambda: bundle._check_key(priv, False))[1] == "not a PEM public key (ValueError)"
    rsa_pub = tmp_path / "rsa.pub"
    rsa_pub.write_bytes(rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert _refusal(lambda: bundle._check_key(rsa_pub, False)) == (
        InputError, "not an elliptic-curve key (use `opclaim bundle keygen`)", rsa_pub)


def test_manifest_records_parts_version_and_time(messy, keys, tmp_path):
    import opclaim

    m = json.loads((bundle.create(messy, keys[0], tmp_path / "b") / bundle.MANIFEST).read_text())
    assert m["parts"] == ["model"] and m["opclaim_version"] == opclaim.__version__
    assert m["created"].endswith("+00:00") and len(m["created"]) == len("2026-12-01T00:00:00+00:00")
