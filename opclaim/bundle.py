"""Signed offline model bundles: what an air-gapped site carries in, and checks before loading.

A bundle is a folder:

    BUNDLE/
      opclaim_bundle.json   manifest: sha256 and size of every file, what was skipped and why
      opclaim_bundle.sig    OpenSSF model-signing signature (EC key, DSSE in a Sigstore bundle)
      model/                config, *.safetensors, tokenizer files, model card, opclaim_run.json
      adapter/              optional LoRA adapter (adapter_config.json, adapter_model.safetensors)

`create` copies only what a model needs and refuses pickled weights, symlinks and remote-code
configs. `verify` refuses any changed, missing or extra file, then checks the signature with the
public key. Both run fully offline: the EC key signer/verifier never touches Sigstore or TUF.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import opclaim
from opclaim import artifacts
from opclaim.errors import InputError
from opclaim.registry import PICKLE_SUFFIXES  # pickles run code when loaded: refused, never skipped

MANIFEST = artifacts.BundleManifest.FILE
SIGNATURE = "opclaim_bundle.sig"
PRIVATE_KEY = "opclaim_signing.key"
PUBLIC_KEY = "opclaim_signing.pub"

# What a model (or adapter) folder needs to load; everything else is left behind.
NEEDED_NAMES = {
    "config.json", "generation_config.json", "adapter_config.json", "model.safetensors.index.json",
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "tokenizer.model", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
    "README.md", artifacts.TrainRun.FILE, artifacts.ModelSource.FILE,
    artifacts.MergeRecord.FILE,  # a merged model's prompt format travels with it
    "opclaim_config.json",  # the resolved config the model card cites by sha256
}
NEEDED_SUFFIXES = (".safetensors",)
# Trainer writes its arguments as a pickle beside the adapter; it is not needed to load the model.
SKIPPED_PICKLES = {"training_args.bin"}


class BundleError(InputError):
    """A bundle that must not be loaded (exit code 2 on the CLI)."""


# ---------------------------------------------------------------- keys
def keygen(out: str | Path) -> tuple[Path, Path]:
    """An EC P-256 key pair: out/opclaim_signing.key (0600) and out/opclaim_signing.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out = Path(out)
    priv_path, pub_path = out / PRIVATE_KEY, out / PUBLIC_KEY
    for p in (priv_path, pub_path):
        if p.exists():
            raise InputError("already exists; refusing to overwrite a key", file=p)
    out.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(priv)
    pub_path.write_bytes(pub)
    return priv_path, pub_path


def _check_key(path: str | Path, private: bool) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p = Path(path)
    if not p.is_file():
        raise InputError("key file not found", file=p)
    try:
        data = p.read_bytes()
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as e:
        kind = "private" if private else "public"
        raise InputError(f"not a PEM {kind} key ({type(e).__name__})", file=p) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        raise InputError("not an elliptic-curve key (use `opclaim bundle keygen`)", file=p)
    return p


# ---------------------------------------------------------------- create
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _select(src: Path, part: str) -> tuple[list[Path], list[dict]]:
    """Files of `src` to copy, and what was left behind (with reasons). Refuses unsafe content."""
    if src.is_symlink():
        raise BundleError("is a symlink; refused", file=src)
    if not src.is_dir():
        raise InputError("folder not found", file=src)
    keep, skipped = [], []
    for f in sorted(src.iterdir()):
        if f.is_symlink():
            raise BundleError("symlink in the model folder; refused (copy the real file in)", file=f)
        if f.is_dir():
            skipped.append({"path": f"{part}/{f.name}/", "reason": "folder (checkpoints, logs) not needed"})
            continue
        if f.name in SKIPPED_PICKLES:
            skipped.append({"path": f"{part}/{f.name}", "reason": "training pickle, not needed to load"})
            continue
        if f.suffix.lower() in PICKLE_SUFFIXES:
            raise BundleError("pickled file refused: bundles carry safetensors only", file=f)
        if f.name in NEEDED_NAMES or f.name.endswith(NEEDED_SUFFIXES):
            if f.suffix == ".json":
                _refuse_remote_code(f)
            keep.append(f)
        else:
            skipped.append({"path": f"{part}/{f.name}", "reason": "not needed to load the model"})
    return keep, skipped


def _refuse_remote_code(path: Path) -> None:
    # Plain json, not io.read_json: HF writes model_max_length = 1e30-ish (31 digits), over its limit.
    try:
        conf = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable JSON ({type(e).__name__})", file=path) from None
    from opclaim.registry import remote_code_reason

    # auto_map is fine only where transformers has the class built in (Phi-3-mini-128k's config);
    # *.py files are never copied, so a bundle cannot carry remote code either way.
    reason = remote_code_reason(conf) if isinstance(conf, dict) else None
    if reason:
        raise BundleError(reason.replace("config.json", path.name, 1), file=path, field="auto_map")


