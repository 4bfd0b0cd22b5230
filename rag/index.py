"""Build the retrieval index: MiniLM embeddings of training notes in a FAISS IndexFlatL2 (exact,
as in the study), each row's claim as metadata.

An index folder holds
  index.faiss     the FAISS index (faiss.write_index; no pickle)
  meta.parquet    one row per vector: id, claim (JSON), icd10, cpt, modifiers — no note text
  manifest.json   embedding model identity, embedding mode, training data sha256, file hashes
The folder is assembled beside its destination and renamed into place, and the manifest is
written last: a folder without a manifest is incomplete and never loads.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from opclaim.artifacts import RagIndexManifest, save
from opclaim.claim import Case
from opclaim.errors import InputError
from opclaim.io import iter_jsonl
from rag import embed

INDEX_FILE, META_FILE, MANIFEST_FILE = "index.faiss", "meta.parquet", RagIndexManifest.FILE


def cases_sha256(cases: list[Case]) -> str:
    """Hash of the training records themselves (used when they did not come from a file)."""
    h = hashlib.sha256()
    for c in cases:
        h.update(json.dumps(c.to_dict(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _line_numbers(train_file, ids: list[str]) -> dict[str, int]:
    """id -> line in the training file, so errors can name the line (best effort)."""
    if train_file is None:
        return {}
    wanted = set(ids)
    return {str(obj.get("id")): n for n, obj in iter_jsonl(train_file) if str(obj.get("id")) in wanted}


def clean_cases(cases: list[Case], train_file=None) -> list[str]:
    """Cleaned note text per case; InputError (file, line, field 'note') for an empty one."""
    if not cases:
        raise InputError("no training records", file=train_file)
    cleaned = [embed.clean_note(c.note) for c in cases]
    empty = [i for i, t in enumerate(cleaned) if not t]
    if empty:
        c = cases[empty[0]]
        line = _line_numbers(train_file, [c.id]).get(c.id)
        more = f" ({len(empty)} such records)" if len(empty) > 1 else ""
        raise InputError(f"note is empty after cleaning (record id {c.id}){more}",
                         file=train_file, line=line, field="note")
    return cleaned


def make_faiss_index(vectors: np.ndarray, *, gpu: bool | None = None):
    """IndexFlatL2 holding `vectors`; on GPUs when asked (or auto when FAISS sees any)."""
    import faiss

    index = faiss.IndexFlatL2(vectors.shape[1])
    index.add(vectors)
    return to_gpu(index) if gpu or (gpu is None and gpu_available()) else index


def gpu_available() -> bool:
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def to_gpu(index):
    """Optional GPU copy of a CPU index (faiss-gpu builds only); never required."""
    import faiss

    if not gpu_available():
        raise InputError("no GPU FAISS available (faiss-cpu build or no GPU)")
    return faiss.index_cpu_to_all_gpus(index)


def _write_meta(path: Path, cases: list[Case]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "id": [c.id for c in cases],
        "claim": [json.dumps(c.claim.to_dict(), ensure_ascii=False) for c in cases],
        "icd10": [sorted(c.claim.icd10_set()) for c in cases],
        "cpt": [sorted(c.claim.cpt_set()) for c in cases],
        "modifiers": [sorted(c.claim.modifier_set()) for c in cases],
    })
    pq.write_table(table, path)


def _check_replaceable(out: Path) -> None:
    """Only an earlier index folder (or an empty one) is overwritten, never other data."""
    if not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST_FILE).is_file()):
        raise InputError("exists and is not an index folder; choose another --out", file=out)


def build_index(cases: list[Case], out_dir, *, mode: str = "truncate", batch_size: int = 64,
                threads: int | None = None, train_file=None, progress: bool = True) -> Path:
    """Embed `cases`' notes and write an index folder at `out_dir` (replaced if it exists)."""
    import faiss

    if mode not in embed.MODES:
        raise InputError(f"unknown embedding mode {mode!r}; known: {', '.join(embed.MODES)}", field="mode",
                         from_command_line=True)
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise InputError("duplicate ids in the training records", file=train_file, field="id")
    notes = clean_cases(cases, train_file)
    if Path(out_dir).exists():
        _check_replaceable(Path(out_dir))  # fail before the slow part
    embed.set_threads(threads)
    t0 = time.perf_counter()
    vectors = embed.embed(notes, mode=mode, batch_size=batch_size, progress=progress)
    embed_s = time.perf_counter() - t0
    index = make_faiss_index(vectors, gpu=False)  # stored on CPU; Retriever may move it to a GPU

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".part", dir=out.parent))
    try:
        os.chmod(tmp, 0o700)
        faiss.write_index(index, str(tmp / INDEX_FILE))
        _write_meta(tmp / META_FILE, cases)
        for name in (INDEX_FILE, META_FILE):
            os.chmod(tmp / name, 0o600)
        if train_file is not None:
            train = {"source": "file", "name": Path(train_file).name,
                     "sha256": embed.sha256_file(train_file)}
        else:
            train = {"source": "cases", "sha256": cases_sha256(cases)}
        manifest = RagIndexManifest(
            kind="faiss.IndexFlatL2",
            embedding_model=embed.model_identity(),
            embedding={"mode": mode, "max_seq_length": embed.load_model().max_seq_length,
                       "normalized": True, "cleaning": "NFKC, control/zero-width removed, spaces collapsed"},
            train=train,
            n=len(cases),
            files={name: embed.sha256_file(tmp / name) for name in (INDEX_FILE, META_FILE)},
            embed_seconds=round(embed_s, 3),
        )
        save(manifest, tmp / MANIFEST_FILE)
        if out.exists():
            _check_replaceable(out)
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
