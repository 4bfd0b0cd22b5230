"""The files stages pass each other: one typed, versioned schema each, one writer, one reader.

Every JSON sidecar carries `"schema": "opclaim.<kind>/<version>"`. `save()` is the only writer and
`load()` the only reader; `load()` refuses (InputError naming file and field) a file of another
kind, an unknown or newer version, a missing required field or a field of the wrong type. Files
without a `schema` field are refused with the way out (each class's `NO_SCHEMA_HINT`). The
contract text is docs/artifacts.md.

Paths of the files that belong to one output (predictions and their sidecars) are here too, so
no stage builds another stage's file names by hand.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from opclaim.errors import InputError
from opclaim.io import atomic_write, parse_record, read_json

SCHEMA_FIELD = "schema"
_SCHEMA_RE = re.compile(r"^opclaim\.([a-z0-9-]+)/([0-9]{1,6})$")


def now_utc() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------- the machinery
@dataclass
class Artifact:
    """Base of every schema. Subclasses set KIND, VERSION and (for fixed names) FILE."""

    KIND: ClassVar[str] = ""
    VERSION: ClassVar[int] = 1
    READS: ClassVar[tuple[int, ...]] = ()  # older versions still read as this one (a superset)
    NO_SCHEMA_HINT: ClassVar[str] = "re-create it with this version"
    FILE: ClassVar[str | None] = None
    PRIVATE: ClassVar[bool] = False  # 0600 when the file may name cases

    @classmethod
    def schema(cls) -> str:
        return f"opclaim.{cls.KIND}/{cls.VERSION}"

    def to_dict(self) -> dict:
        out = {SCHEMA_FIELD: self.schema()}
        for f in dataclasses.fields(self):
            out[f.name] = _plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls, d: dict, path=None) -> Artifact:
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names - {SCHEMA_FIELD})
        if unknown:
            raise InputError(f"unknown field for {cls.schema()}", file=path, field=unknown[0])
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise InputError(f"required by {cls.schema()} but missing", file=path, field=f.name)
                continue
            kwargs[f.name] = _check_type(d[f.name], hints[f.name], path, f.name)
        return cls(**kwargs)

    @classmethod
    def refuse_unversioned(cls, path):
        """A file without a schema field (written before schemas existed): refused."""
        raise InputError(f"written by an older opclaim (no '{SCHEMA_FIELD}' field; this version reads "
                         f"{cls.schema()}); {cls.NO_SCHEMA_HINT}", file=path, field=SCHEMA_FIELD)


def _plain(v):
    if isinstance(v, Artifact):
        return {k: _plain(x) for k, x in v.to_dict().items() if k != SCHEMA_FIELD}
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _check_type(value, hint, path, name):
    """Shallow type check of one field against its annotation (str, int, float, bool, dict, list,
    nested dataclass, X | None). Wrong type -> InputError naming the field."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, path, name)
            except InputError as e:
                errors.append(e)
        raise errors[0] if errors else InputError("must not be null", file=path, field=name)
    base = origin or hint
    if isinstance(base, type) and dataclasses.is_dataclass(base):
        if not isinstance(value, dict):
            raise InputError(f"expected an object, got {type(value).__name__}", file=path, field=name)
        return base.from_dict(value, path) if issubclass(base, Artifact) else _nested(base, value, path, name)
    ok = {str: isinstance(value, str), bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          dict: isinstance(value, dict), list: isinstance(value, list)}.get(base)
    if ok is None:
        return value  # typing.Any and friends
    if not ok:
        raise InputError(f"expected {base.__name__}, got {type(value).__name__}", file=path, field=name)
    return float(value) if base is float else value


