"""opclaim.bundle's contract on small fake model folders (no model is built or loaded, so the file
runs in seconds): the manifest's exact contents, recomputed here from the bytes the test wrote;
every refusal's type, reason and the file (and field) it names; where `create` builds and what it
leaves behind when it fails; what `verify` refuses and in which words; the key checks; how
`verify_if_bundle` picks the key and the folder to load. Loading real models is test_bundle.py."""

import datetime as dt
import hashlib
import json
import re
import shutil

import numpy as np
import pytest
from safetensors.numpy import save_file

import opclaim
from opclaim import artifacts, bundle
from opclaim.errors import InputError


def _refusal(call):
    """(type, reason, file, field) of the InputError that `call` raises."""
    with pytest.raises(InputError) as e:
        call()
    return type(e.value), e.value.reason, e.value.file, e.value.field


def _weights(path, seed):
    save_file({"w": np.arange(4, dtype=np.float32) + seed}, str(path))


def _fake_model(folder):
    """A model folder as a training run leaves it: what a model needs, plus things it does not."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "phi3", "hidden_size": 8}))
    _weights(folder / "model.safetensors", 0)
    (folder / "tokenizer.json").write_text(json.dumps({"model": {"vocab": {"a": 0}}}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 4096}))
    (folder / "special_tokens_map.json").write_text(json.dumps({"eos_token": "</s>"}))
    (folder / "checkpoint-5").mkdir()  # sorts before config.json
    (folder / "checkpoint-5" / "optimizer.pt").write_bytes(b"\x80\x04N.")  # inside a skipped folder
    (folder / "notes.txt").write_text("not needed\n")
    (folder / "trainer_state.json").write_text("{not json")  # not needed: skipped unread
    (folder / "training_args.bin").write_bytes(b"\x80\x04N.")
    (folder / "vocab.json").write_text(json.dumps({"a": 0}))  # sorts after training_args.bin
    return folder


MODEL_KEPT = [
    "config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
]
MODEL_SKIPPED = [
    {"path": "model/checkpoint-5/", "reason": "folder (checkpoints, logs) not needed"},
    {"path": "model/notes.txt", "reason": "not needed to load the model"},
    {"path": "model/trainer_state.json", "reason": "not needed to load the model"},
    {"path": "model/training_args.bin", "reason": "training pickle, not needed to load"},
]


def _fake_adapter(folder):
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    _weights(folder / "adapter_model.safetensors", 1)
    (folder / "README.md").write_text("# PEFT template\n")  # no run record: copied as it is
    (folder / "runs").mkdir()
    (folder / "training_args.bin").write_bytes(b"\x80\x04N.")
    return folder


def _digest(path):
    data = path.read_bytes()
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


@pytest.fixture(scope="module")
def src(tmp_path_factory):
    return _fake_model(tmp_path_factory.mktemp("src") / "model")


@pytest.fixture(scope="module")
def good(src, keys, tmp_path_factory):
    return bundle.create(src, keys[0], tmp_path_factory.mktemp("good") / "bundle")


@pytest.fixture
def copy_of(good, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(good, dst, symlinks=True)
    return dst


# ---------------------------------------------------------------- keys
def test_keygen_writes_the_pair_owner_only_and_refuses_either_existing(tmp_path):
    priv, pub = bundle.keygen(tmp_path / "new" / "deeper")  # missing parents are made
    assert (priv, pub) == (
        tmp_path / "new/deeper/opclaim_signing.key",
        tmp_path / "new/deeper/opclaim_signing.pub",
    )
    assert priv.stat().st_mode & 0o777 == 0o600
    assert priv.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert pub.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert _refusal(lambda: bundle.keygen(priv.parent)) == (
        InputError,
        "already exists; refusing to overwrite a key",
        priv,
        None,
    )
    priv.unlink()  # the public key alone still blocks: a new pair would not match it
    assert _refusal(lambda: bundle.keygen(priv.parent)) == (
        InputError,
        "already exists; refusing to overwrite a key",
        pub,
        None,
    )
    assert not priv.exists()


def test_check_key_accepts_the_right_kind_and_names_the_file_it_refuses(keys, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    priv, pub = keys
    assert bundle._check_key(str(priv), private=True) == priv  # a str path comes back as a Path
    assert bundle._check_key(str(pub), private=False) == pub
    missing = tmp_path / "none.pub"
    assert _refusal(lambda: bundle._check_key(missing, False)) == (
        InputError,
        "key file not found",
        missing,
        None,
    )
    assert _refusal(lambda: bundle._check_key(tmp_path, True)) == (
        InputError,
        "key file not found",
        tmp_path,
        None,
    )
    assert _refusal(lambda: bundle._check_key(pub, True)) == (
        InputError,
        "not a PEM private key (ValueError)",
        pub,
        None,
    )
    assert _refusal(lambda: bundle._check_key(priv, False)) == (
        InputError,
        "not a PEM public key (ValueError)",
        priv,
        None,
    )
    locked = tmp_path / "locked.key"  # a passphrase-protected key: cryptography raises TypeError
    locked.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"passphrase"),
        )
    )
    assert _refusal(lambda: bundle._check_key(locked, True)) == (
        InputError,
        "not a PEM private key (TypeError)",
        locked,
        None,
    )
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_priv, rsa_pub = tmp_path / "rsa.key", tmp_path / "rsa.pub"
    rsa_priv.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    rsa_pub.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    for path, private in ((rsa_priv, True), (rsa_pub, False)):
        assert _refusal(lambda p=path, k=private: bundle._check_key(p, k)) == (
            InputError,
            "not an elliptic-curve key (use `opclaim bundle keygen`)",
            path,
            None,
        )


# ---------------------------------------------------------------- create: the manifest
def test_manifest_lists_exactly_the_needed_files_with_their_digests(src, good, keys):
    before = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    manifest = json.loads((good / bundle.MANIFEST).read_text())
    assert set(manifest) == {"schema", "opclaim_version", "created", "parts", "files", "skipped"}
    assert manifest["schema"] == "opclaim.bundle/2" and manifest["opclaim_version"] == opclaim.__version__
    assert manifest["parts"] == ["model"]
    assert manifest["files"] == {f"model/{n}": _digest(src / n) for n in MODEL_KEPT}
    assert manifest["skipped"] == MODEL_SKIPPED
    for n in MODEL_KEPT:  # copied byte for byte
        assert (good / "model" / n).read_bytes() == (src / n).read_bytes()
    assert sorted(p.name for p in good.iterdir()) == ["model", bundle.MANIFEST, bundle.SIGNATURE]
    # created: UTC, whole seconds, not in the future (the fixture ran before `before` was taken)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", manifest["created"])
    created = dt.datetime.fromisoformat(manifest["created"])
    assert created.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(minutes=10) <= created <= before
    assert good.stat().st_mode & 0o777 == 0o755  # not mkdtemp's 0700: other accounts load it
    assert bundle.verify(good, keys[1]) == manifest  # verify returns the manifest it checked


def test_adapter_part_keeps_the_skipped_entries_of_both_parts(src, keys, tmp_path):
    adapter = _fake_adapter(tmp_path / "adapter")
    out = bundle.create(src, keys[0], tmp_path / "b", adapter=adapter)
    manifest = bundle.verify(out, keys[1])
    assert manifest["parts"] == ["adapter", "model"]
    assert manifest["files"] == {
        **{f"model/{n}": _digest(src / n) for n in MODEL_KEPT},
        **{
            f"adapter/{n}": _digest(adapter / n)
            for n in ("README.md", "adapter_config.json", "adapter_model.safetensors")
        },
    }
    assert manifest["skipped"] == MODEL_SKIPPED + [
        {"path": "adapter/runs/", "reason": "folder (checkpoints, logs) not needed"},
        {"path": "adapter/training_args.bin", "reason": "training pickle, not needed to load"},
    ]


def test_a_folder_that_is_not_an_adapter_is_refused_naming_it(src, keys, tmp_path):
    reason = "not a LoRA adapter folder (needs adapter_config.json and adapter_model.safetensors)"
    only_config, only_weights = tmp_path / "a1", tmp_path / "a2"
    only_config.mkdir()
    (only_config / "adapter_config.json").write_text("{}")
    only_weights.mkdir()
    _weights(only_weights / "adapter_model.safetensors", 2)
    for adapter in (only_config, only_weights):
        assert _refusal(lambda a=adapter: bundle.create(src, keys[0], tmp_path / "b", adapter=a)) == (
            InputError,
            reason,
            adapter,
            None,
        )
    assert not (tmp_path / "b").exists()


def test_an_existing_destination_is_refused_and_missing_parents_are_made(src, good, keys, tmp_path):
    assert _refusal(lambda: bundle.create(src, keys[0], good)) == (
        InputError,
        "already exists; choose a new bundle folder",
        good,
        None,
    )
    out = bundle.create(src, keys[0], tmp_path / "new" / "deeper" / "b")
    assert bundle.verify(out, keys[1])["files"] == json.loads((good / bundle.MANIFEST).read_text())["files"]


def test_the_bundle_is_built_beside_its_destination_under_another_name(src, keys, tmp_path, monkeypatch):
    dest = tmp_path / "dest"
    dest.mkdir()
    seen = []
    real_sign = bundle._sign

    def spy(folder, key):
        seen.append((folder, (dest / "b").exists(), sorted(p.name for p in folder.iterdir())))
        real_sign(folder, key)

    monkeypatch.setattr(bundle, "_sign", spy)
    out = bundle.create(src, keys[0], dest / "b")
    [(stage, had_name, contents)] = seen
    assert stage.parent == dest and not had_name  # a half-written bundle never has its name
    assert stage.name.startswith(".b.") and stage.name.endswith(".partial")
    assert contents == ["model", bundle.MANIFEST]  # the manifest is written before signing
    assert not stage.exists() and sorted(p.name for p in dest.iterdir()) == ["b"]
    assert bundle.verify(out, keys[1])["parts"] == ["model"]


def test_a_failure_after_staging_leaves_nothing_and_raises_the_original_error(
    src, keys, tmp_path, monkeypatch
):
    dest = tmp_path / "dest"
    dest.mkdir()

    def failing_sign(folder, key):
        raise RuntimeError("signer failed")

    monkeypatch.setattr(bundle, "_sign", failing_sign)
    with pytest.raises(RuntimeError, match="signer failed"):
        bundle.create(src, keys[0], dest / "b")
    assert list(dest.iterdir()) == []  # no destination, no .b.*.partial

    def stage_gone_then_fail(folder, key):  # the clean-up itself fails: still the original error
        shutil.rmtree(folder)
        raise RuntimeError("disk gone")

    monkeypatch.setattr(bundle, "_sign", stage_gone_then_fail)
    with pytest.raises(RuntimeError, match="disk gone"):
        bundle.create(src, keys[0], dest / "b")
    assert list(dest.iterdir()) == []


# ---------------------------------------------------------------- create: refusals in the source
def test_each_unsafe_source_is_refused_naming_the_file(src, keys, tmp_path):
    s = tmp_path / "s"
    shutil.copytree(src, s)
    (s / "Weights.PT").write_bytes(b"\x80\x04N.")  # the suffix is compared case-blind
    assert _refusal(lambda: bundle.create(s, keys[0], tmp_path / "b")) == (
        bundle.BundleError,
        "pickled file refused: bundles carry safetensors only",
        s / "Weights.PT",
        None,
    )
    (s / "Weights.PT").unlink()
    (s / "tokenizer.json").unlink()
    (s / "tokenizer.json").symlink_to(src / "tokenizer.json")
    assert _refusal(lambda: bundle.create(s, keys[0], tmp_path / "b")) == (
        bundle.BundleError,
        "symlink in the model folder; refused (copy the real file in)",
        s / "tokenizer.json",
        None,
    )
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


def test_select_refuses_a_symlinked_or_missing_folder(src, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(src, target_is_directory=True)
    assert _refusal(lambda: bundle._select(link, "adapter")) == (
        bundle.BundleError,
        "is a symlink; refused",
        link,
        None,
    )
    assert _refusal(lambda: bundle._select(tmp_path / "nope", "adapter")) == (
        InputError,
        "folder not found",
        tmp_path / "nope",
        None,
    )
    keep, skipped = bundle._select(src, "adapter")  # the part name prefixes every skipped path
    assert [f.name for f in keep] == MODEL_KEPT
    assert skipped == [{**s, "path": s["path"].replace("model/", "adapter/", 1)} for s in MODEL_SKIPPED]


def test_unreadable_json_among_the_needed_files_is_refused_naming_it(src, keys, tmp_path):
    s = tmp_path / "s"
    shutil.copytree(src, s)
    tc = s / "tokenizer_config.json"
    tc.write_text("{not json")
    assert _refusal(lambda: bundle.create(s, keys[0], tmp_path / "b")) == (
        InputError,
        "unreadable JSON (JSONDecodeError)",
        tc,
        None,
    )
    tc.write_bytes(b'{"a": "\xff"}')
    assert _refusal(lambda: bundle.create(s, keys[0], tmp_path / "b")) == (
        InputError,
        "unreadable JSON (UnicodeDecodeError)",
        tc,
        None,
    )
    # JSON that is not an object holds no auto_map: copied as it is
    tc.write_text(json.dumps(["auto_map"]))
    assert (
        "model/tokenizer_config.json"
        in bundle.verify(bundle.create(s, keys[0], tmp_path / "b"), keys[1])["files"]
    )


def test_remote_code_in_any_needed_json_is_refused_naming_that_file(src, keys, tmp_path):
    s = tmp_path / "s"
    shutil.copytree(src, s)
    tc = s / "tokenizer_config.json"
    tc.write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["evil.Tok", None]}, "model_type": "my-config.json"})
    )
    # the file named is tokenizer_config.json, in the reason too; the model type is described by its
    # length only (14 characters, the value itself is not rewritten)
    assert _refusal(lambda: bundle.create(s, keys[0], tmp_path / "b")) == (
        bundle.BundleError,
        "tokenizer_config.json has <text of 8 characters> and model_type <text of 14 characters> is not built "
        "into transformers: it needs remote code; refused (trust_remote_code is off)",
        tc,
        "auto_map",
    )
    tc.write_text(json.dumps({"auto_map": {"AutoTokenizer": ["evil.Tok", None]}}))
    assert _refusal(lambda: bundle._refuse_remote_code(tc)) == (
        bundle.BundleError,
        "tokenizer_config.json has <text of 8 characters> and model_type None is not built "
        "into transformers: it needs remote code; refused (trust_remote_code is off)",
        tc,
        "auto_map",
    )


# ---------------------------------------------------------------- model cards
def _trained(folder):
    artifacts.save(
        artifacts.TrainRun(prompt_format="phi3", load_in_4bit=False, base_model="/models/tiny"), folder
    )


def test_a_trained_model_gets_a_generated_card_unless_it_has_ours(src, keys, tmp_path):
    from opclaim.modelcard import is_opclaim_card

    s = tmp_path / "s"
    shutil.copytree(src, s)
    _trained(s)
    (s / "README.md").write_text("---\nlibrary_name: peft\n---\n# template\n")  # PEFT's: replaced
    out = bundle.create(s, keys[0], tmp_path / "b1")
    card = out / "model" / "README.md"
    assert is_opclaim_card(card) and "# template" not in card.read_text()
    files = bundle.verify(out, keys[1])["files"]
    assert files["model/README.md"] == _digest(card)
    assert files["model/opclaim_config.json"] == _digest(out / "model" / "opclaim_config.json")
    assert not (s / "opclaim_config.json").exists()  # the source folder is not written to

    ours = card.read_text() + "\nEdited by hand after `opclaim card`.\n"
    (s / "README.md").write_text(ours)  # an opclaim card already: travels as it is
    out = bundle.create(s, keys[0], tmp_path / "b2")
    assert (out / "model" / "README.md").read_text() == ours
    assert "model/opclaim_config.json" not in bundle.verify(out, keys[1])["files"]


# ---------------------------------------------------------------- verify
def test_verify_refuses_a_missing_folder_and_the_wrong_kind_of_key(good, keys, tmp_path):
    assert _refusal(lambda: bundle.verify(tmp_path / "nope", keys[1])) == (
        InputError,
        "bundle folder not found",
        tmp_path / "nope",
        None,
    )
    assert _refusal(lambda: bundle.verify(good, keys[0])) == (
        InputError,
        "not a PEM public key (ValueError)",
        keys[0],
        None,
    )


@pytest.mark.parametrize("name", [bundle.MANIFEST, bundle.SIGNATURE])
def test_a_bundle_without_its_manifest_or_signature_is_refused(copy_of, keys, name):
    (copy_of / name).unlink()
    assert _refusal(lambda: bundle.verify(copy_of, keys[1])) == (
        bundle.BundleError,
        f"not a signed bundle: {name} is missing",
        copy_of,
        None,
    )


def test_an_unreadable_manifest_is_refused_with_the_readers_reason(copy_of, keys):
    m = copy_of / bundle.MANIFEST
    good = json.loads(m.read_text())
    m.write_text("{not json")
    assert _refusal(lambda: bundle.verify(copy_of, keys[1])) == (
        bundle.BundleError,
        "unreadable manifest (unreadable bundle record: malformed JSON (Expecting property name "
        "enclosed in double quotes, column 2))",
        m,
        None,
    )
    m.write_text(json.dumps({**good, "files": {"model/config.json": {"sha256": 3, "size": 1}}}))
    assert _refusal(lambda: bundle.verify(copy_of, keys[1])) == (
        bundle.BundleError,
        "unreadable manifest (expected str, got int)",
        m,
        "files.model/config.json.sha256",
    )


def test_every_problem_is_named_in_one_refusal(copy_of, keys, tmp_path):
    model = copy_of / "model"
    outside = tmp_path / "tokenizer.json"
    shutil.copy(model / "tokenizer.json", outside)
    (model / "tokenizer.json").unlink()
    (model / "tokenizer.json").symlink_to(outside)  # same bytes, but a symlink
    (model / "zz.txt").write_text("x")
    (copy_of / "aa.txt").write_text("x")
    (model / bundle.SIGNATURE).write_text("x")  # only the top-level signature is not a bundle file
    (model / "special_tokens_map.json").unlink()
    (model / "vocab.json").unlink()
    (model / "config.json").write_text((model / "config.json").read_text() + " ")  # longer
    tc = model / "tokenizer_config.json"
    tc.write_text(tc.read_text().replace("4096", "4097"))  # same size, other bytes
    assert _refusal(lambda: bundle.verify(copy_of, keys[1])) == (
        bundle.BundleError,
        "refused: symlink model/tokenizer.json; extra file aa.txt; extra file "
        "model/opclaim_bundle.sig; extra file model/zz.txt; missing file model/special_tokens_map.json; missing "
        "file model/vocab.json; changed file model/config.json; changed file model/tokenizer_config.json",
        copy_of,
        None,
    )


def test_a_symlinked_folder_in_the_bundle_is_refused(copy_of, keys, tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (copy_of / "model" / "extra").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert _refusal(lambda: bundle.verify(copy_of, keys[1]))[1:] == (
        "refused: symlink model/extra",
        copy_of,
        None,
    )


def test_a_same_size_change_with_a_rewritten_manifest_fails_the_signature(copy_of, keys):
    tc = copy_of / "model" / "tokenizer_config.json"
    tc.write_text(tc.read_text().replace("4096", "4097"))
    m = json.loads((copy_of / bundle.MANIFEST).read_text())
    m["files"]["model/tokenizer_config.json"] = _digest(tc)
    (copy_of / bundle.MANIFEST).write_text(json.dumps(m))
    kind, reason, file, field = _refusal(lambda: bundle.verify(copy_of, keys[1]))
    assert (kind, file, field) == (bundle.BundleError, copy_of, None)
    assert reason.startswith(
        "refused: signature does not verify with this key (ValueError: Signature mismatch"
    )


def test_a_wrong_public_key_is_refused_with_the_signers_reason(good, tmp_path):
    _, other = bundle.keygen(tmp_path / "other")
    kind, reason, file, field = _refusal(lambda: bundle.verify(good, other))
    assert (kind, file, field) == (bundle.BundleError, good, None)
    assert reason.startswith("refused: signature does not verify with this key (ValueError: Key mismatch")


def test_a_verifier_error_of_any_type_is_refused_with_200_characters_of_its_text(good, keys, monkeypatch):
    from model_signing import verifying

    class InvalidSignature(Exception):
        pass

    def broken(self, model_path, signature_path):
        assert (model_path, signature_path) == (good, good / bundle.SIGNATURE)
        raise InvalidSignature("x" * 150 + "y" * 150)

    monkeypatch.setattr(verifying.Config, "verify", broken)
    assert _refusal(lambda: bundle.verify(good, keys[1])) == (
        bundle.BundleError,
        "refused: signature does not verify with this key (InvalidSignature: " + "x" * 150 + "y" * 50 + ")",
        good,
        None,
    )


def test_the_signature_itself_covers_git_files(keys, tmp_path):
    """verify refuses any file the manifest does not list before it checks the signature; the
    signature does not ignore .gitattributes and the like either (model-signing's default would)."""
    from model_signing import verifying

    folder = tmp_path / "f"
    folder.mkdir()
    (folder / ".gitattributes").write_text("* -text\n")
    (folder / "a.txt").write_text("a")
    bundle._sign(folder, keys[0])
    verifier = (
        verifying.Config()
        .set_hashing_config(bundle._hashing_config())
        .use_elliptic_key_verifier(public_key=keys[1])
    )
    verifier.verify(folder, folder / bundle.SIGNATURE)
    (folder / ".gitattributes").write_text("* text\n")
    with pytest.raises(ValueError, match="mismatch"):
        verifier.verify(folder, folder / bundle.SIGNATURE)


# ---------------------------------------------------------------- verify_if_bundle
def test_verify_if_bundle_takes_the_key_from_the_environment(good, src, keys, tmp_path, monkeypatch):
    monkeypatch.setenv("OPCLAIM_BUNDLE_KEY", str(keys[1]))
    assert bundle.verify_if_bundle(good) == good / "model"
    assert bundle.verify_if_bundle(good / "model") == good / "model"
    assert _refusal(lambda: bundle.verify_if_bundle(src)) == (
        bundle.BundleError,
        "a bundle key was given but this is not a signed bundle",
        src,
        None,
    )
    _, other = bundle.keygen(tmp_path / "other")
    monkeypatch.setenv("OPCLAIM_BUNDLE_KEY", str(other))  # an explicit key wins over the environment
    assert bundle.verify_if_bundle(good, keys[1]) == good / "model"
    assert "Key mismatch" in _refusal(lambda: bundle.verify_if_bundle(good))[1]


def test_verify_if_bundle_without_a_key(good, src, copy_of, keys, monkeypatch):
    monkeypatch.setenv("OPCLAIM_BUNDLE_KEY", "")  # set but empty: no key
    assert bundle.verify_if_bundle(src) == src
    assert bundle.verify_if_bundle(str(src)) == src
    reason = (
        "is a signed bundle: pass --bundle-key PUB (or set OPCLAIM_BUNDLE_KEY) to verify it before loading"
    )
    assert _refusal(lambda: bundle.verify_if_bundle(good)) == (bundle.BundleError, reason, good, None)
    assert _refusal(lambda: bundle.verify_if_bundle(good / "model")) == (
        bundle.BundleError,
        reason,
        good,
        None,
    )
    (copy_of / "model" / "config.json").write_text("{}")
    assert _refusal(lambda: bundle.verify_if_bundle(copy_of / "model", keys[1]))[1:] == (
        "refused: changed file model/config.json",
        copy_of,
        None,
    )


def test_a_signed_and_listed_git_file_is_a_bundle_file_like_any_other(copy_of, keys):
    """verify hashes with bundle's own config, which does not skip .gitattributes and the like;
    model-signing left to guess the config from the signature would skip them and then find the
    signed file missing. Re-signed with the bundle key and listed in the manifest, it verifies."""
    (copy_of / ".gitattributes").write_text("* -text\n")
    m = json.loads((copy_of / bundle.MANIFEST).read_text())
    m["files"][".gitattributes"] = _digest(copy_of / ".gitattributes")
    (copy_of / bundle.MANIFEST).write_text(json.dumps(m))
    bundle._sign(copy_of, keys[0])
    assert bundle.verify(copy_of, keys[1])["files"][".gitattributes"] == m["files"][".gitattributes"]