def create(model_dir: str | Path, key: str | Path, out: str | Path, adapter: str | Path | None = None) -> Path:
    """Copy what the model (and optional adapter) need into a new signed bundle folder `out`."""
    from opclaim.registry import check_model_dir

    model_dir, out = Path(model_dir), Path(out)
    key = _check_key(key, private=True)
    if out.exists():
        raise InputError("already exists; choose a new bundle folder", file=out)
    parts = {"model": check_model_dir(model_dir)}
    if adapter is not None:
        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file() or not list(adapter.glob("adapter_model*.safetensors")):
            raise InputError("not a LoRA adapter folder (needs adapter_config.json and "
                             "adapter_model.safetensors)", file=adapter)
        parts["adapter"] = adapter
    selected = {name: _select(src, name) for name, src in parts.items()}

    # Build beside the destination and rename at the end: a half-written bundle never has its name.
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        files, skipped = {}, []
        for name, (keep, skip) in selected.items():
            (stage / name).mkdir()
            skipped += skip
            for f in keep:
                shutil.copy2(f, stage / name / f.name)
        _add_model_card(stage, parts)
        for f in sorted(stage.rglob("*")):
            if f.is_file():
                rel = f.relative_to(stage).as_posix()
                files[rel] = {"sha256": _sha256(f), "size": f.stat().st_size}
        manifest = artifacts.BundleManifest(
            opclaim_version=opclaim.__version__,
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            parts=sorted(parts), files=files, skipped=skipped)
        artifacts.save(manifest, stage / MANIFEST)
        _sign(stage, key)
        os.chmod(stage, 0o755)
        os.rename(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out


def _add_model_card(stage: Path, parts: dict) -> None:
    """Every trained model carries a card: generate one when the source has a run record but no card."""
    from opclaim.modelcard import find_latest_metrics, is_opclaim_card, write_model_card

    for name, src in parts.items():
        card = stage / name / "README.md"
        # PEFT's save_pretrained leaves a template README.md; replace anything that is not ours.
        if (stage / name / artifacts.TrainRun.FILE).is_file() and not is_opclaim_card(card):
            write_model_card(stage / name, metrics_path=find_latest_metrics(src))


def _hashing_config():
    from model_signing import hashing

    # The signature file cannot sign itself; git files are NOT ignored (any extra file is refused).
    return hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=False)


def _sign(folder: Path, key: Path) -> None:
    from model_signing import signing

    (signing.Config().set_hashing_config(_hashing_config())
     .use_elliptic_key_signer(private_key=key).sign(folder, folder / SIGNATURE))


# ---------------------------------------------------------------- verify
def verify(bundle: str | Path, key: str | Path) -> dict:
    """Refuse (BundleError) any changed, missing or extra file or a bad signature; return the manifest."""
    from model_signing import verifying

    root = Path(bundle)
    key = _check_key(key, private=False)
    if not root.is_dir():
        raise InputError("bundle folder not found", file=root)
    for name in (MANIFEST, SIGNATURE):
        if not (root / name).is_file():
            raise BundleError(f"not a signed bundle: {name} is missing", file=root)
    try:
        manifest = artifacts.load(artifacts.BundleManifest, root / MANIFEST).to_dict()
    except InputError as e:
        raise BundleError(f"unreadable manifest ({e.reason})", file=e.file, field=e.field) from None
    files = manifest["files"]

    problems = []
    present = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if p.is_symlink():
                problems.append(f"symlink {p.relative_to(root).as_posix()}")
        for n in filenames:
            p = Path(dirpath) / n
            present[p.relative_to(root).as_posix()] = p
    present.pop(MANIFEST, None)
    present.pop(SIGNATURE, None)
    problems += [f"extra file {r}" for r in sorted(set(present) - set(files))]
    problems += [f"missing file {r}" for r in sorted(set(files) - set(present))]
    for rel in sorted(set(files) & set(present)):
        p, want = present[rel], files[rel]
        if p.stat().st_size != want.get("size") or _sha256(p) != want.get("sha256"):
            problems.append(f"changed file {rel}")
    if problems:
        raise BundleError("refused: " + "; ".join(problems), file=root)

    try:
        (verifying.Config().set_hashing_config(_hashing_config())
         .use_elliptic_key_verifier(public_key=key).verify(root, root / SIGNATURE))
    except Exception as e:  # noqa: BLE001 - model-signing raises ValueError and crypto errors alike
        raise BundleError(f"refused: signature does not verify with this key ({type(e).__name__}: "
                          f"{str(e)[:200]})", file=root) from None
    return manifest


def bundle_root(path: str | Path) -> Path | None:
    """The bundle folder `path` is, or is a part of (model/ or adapter/); None if neither."""
    p = Path(path)
    for cand in (p, p.parent):
        if (cand / MANIFEST).is_file():
            return cand
    return None


def verify_if_bundle(path: str | Path, key: str | Path | None = None) -> Path:
    """Call before loading a model or adapter folder. Returns the folder to load.

    - `path` is a bundle (or its model/ or adapter/ part): verify it with `key` (or the
      OPCLAIM_BUNDLE_KEY environment variable); refuse without a key. A bundle root resolves to
      its model/ folder.
    - `path` is a plain folder: returned unchanged, unless a key was given, in which case the
      caller asked for a signed model and the unsigned folder is refused.
    """
    key = key or os.environ.get("OPCLAIM_BUNDLE_KEY") or None
    root = bundle_root(path)
    if root is None:
        if key:
            raise BundleError("a bundle key was given but this is not a signed bundle", file=path)
        return Path(path)
    if not key:
        raise BundleError("is a signed bundle: pass --bundle-key PUB (or set OPCLAIM_BUNDLE_KEY) to "
                          "verify it before loading", file=root)
    verify(root, key)
    return root / "model" if Path(path) == root else Path(path)
