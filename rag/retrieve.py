"""Nearest training claims for a note: the library call infer's RAG mode uses.

    from rag.retrieve import Retriever
    r = Retriever.load("runs/rag-index")
    examples = r.examples(note, k=2, exclude_id=case.id)   # list[Claim], nearest first

Loading checks the manifest against the installed embedding model, the files' hashes and
(optionally) the training file, and refuses with the reason on any mismatch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from opclaim.artifacts import RagIndexManifest, load
from opclaim.claim import Claim
from opclaim.errors import InputError
from rag import embed
from rag.index import INDEX_FILE, MANIFEST_FILE, META_FILE, to_gpu


def read_manifest(index_dir) -> dict:
    path = Path(index_dir) / MANIFEST_FILE
    if not Path(index_dir).is_dir():
        raise InputError("index folder not found", file=index_dir)
    if not path.is_file():
        raise InputError("no manifest.json: not an index folder, or an incomplete build", file=path)
    return load(RagIndexManifest, path).to_dict()


def check_manifest(index_dir, manifest: dict, *, train_file=None) -> None:
    """Refuse an index built by another embedding model, from other data, or altered since."""
    path = Path(index_dir) / MANIFEST_FILE
    built, now = manifest.get("embedding_model") or {}, embed.model_identity()
    for key in ("name", "weights_sha256", "dim"):
        if built.get(key) != now[key]:
            raise InputError(f"index was built with another embedding model ({key} {built.get(key)!r}, "
                             f"installed {now[key]!r}); rebuild it with `opclaim rag build`",
                             file=path, field=f"embedding_model.{key}")
    if (manifest.get("embedding") or {}).get("mode") not in embed.MODES:
        raise InputError("unknown embedding mode", file=path, field="embedding.mode")
    for name in (INDEX_FILE, META_FILE):
        want = (manifest.get("files") or {}).get(name)
        f = Path(index_dir) / name
        if not f.is_file():
            raise InputError(f"{name} is missing", file=f)
        if embed.sha256_file(f) != want:
            raise InputError(f"{name} does not match the manifest (changed or from another build)",
                             file=path, field=f"files.{name}")
    if train_file is not None:
        got = embed.sha256_file(train_file)
        if manifest.get("train", {}).get("sha256") != got:
            raise InputError("index was built from another training file (sha256 differs); "
                             "rebuild it with `opclaim rag build`", file=path, field="train.sha256")


class Retriever:
    """A loaded index: FAISS vectors, their ids and claims, and the embedding mode used."""

    def __init__(self, index, ids: list[str], claims: list[Claim], manifest: dict, batch_size: int = 64):
        self.index, self.ids, self.claims, self.manifest = index, ids, claims, manifest
        self.mode = manifest["embedding"]["mode"]
        self.batch_size = batch_size
        self._row = {i: n for n, i in enumerate(ids)}

    @classmethod
    def load(cls, index_dir, *, train_file=None, gpu: bool | None = None, threads: int | None = None,
             batch_size: int = 64) -> Retriever:
        import faiss
        import pyarrow.parquet as pq

        from rag.index import gpu_available

        manifest = read_manifest(index_dir)
        check_manifest(index_dir, manifest, train_file=train_file)
        embed.set_threads(threads)
        index = faiss.read_index(str(Path(index_dir) / INDEX_FILE))
        meta = pq.read_table(Path(index_dir) / META_FILE, columns=["id", "claim"]).to_pydict()
        if index.ntotal != len(meta["id"]) or index.ntotal != manifest.get("n"):
            raise InputError(f"index holds {index.ntotal} vectors but metadata {len(meta['id'])} rows",
                             file=Path(index_dir) / MANIFEST_FILE, field="n")
        if index.ntotal == 0:
            raise InputError("index is empty", file=index_dir)
        claims = [Claim.from_dict(json.loads(c)) for c in meta["claim"]]
        if gpu or (gpu is None and gpu_available()):
            index = to_gpu(index)
        return cls(index, [str(i) for i in meta["id"]], claims, manifest, batch_size)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, case_id) -> bool:
        """Whether the index holds this training id."""
        return str(case_id) in self._row

    def embed(self, notes: list[str], progress: bool = False) -> np.ndarray:
        cleaned = [embed.clean_note(n) for n in notes]
        for i, t in enumerate(cleaned):
            if not t:
                raise InputError(f"query note {i} is empty after cleaning", field="note")
        return embed.embed(cleaned, mode=self.mode, batch_size=self.batch_size, progress=progress)

    def _check_k(self, k: int, excluding: bool) -> None:
        have = len(self) - (1 if excluding else 0)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive integer (got {k!r})", field="k", from_command_line=True)
        if k > have:
            raise InputError(f"k={k} is larger than the index ({have} usable entries)", field="k")

    def search_vectors(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared L2 distances and row indices, nearest first (k <= len(self))."""
        self._check_k(k, False)
        return self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), int(k))

    def search(self, notes: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(distances, indices) of the k nearest training notes per query note."""
        self._check_k(k, False)
        return self.search_vectors(self.embed(list(notes)), k)

    def neighbours(self, vectors: np.ndarray, k: int, exclude_ids=None) -> list[list[tuple[int, float]]]:
        """[(row, squared distance), ...] per query, nearest first, each query's own id left out."""
        exclude_ids = list(exclude_ids) if exclude_ids is not None else [None] * len(vectors)
        if len(exclude_ids) != len(vectors):
            raise InputError("exclude_ids must have one entry per note", field="exclude_ids")
        excluding = any(e is not None and str(e) in self._row for e in exclude_ids)
        self._check_k(k, excluding)
        dist, idx = self.search_vectors(vectors, k + 1 if excluding else k)
        out = []
        for d_row, i_row, ex in zip(dist, idx, exclude_ids, strict=True):
            skip = self._row.get(str(ex)) if ex is not None else None
            hits = [(int(i), float(d)) for d, i in zip(d_row, i_row, strict=True) if i >= 0 and i != skip]
            out.append(hits[:k])
        return out

    def examples_batch(self, notes: list[str], k: int = 2, exclude_ids=None) -> list[list[Claim]]:
        """The claims of the k nearest training notes per note, nearest first."""
        notes = list(notes)
        if not notes:
            return []
        hits = self.neighbours(self.embed(notes), k, exclude_ids)
        return [[self.claims[i] for i, _ in row] for row in hits]

    def examples(self, note: str, k: int = 2, exclude_id: str | None = None) -> list[Claim]:
        return self.examples_batch([note], k, [exclude_id])[0]
