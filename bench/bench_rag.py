"""Retrieval benchmark: FAISS IndexFlatL2 against numpy brute-force top-k and against
sentence-transformers' `util.semantic_search`, on the same unit-length embeddings, with the
neighbours asserted identical; plus MiniLM embedding throughput and the truncate-vs-chunk
retrieval comparison on the synthetic corpus.

    python -m bench.bench_rag                      # a few minutes on 2 CPU cores
    python -m bench.bench_rag --n 115000 --queries 2000 --notes 1000   # the study's scale

Rows: baseline = numpy brute force (search) or truncate (embedding / retrieval quality).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

import opclaim  # noqa: F401  (offline environment first)

DIM = 384


def _unit(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def _timed(fn, repeat: int = 3):
    """Best wall time of `repeat` runs (less noise from other jobs on a shared machine)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def numpy_topk(corpus: np.ndarray, queries: np.ndarray, k: int, block: int = 256):
    """Exact squared-L2 top-k by matrix product, in query blocks to bound memory."""
    norms = (corpus.astype(np.float32) ** 2).sum(1)
    dist_all, idx_all = [], []
    for s in range(0, len(queries), block):
        q = queries[s:s + block]
        d = norms[None, :] - 2.0 * (q @ corpus.T) + (q ** 2).sum(1)[:, None]
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        pd = np.take_along_axis(d, part, 1)
        order = np.argsort(pd, axis=1, kind="stable")
        idx_all.append(np.take_along_axis(part, order, 1))
        dist_all.append(np.take_along_axis(pd, order, 1))
    return np.vstack(dist_all), np.vstack(idx_all)


def st_topk(corpus, queries, k):
    import torch
    from sentence_transformers import util

    hits = util.semantic_search(torch.from_numpy(queries), torch.from_numpy(corpus), top_k=k)
    idx = np.array([[h["corpus_id"] for h in row] for row in hits])
    cos = np.array([[h["score"] for h in row] for row in hits], dtype=np.float32)
    return 2.0 - 2.0 * cos, idx  # unit vectors: squared L2 = 2 - 2 cos


