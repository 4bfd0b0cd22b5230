"""Format fidelity: ROUGE-L, ROUGE-Lsum (rouge-score) and METEOR (nltk + WordNet 3.0).

The per-case values come from the libraries' own functions, exactly as docs/design.md defines them;
a process pool only splits the cases into ordered chunks, so the values equal a plain loop.
Without WordNet, METEOR is None with a reason, never computed some other way.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor

import opclaim  # noqa: F401  (offline environment)


@functools.lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL", "rougeLsum"], use_stemmer=False)


@functools.lru_cache(maxsize=1)
def meteor_unavailable() -> str | None:
    """None when nltk can load WordNet, else the reason METEOR is not reported."""
    try:
        from nltk.corpus import wordnet

        wordnet.ensure_loaded()
        version = wordnet.get_version()
    except LookupError:
        return ("WordNet 3.0 is not installed for nltk (install Debian wordnet-base and "
                "wordnet-sense-index, then `python -m opclaim.wordnet --out .venv/nltk_data`)")
    except Exception as e:  # noqa: BLE001 - a broken corpus is also "unavailable"
        return f"WordNet could not be loaded ({type(e).__name__})"
    if version != "3.0":
        return f"WordNet {version} found; METEOR is defined with WordNet 3.0"
    return None


def score_pair(gold: str, output: str, meteor: bool = True) -> tuple[float, float, float | None]:
    """(rougeL F, rougeLsum F, METEOR or None) for one case."""
    s = _scorer().score(target=gold, prediction=output)
    m = None
    if meteor:
        from nltk.translate.meteor_score import meteor_score

        m = float(meteor_score([gold.split()], output.split()))
    return float(s["rougeL"].fmeasure), float(s["rougeLsum"].fmeasure), m


def _score_chunk(args) -> list[tuple[float, float, float | None]]:
    pairs, meteor = args
    return [score_pair(g, o, meteor) for g, o in pairs]


def score_loop(golds: list[str], outputs: list[str], meteor: bool | None = None) -> list[tuple]:
    """The plain single-process loop (the reference the parallel path must equal)."""
    if meteor is None:
        meteor = meteor_unavailable() is None
    return _score_chunk((list(zip(golds, outputs, strict=False)), meteor))


def score_all(golds: list[str], outputs: list[str], workers: int | None = None,
              min_parallel: int = 2000, chunk: int = 500) -> list[tuple]:
    """Per-case scores, in order, equal to `score_loop`. Repeated (gold, output) pairs (exact
    copies of the target are common for a fine-tuned model) are scored once; large inputs are
    split into ordered chunks over a process pool."""
    if len(golds) != len(outputs):
        raise ValueError("golds and outputs differ in length")
    meteor = meteor_unavailable() is None
    workers = workers or min(len(os.sched_getaffinity(0)), 8)
    pairs = list(zip(golds, outputs, strict=False))
    unique = list(dict.fromkeys(pairs))
    n = len(unique)
    if workers <= 1 or n < min_parallel:
        scored = _score_chunk((unique, meteor))
    else:
        chunks = [(unique[i:i + chunk], meteor) for i in range(0, n, chunk)]
        # fork shares the already-imported libraries and loaded WordNet with the workers.
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        scored = []
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for part in pool.map(_score_chunk, chunks):
                scored.extend(part)
    by_pair = dict(zip(unique, scored, strict=False))
    return [by_pair[p] for p in pairs]


def means(scores: list[tuple]) -> dict:
    """Mean ROUGE-L, ROUGE-Lsum and METEOR (None + reason when WordNet is missing)."""
    n = len(scores)
    reason = meteor_unavailable()
    res = {"rougeL": sum(s[0] for s in scores) / n if n else None,
           "rougeLsum": sum(s[1] for s in scores) / n if n else None,
           "meteor": None if reason or not n else sum(s[2] for s in scores) / n}
    if reason:
        res["meteor_unavailable"] = reason
    return res
