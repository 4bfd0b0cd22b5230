"""Constrained (claim grammar) against free greedy decoding at the same batch size.

    opclaim models pull smollm2-135m --out runs/models/smollm2-135m        # once
    python -m bench.bench_constrain                             # full 74,719-code ICD grammar, 8 notes
    python -m bench.bench_constrain --n 32 --max-new-tokens 256

The first grammar compile is timed separately and excluded; the second load (from the on-disk
cache) is reported too. Rows compare generated tokens per second, since constrained and free
outputs differ in length: the main row per second of decoding (the prefill, the same work in
both, is timed alone and subtracted), the second end to end. Goal: constrained at most 15% slower
(ratio >= 0.85).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import opclaim  # noqa: F401


class _Timed:
    """The grammar, with the time its logits processors spend (matchers + mask) added up."""

    def __init__(self, grammar):
        self.grammar, self.seconds = grammar, 0.0

    def processor(self, batch_size: int):
        t = time.perf_counter()
        inner = self.grammar.processor(batch_size)  # one matcher per row
        self.seconds += time.perf_counter() - t

        def call(input_ids, scores):
            t = time.perf_counter()
            try:
                return inner(input_ids, scores)
            finally:
                self.seconds += time.perf_counter() - t
        return call


def _tok_per_s(loaded, prompts_text, batch_size, max_new_tokens, grammar=None):
    from infer import engines, run

    engine = engines.HFEngine(loaded, grammar=grammar)
    lengths = [engine.count_tokens(p) for p in prompts_text]
    outs = [None] * len(prompts_text)
    t0 = time.perf_counter()
    for batch in run.buckets(lengths, batch_size):
        texts, cut = engine.generate([prompts_text[i] for i in batch], max_new_tokens)
        for i, t, c in zip(batch, texts, cut, strict=False):
            # As `opclaim infer` does: a constrained row cut by the budget loses its half-written code.
            outs[i] = run.trim_incomplete(t) if (c and grammar is not None) else t
    wall = time.perf_counter() - t0
    tokens = sum(engine.count_tokens(o) for o in outs)
    return tokens / wall, tokens, wall, outs


def main(argv=None) -> list[dict]:
    import torch

    from bench.bench_infer import cases
    from infer import constrain, engines, loading, render

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/models/smollm2-135m")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--icd-cohort", type=int, default=0, help="use only the first N billable codes (0 = all)")
    ap.add_argument("--mode", default="base", choices=["base", "finetuned"])
    args = ap.parse_args(argv)
    if not Path(args.model, "config.json").is_file():
        sys.exit(f"no model at {args.model}: run `opclaim models pull smollm2-135m --out {args.model}` first")
    loaded = loading.load(args.model)
    lists = constrain.code_lists()
    if args.icd_cohort:
        lists.icd10 = lists.icd10[: args.icd_cohort]
    with tempfile.TemporaryDirectory(prefix="opclaim-grammar-") as cache:
        first = constrain.for_model(loaded, lists, cache=Path(cache))
        again = constrain.for_model(loaded, lists, cache=Path(cache))
    cs = cases(args.n)
    prompts_text = render.build_prompts(cs, args.mode, loaded)
    engines.generate_batch(loaded, prompts_text[:1], max_new_tokens=4)  # warm-up
    # Prefill is the same work with or without the grammar; timing it alone (one new token) lets
    # the main row compare decoding itself. Constrained claims stop at the grammar's end, often
    # sooner than free text, and tokens / (prefill + decode) would charge that as a slowdown.
    _, _, prefill, _ = _tok_per_s(loaded, prompts_text, args.batch_size, 1)
    free, ftok, fwall, _ = _tok_per_s(loaded, prompts_text, args.batch_size, args.max_new_tokens)
    timed = _Timed(again)
    cons, ctok, cwall, outs = _tok_per_s(loaded, prompts_text, args.batch_size, args.max_new_tokens, timed)
    fdec, cdec = ftok / max(fwall - prefill, 1e-6), ctok / max(cwall - prefill, 1e-6)
    from eval.extract import extract_codes

    codes = [c for o in outs for c in extract_codes(o)["icd10"]]
    fabricated = sum(c not in set(lists.icd10) for c in codes)
    note = (f"n={args.n} batch={args.batch_size} max_new={args.max_new_tokens} icd={len(lists.icd10)} "
            f"cpt={len(lists.cpt)} threads={torch.get_num_threads()}")
    rows = [
        {"name": "decode tokens/s constrained vs free", "baseline": round(fdec, 2), "value": round(cdec, 2),
         "ratio": round(cdec / fdec, 3), "unit": "tok/s",
         "note": note + f"; tokens {ftok} free, {ctok} constrained; prefill {prefill:.1f} s excluded"},
        {"name": "grammar share of constrained decoding", "baseline": round(cwall - prefill, 2),
         "value": round(timed.seconds, 2), "ratio": round(timed.seconds / max(cwall - prefill, 1e-6), 3), "unit": "s",
         "note": "matcher creation, token acceptance, masks; the rest of the gap is the batch thinning as constrained rows finish"},
        {"name": "end-to-end tokens/s (with prefill)", "baseline": round(free, 2), "value": round(cons, 2),
         "ratio": round(cons / free, 3), "unit": "tok/s", "note": f"wall {fwall:.1f} s free, {cwall:.1f} s constrained"},
        {"name": "grammar compile (first)", "baseline": None, "value": round(first.compile_s, 2), "ratio": None,
         "unit": "s", "note": "excluded from the rows above"},
        {"name": "grammar load (cached)", "baseline": round(first.compile_s, 2), "value": round(again.load_s, 2),
         "ratio": round(first.compile_s / max(again.load_s, 1e-6), 1), "unit": "s", "note": "from the disk cache"},
        {"name": "fabricated ICD codes (constrained)", "baseline": len(codes), "value": fabricated,
         "ratio": (fabricated / len(codes)) if codes else None, "unit": "codes", "note": "extracted with eval.extract"},
    ]
    for r in rows:
        print(f"{r['name']:36s} baseline {r['baseline']!s:>9} value {r['value']!s:>9} ratio {r['ratio']!s:>6} "
              f"{r['unit']:6s} {r['note']}")
    return rows


if __name__ == "__main__":
    main()