def assert_same_neighbours(corpus, queries, ref, got, name: str, tol: float = 1e-4) -> int:
    """Identical neighbours: the returned rows' exact (float64) distances equal the reference's,
    so two lists can differ only by swapping rows whose distances tie within float rounding.
    Returns the number of queries whose index lists differ at all."""
    (rd, ri), (gd, gi) = ref, got
    np.testing.assert_allclose(gd, rd, atol=tol, err_msg=f"{name}: distances differ")
    exact = ((queries[:, None, :].astype(np.float64) - corpus[gi].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_allclose(exact, rd, atol=tol, err_msg=f"{name}: different neighbours")
    return int((ri != gi).any(axis=1).sum())


def _blas_threads(threads: int | None):
    import contextlib

    if not threads:
        return contextlib.nullcontext()
    try:  # comes with scikit-learn, a sentence-transformers dependency
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(limits=threads, user_api="blas")


def search_rows(corpus, queries, k, label: str, threads: int | None) -> list[dict]:
    import faiss
    import torch

    if threads:
        faiss.omp_set_num_threads(threads)
        torch.set_num_threads(threads)
    t_build, _ = _timed(lambda: faiss_index_only(corpus))
    with _blas_threads(threads):  # the same thread count for numpy's BLAS, for a fair baseline
        t_np, ref = _timed(lambda: numpy_topk(corpus, queries, k))
    t_fa, fa = _timed(lambda: _search_only(corpus, queries, k))
    t_st, st = _timed(lambda: st_topk(corpus, queries, k))
    ties_f = assert_same_neighbours(corpus, queries, ref, fa, f"faiss vs numpy ({label})")
    ties_s = assert_same_neighbours(corpus, queries, ref, st, f"semantic_search vs numpy ({label})")
    nq = len(queries)
    shape = f"{len(corpus)}x{corpus.shape[1]}, {nq} queries, k={k}"
    return [
        {"name": f"{label}: index build (IndexFlatL2.add)", "baseline": None, "value": round(t_build, 6),
         "ratio": None, "unit": "s", "note": f"{shape}; {corpus.nbytes / 2**20:.1f} MiB of vectors"},
        {"name": f"{label}: faiss flat-L2 queries/s", "baseline": round(nq / t_np, 1),
         "value": round(nq / t_fa, 1), "ratio": round(t_np / t_fa, 2), "unit": "queries/s",
         "note": f"baseline numpy brute force; identical neighbours ({ties_f} queries with tie reorderings)"},
        {"name": f"{label}: semantic_search queries/s", "baseline": round(nq / t_np, 1),
         "value": round(nq / t_st, 1), "ratio": round(t_np / t_st, 2), "unit": "queries/s",
         "note": f"baseline numpy brute force; identical neighbours ({ties_s} queries with tie reorderings)"},
    ]


_INDEX_CACHE: dict = {}


def faiss_index_only(corpus):
    import faiss

    index = faiss.IndexFlatL2(corpus.shape[1])
    index.add(corpus)
    _INDEX_CACHE["index"] = index
    return index


def _search_only(corpus, queries, k):
    return _INDEX_CACHE["index"].search(queries, k)


def cpt_overlap(retr, cases, k: int = 2) -> float:
    """Share of neighbours (own id excluded) whose CPT set overlaps the query's."""
    hits = retr.neighbours(retr.index.reconstruct_n(0, retr.index.ntotal), k, [c.id for c in cases])
    row = {c.id: i for i, c in enumerate(cases)}
    good = total = 0
    for c, h in zip(cases, hits, strict=True):
        for r, _ in h:
            good += bool(cases[row[retr.ids[r]]].claim.cpt_set() & c.claim.cpt_set())
            total += 1
    return good / total


def real_rows(n_notes: int, k: int, threads: int | None, batch_size: int) -> list[dict]:
    """MiniLM on synthetic notes: embedding throughput and retrieval quality, truncate vs chunk."""
    import tempfile

    from opclaim.synth import generate_cases
    from rag import embed
    from rag.index import build_index
    from rag.retrieve import Retriever

    rows, q = [], {}
    cases = generate_cases(n_notes, seed=7, style="dictation")
    model = embed.load_model()
    lengths = [len(model.tokenizer(c.note, add_special_tokens=False, verbose=False)["input_ids"]) for c in cases]
    over = float(np.mean([n > model.max_seq_length - 2 for n in lengths]))
    secs = {}
    with tempfile.TemporaryDirectory() as d:
        for mode in ("truncate", "chunk"):
            t0 = time.perf_counter()
            build_index(cases, f"{d}/{mode}", mode=mode, batch_size=batch_size, threads=threads, progress=False)
            secs[mode] = time.perf_counter() - t0
            r = Retriever.load(f"{d}/{mode}")
            q[mode] = cpt_overlap(r, cases, k)
            if mode == "truncate":
                vecs = r.index.reconstruct_n(0, r.index.ntotal)
                rows += search_rows(vecs, vecs[: min(200, len(vecs))], k + 1, f"MiniLM {len(vecs)} notes", threads)
    note = (f"{n_notes} synthetic dictation notes, median {int(np.median(lengths))} word pieces, "
            f"{over:.0%} longer than the 256-piece window")
    rows.append({"name": "MiniLM embedding notes/s (chunk vs truncate)", "baseline": round(n_notes / secs["truncate"], 2),
                 "value": round(n_notes / secs["chunk"], 2), "ratio": round(secs["truncate"] / secs["chunk"], 2),
                 "unit": "notes/s", "note": note + "; includes index write"})
    rows.append({"name": f"CPT-overlap share of top-{k} neighbours (chunk vs truncate)",
                 "baseline": round(q["truncate"], 4), "value": round(q["chunk"], 4),
                 "ratio": round(q["chunk"] / q["truncate"], 3) if q["truncate"] else None, "unit": "share",
                 "note": "leave-one-out over the corpus (own id excluded); higher is better"})
    return rows


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000, help="random corpus vectors (study scale: 115000; 0: skip)")
    ap.add_argument("--queries", type=int, default=500, help="random query vectors")
    ap.add_argument("--k", type=int, default=2, help="neighbours (the study's RAG uses 2)")
    ap.add_argument("--notes", type=int, default=200, help="synthetic notes for the real-MiniLM run (0: skip)")
    ap.add_argument("--threads", type=int, help="torch/FAISS threads")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", action="store_true", help="also print rows as JSON lines")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    corpus = _unit(rng.standard_normal((max(args.n, 1), DIM)))
    queries = _unit(rng.standard_normal((args.queries, DIM)))
    rows = search_rows(corpus, queries, args.k, f"random {args.n}", args.threads) if args.n else []
    if args.notes:
        rows += real_rows(args.notes, args.k, args.threads, args.batch_size)
    if args.json:
        for r in rows:
            print(json.dumps(r))
    return rows


if __name__ == "__main__":
    from bench import print_table

    print_table(main())
