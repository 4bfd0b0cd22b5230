"""Batched greedy decoding against the study's one-prompt-at-a-time loop, same prompts, same model.

    opclaim models pull smollm2-135m --out runs/models/smollm2-135m        # once, ~30 s
    python -m bench.bench_infer                                 # 16 short synthetic notes: a few minutes
    python -m bench.bench_infer --n 32 --batch-size 16 32 --max-new-tokens 256 --threads 1   # decode-heavy

The baseline is the study's loop: HF generate() with one prompt at a time and transformers' stock
SDPA attention. The batched side is `opclaim infer`'s engine, infer.engines with --decoder
(default `loop`: infer.decode, which prefills a shared prompt prefix once, decodes with
`sdpa_decode` and drops finished rows; `generate`: HF generate with left padding). Both use the
study's settings (greedy, repetition penalty 1.1). Rows per batch size: tokens/s by wall time and
by CPU time (CPU time depends less on what else runs on a shared machine), and the share of
outputs identical to the one-at-a-time outputs."""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import opclaim  # noqa: F401  (offline environment first)


def _cpu() -> float:
    return time.process_time() + resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime


def cases(n: int, seed: int = 0, length: str = "short"):
    from opclaim.synth import generate_cases

    return generate_cases(n, seed, style="dictation", length=length)


def _decode_all(loaded, prompts_text, batch_size, max_new_tokens, decoder="generate"):
    """Outputs in input order, plus (wall s, cpu s, generated tokens)."""
    from infer import engines, run

    lengths = [len(loaded.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts_text]
    outs = [None] * len(prompts_text)
    t0, c0 = time.perf_counter(), _cpu()
    for batch in run.buckets(lengths, batch_size):
        texts, _ = engines.generate_batch(loaded, [prompts_text[i] for i in batch], max_new_tokens=max_new_tokens,
                                           decoder=decoder)
        for i, t in zip(batch, texts, strict=False):
            outs[i] = t
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    tokens = sum(len(loaded.tokenizer(o, add_special_tokens=False)["input_ids"]) for o in outs)
    return outs, wall, cpu, tokens


def first_difference(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _compare(args, batch_size, one, batched) -> list[dict]:
    """Rows for one batch size: batched against one at a time."""
    import torch

    (seq, sw, sc, stok), (bat, bw, bc, btok) = one, batched
    same = sum(a == b for a, b in zip(seq, bat, strict=False))
    diffs = [first_difference(a, b) for a, b in zip(seq, bat, strict=False) if a != b]
    note = (f"n={args.n} max_new={args.max_new_tokens} mode={args.mode} notes={args.length} "
            f"decoder={args.decoder} threads={torch.get_num_threads()}; tokens {stok} vs {btok}")
    at = f", batch {batch_size}"
    return [
        {"name": "tokens/s (wall)" + at, "baseline": round(stok / sw, 2), "value": round(btok / bw, 2),
         "ratio": round((btok / bw) / (stok / sw), 2), "unit": "tok/s", "note": note},
        {"name": "tokens per CPU second" + at, "baseline": round(stok / sc, 2), "value": round(btok / bc, 2),
         "ratio": round((btok / bc) / (stok / sc), 2), "unit": "tok/cpu-s", "note": "robust to other load"},
        {"name": "identical outputs" + at, "baseline": args.n, "value": same, "ratio": round(same / args.n, 3),
         "unit": "cases", "note": ("differing outputs first differ at characters " + str(sorted(diffs))
                                   + " (fp32 sums in another order flip near-tied greedy picks)")
         if diffs else "all identical"},
    ]


def main(argv=None) -> list[dict]:
    import torch

    from infer import engines, loading, render

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/models/smollm2-135m", help="model folder (default: SmolLM2-135M at runs/models/smollm2-135m)")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, nargs="+", default=[16], help="one or more (one baseline run for all)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--mode", default="base", choices=["base", "finetuned"])
    ap.add_argument("--length", default="short", choices=["short", "real"], help="synthetic note length")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--decoder", default="loop", choices=engines.DECODERS,
                    help="batched side: loop (drops finished rows) or HF generate; the baseline is generate")
    args = ap.parse_args(argv)
    if not Path(args.model, "config.json").is_file():
        sys.exit(f"no model at {args.model}: run `opclaim models pull smollm2-135m --out {args.model}` first")
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = loading.load(args.model)
    cs = cases(args.n, length=args.length)
    prompts_text = render.build_prompts(cs, args.mode, loaded)
    engines.generate_batch(loaded, prompts_text[:1], max_new_tokens=4)  # warm-up
    ours = loaded.model.config._attn_implementation
    loaded.model.set_attn_implementation("sdpa")  # the study's loop: stock attention
    seq, sw, sc, stok = _decode_all(loaded, prompts_text, 1, args.max_new_tokens)
    loaded.model.set_attn_implementation(ours)
    rows = []
    for bs in args.batch_size:
        rows += _compare(args, bs, (seq, sw, sc, stok),
                         _decode_all(loaded, prompts_text, bs, args.max_new_tokens, args.decoder))
    for r in rows:
        print(f"{r['name']:24s} baseline {r['baseline']:>9} value {r['value']:>9} ratio {r['ratio']:>6} "
              f"{r['unit']:10s} {r['note']}")
    return rows


if __name__ == "__main__":
    main()