def _nested(cls, value: dict, path, name):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    extra = sorted(set(value) - names)
    if extra:
        raise InputError("unknown field", file=path, field=f"{name}.{extra[0]}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in value:
            kwargs[f.name] = _check_type(value[f.name], hints[f.name], path, f"{name}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputError("missing", file=path, field=f"{name}.{f.name}")
    return cls(**kwargs)


def parse_schema(d: dict, path) -> tuple[str, int] | None:
    """(kind, version) from a document's schema field; None when it has none (previous layout)."""
    if SCHEMA_FIELD not in d:
        return None
    s = d[SCHEMA_FIELD]
    m = _SCHEMA_RE.match(s) if isinstance(s, str) else None
    if not m:
        raise InputError("not an opclaim schema name (want opclaim.<kind>/<version>)", file=path,
                         field=SCHEMA_FIELD)
    return m.group(1), int(m.group(2))


def parse(cls: type[Artifact], d, path=None) -> Artifact:
    """A document already in memory, checked as `cls`."""
    if not isinstance(d, dict):
        raise InputError("not a JSON object", file=path)
    found = parse_schema(d, path)
    if found is None:
        cls.refuse_unversioned(path)
    kind, version = found
    if kind != cls.KIND:
        raise InputError(f"is a {kind} file, not {cls.KIND}", file=path, field=SCHEMA_FIELD)
    if version > cls.VERSION:
        raise InputError(f"schema version {version} is newer than this opclaim reads ({cls.VERSION}); "
                         "upgrade opclaim", file=path, field=SCHEMA_FIELD)
    if version != cls.VERSION and version not in cls.READS:
        raise InputError(f"schema version {version} is not supported (this opclaim reads {cls.VERSION})",
                         file=path, field=SCHEMA_FIELD)
    return cls.from_dict(d, path)


def load(cls: type[Artifact], path: str | Path):
    """The one reader: the file at `path` (or `path/FILE` for a folder), checked as `cls`."""
    p = Path(path)
    if cls.FILE and p.is_dir():
        p = p / cls.FILE
    if not p.is_file():
        raise InputError(f"not found ({cls.KIND} record)", file=p)
    # the hardened reader: size, depth, duplicate keys, huge numbers, non-UTF-8 -> InputError
    return parse(cls, read_json(p, f"{cls.KIND} record"), p)


def load_optional(cls: type[Artifact], folder: str | Path):
    """`folder/FILE` read with `load`, or None when it does not exist."""
    p = Path(folder) / cls.FILE
    return load(cls, p) if p.is_file() else None


def save(art: Artifact, path: str | Path) -> Path:
    """The one writer: atomic, `path/FILE` for a folder with a fixed file name."""
    p = Path(path)
    if art.FILE and (p.is_dir() or not p.suffix):
        p = p / art.FILE
    with atomic_write(p, private=art.PRIVATE) as fh:
        json.dump(art.to_dict(), fh, indent=2, ensure_ascii=False)
        fh.write("\n")
    return p


# ---------------------------------------------------------------- fingerprints
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def ids_digest(ids) -> str:
    """Order-sensitive digest of case ids (ids are not PHI, but the digest keeps files small)."""
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def folder_fingerprint(folder: str | Path) -> str:
    """Cheap identity of a model, adapter or index folder: its JSON files plus weight names and sizes."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).iterdir()):
        if f.name.endswith((".json", ".safetensors")) and not f.name.startswith("."):
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            if f.suffix == ".json" and f.stat().st_size < 1_000_000:
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------- model folders
@dataclass
class ModelSource(Artifact):
    """opclaim_source.json in a model folder built or pulled by opclaim.models (registry)."""

    KIND: ClassVar[str] = "model-source"
    VERSION: ClassVar[int] = 2
    FILE: ClassVar[str] = "opclaim_source.json"

    name: str
    seed: int | None = None
    random_init: bool = False
    wheel: str | None = None
    version: str | None = None
    gguf: str | None = None
    source: str | None = None


@dataclass
class SplitCounts:
    cases: int
    services: dict = field(default_factory=dict)
    date_range: list | None = None


@dataclass
class TrainRun(Artifact):
    """opclaim_run.json: written last by a finished training run (train/run.py); its presence
    marks the run finished. A merged model folder carries a copy (infer/merge.py)."""

    KIND: ClassVar[str] = "train-run"
    VERSION: ClassVar[int] = 3  # 3: prompt_mode and rag (retrieval-tuned training)
    READS: ClassVar[tuple[int, ...]] = (2,)  # version 2 runs were all prompt_mode "finetuned"
    FILE: ClassVar[str] = "opclaim_run.json"

    prompt_format: str
    load_in_4bit: bool
    base_model: str | None = None
    base_model_source: ModelSource | None = None
    attn_implementation: str | None = None
    padding_free: bool = False
    linear4bit_layers: int = 0
    compute_dtype: str | None = None
    model_type: str | None = None
    world_size: int = 1
    deepspeed: bool = False
    zero_stage: int | None = None
    zero3_partitioned_params: int = 0
    data: dict = field(default_factory=dict)  # split name -> SplitCounts
    final_train_loss: float | None = None
    final_val_loss: float | None = None
    global_step: int = 0
    wall_time_s: float = 0.0
    torch: str | None = None
    config: dict = field(default_factory=dict)  # {"model": ModelArgs, "data": DataArgs, "training": SFTConfig}
    date: str | None = None
    prompt_mode: str = "finetuned"  # finetuned | rag | mixed (train/rag_data.py)
    rag: dict | None = None  # index, index_fingerprint, k, distractor_share(_actual), distractors

    def __post_init__(self):
        self.data = {k: (v if isinstance(v, SplitCounts) else _nested(SplitCounts, v, None, f"data.{k}"))
                     for k, v in (self.data or {}).items()}

    @classmethod
    def from_dict(cls, d, path=None):
        data = d.get("data")
        if isinstance(data, dict):
            d = {**d, "data": {k: _check_type(v, SplitCounts, path, f"data.{k}") for k, v in data.items()}}
        return super().from_dict(d, path)


@dataclass
class MergeRecord(Artifact):
    """opclaim_merge.json in a merged model folder (infer/merge.py); read when loading the model."""

    KIND: ClassVar[str] = "merge"
    VERSION: ClassVar[int] = 2
    FILE: ClassVar[str] = "opclaim_merge.json"

    base_model: str
    adapter: str
    merged_into: str  # "nf4-dequantised" | "original"
    dtype: str
    prompt_format: str
    untied_lm_head: bool
    eos_token_id: list | int | None = None


# ---------------------------------------------------------------- inference outputs
def run_record_path(out: Path) -> Path:
    return out.with_name(out.name + ".run.json")


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def lock_path(out: Path) -> Path:
    return out.with_name(out.name + ".lock")


def shard_path(out: Path, rank: int, n: int) -> Path:
    return out.with_name(f"{out.name}.rank{rank}-of-{n}")


@dataclass
class CasesIdentity:
    """Which cases file an inference output belongs to."""

    sha256: str           # the cases file's bytes
    ids_sha256: str       # ids in file order (artifacts.ids_digest)
    n: int


@dataclass
class InferRun(Artifact):
    """PRED.run.json beside an inference output (infer/output.py). `config` is the run
    configuration compared wholesale on resume; `complete` is true once PRED is final."""

    KIND: ClassVar[str] = "infer-run"
    VERSION: ClassVar[int] = 3  # 3: rows may carry `confidence` (eval/confidence.py)
    READS: ClassVar[tuple[int, ...]] = (2,)  # version 2 rows are version 3 rows without it
    NO_SCHEMA_HINT: ClassVar[str] = ("it does not record which cases file the outputs belong to, so resuming "
                                     "into it could mix cases. Start over with --force-new or use another --out")

    config: dict
    cases: CasesIdentity
    complete: bool = False
    rows: int = 0
    ranks: int | None = None


@dataclass
class PredictionRow:
    """One line of PRED, PRED.partial and PRED.rankN-of-M (JSONL, no schema field per line: the
    run record's schema covers them). `confidence` (infer-run version 3, optional): per-code
    scores from the decoding, layout in eval/confidence.py."""

    id: str
    config: str
    output: str
    latency_s: float
    flags: list = field(default_factory=list)
    confidence: dict | None = None

    def to_dict(self) -> dict:
        d = {"id": self.id, "config": self.config, "output": self.output, "latency_s": self.latency_s}
        if self.flags:
            d["flags"] = list(self.flags)
        if self.confidence is not None:
            d["confidence"] = self.confidence
        return d

    @classmethod
    def from_dict(cls, d: dict, path=None, line=None) -> PredictionRow:
        try:
            return _nested(cls, d, path, "row")
        except InputError as e:
            raise InputError(e.reason, file=path, line=line, field=e.field) from None


def read_prediction_rows(path: Path, *, drop_torn_tail: bool = False) -> dict[str, dict]:
    """id -> row (as a dict) of a prediction file; first copy of an id wins.

    `drop_torn_tail`: the last line of a streaming file may be half-written (the process was killed
    mid-write); without a final newline it is dropped and its case generated again. Anything else
    malformed is an InputError naming the line."""
    rows: dict[str, dict] = {}
    path = Path(path)
    if not path.is_file():
        return rows
    data = path.read_bytes()
    lines = data.split(b"\n")
    torn = lines[-1] if lines else b""
    body = lines[:-1]
    if torn.strip():
        if not drop_torn_tail:
            body.append(torn)
    for n, raw in enumerate(body, 1):
        if not raw.strip():
            continue
        try:
            obj = parse_record(raw)  # the hardened line reader (limits, duplicate keys)
        except InputError as e:
            raise InputError(f"malformed prediction row ({e.reason})", file=path, line=n, field=e.field,
                             kind=e.kind) from None
        row = PredictionRow.from_dict(obj, path, n)
        rows.setdefault(row.id, row.to_dict())
    return rows


def torn_tail(path: Path) -> bool:
    """True when the file's last line has no newline (a write cut short)."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return False
    with open(path, "rb") as fh:
        fh.seek(-1, 2)
        return fh.read(1) != b"\n"


# ---------------------------------------------------------------- bundles
@dataclass
class BundleFile:
    sha256: str
    size: int


@dataclass
class BundleManifest(Artifact):
    """opclaim_bundle.json, the signed manifest of a bundle (opclaim/bundle.py)."""

    KIND: ClassVar[str] = "bundle"
    VERSION: ClassVar[int] = 2
    FILE: ClassVar[str] = "opclaim_bundle.json"

    opclaim_version: str
    created: str
    parts: list
    files: dict  # relative path -> BundleFile
    skipped: list = field(default_factory=list)

    @classmethod
    def from_dict(cls, d, path=None):
        files = d.get("files")
        if isinstance(files, dict):
            d = {**d, "files": {k: _plain(_check_type(v, BundleFile, path, f"files.{k}")) for k, v in files.items()}}
        return super().from_dict(d, path)


# ---------------------------------------------------------------- RAG index
@dataclass
class RagIndexManifest(Artifact):
    """manifest.json of a RAG index folder, written last by rag/index.py, read by rag/retrieve.py."""

    KIND: ClassVar[str] = "rag-index"
    VERSION: ClassVar[int] = 2
    FILE: ClassVar[str] = "manifest.json"
    PRIVATE: ClassVar[bool] = True

    kind: str
    embedding_model: dict
    embedding: dict
    train: dict
    n: int
    files: dict
    embed_seconds: float = 0.0


# ---------------------------------------------------------------- data split
@dataclass
class SplitRecord(Artifact):
    """split.json, written last by `opclaim data split` (marks the folder complete)."""

    KIND: ClassVar[str] = "split"
    VERSION: ClassVar[int] = 2
    FILE: ClassVar[str] = "split.json"

    source: str
    seed: int
    ratios: list
    counts: dict
    by_month: dict | list


# ---------------------------------------------------------------- evaluation
@dataclass
class EvalMetrics(Artifact):
    """metrics.json of `opclaim eval` (schema opclaim.eval/1 since it was first written).

    `configs` maps "GOLD/CONFIG" to one metrics block; a one-configuration run also repeats its
    block at the top level (kept as `single`). Version 2: a block may carry `routing` (eval
    --calibration: eval/apply_calibration.py, eval/auto_review.py) or `routing_skipped` (why not); version 1
    files are version 2 files without them."""

    KIND: ClassVar[str] = "eval"
    VERSION: ClassVar[int] = 2
    READS: ClassVar[tuple[int, ...]] = (1,)
    FILE: ClassVar[str] = "metrics.json"

    gold_sets: dict
    configs: dict
    references: dict | None = None
    conventions: dict | None = None
    bootstrap: dict | None = None
    single: dict | None = None

    @classmethod
    def from_dict(cls, d, path=None):
        known = {f.name for f in dataclasses.fields(cls)} | {SCHEMA_FIELD}
        top = {k: v for k, v in d.items() if k not in known}
        return super().from_dict({**{k: v for k, v in d.items() if k in known},
                                  **({"single": top} if top else {})}, path)

    def to_dict(self) -> dict:
        d = super().to_dict()
        single = d.pop("single")
        return {**(single or {}), **d}

    def blocks(self) -> dict[str, list[tuple[str, dict]]]:
        """gold set -> [(configuration, block)] in file order."""
        out: dict[str, list] = {}
        for key, block in self.configs.items():
            gold, sep, cfg = key.rpartition("/")
            if not sep and len(self.gold_sets) == 1:  # one gold set: eval keys blocks by config alone
                gold, sep, cfg = next(iter(self.gold_sets)), "/", key
            if not sep or not isinstance(block, dict):
                raise InputError("configuration key is not GOLD/CONFIG", file=self.FILE, field=f"configs.{key}")
            out.setdefault(gold, []).append((cfg, block))
        return out


# ---------------------------------------------------------------- demo stages
@dataclass
class DemoStage(Artifact):
    """runs/demo/stages/<stage>.json: what a finished demo stage was computed from.

    `fingerprint` digests `inputs` (config values and upstream fingerprints); a stage whose
    fingerprint differs, or whose record is missing, runs again, and so does everything after it."""

    KIND: ClassVar[str] = "demo-stage"
    VERSION: ClassVar[int] = 1

    stage: str
    fingerprint: str
    inputs: dict
    finished: str = ""


def fingerprint(inputs: dict) -> str:
    return hashlib.sha256(json.dumps(_plain(inputs), sort_keys=True, default=str).encode()).hexdigest()[:16]


ALL = (ModelSource, TrainRun, MergeRecord, InferRun, BundleManifest, RagIndexManifest, SplitRecord,
       EvalMetrics, DemoStage)


# ---------------------------------------------------------------- shell scripts
def main(argv=None) -> int:
    """`python -m opclaim.artifacts train-finished DIR`: for slurm/*.sbatch. Exit 0 when DIR holds a
    finished training run's record this version reads, 1 when it has none, 2 when it is refused."""
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] != "train-finished":
        sys.stderr.write("usage: python -m opclaim.artifacts train-finished DIR\n")
        return 2
    if not (Path(argv[1]) / TrainRun.FILE).is_file():
        return 1
    try:
        load(TrainRun, argv[1])
    except InputError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
