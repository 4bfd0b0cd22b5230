"""Padding-free vs padded batches: LoRA training tokens/s on SmolLM2, same examples, same loss.

Both runs see the same examples, shuffled once, `--batch` examples per optimizer step, the same
LoRA settings as the demo recipe (r=64, every linear + lm_head, fp32 on CPU) and the same loss
(mean NLL over claim tokens, prompt masked). Only the batching differs:

- padded: TRL's collator, dynamic padding to the longest example of each step, `sdpa` attention;
- padding-free: TRL's padding-free collator, the same examples concatenated into one row with no
  padding (position_ids + cu_seq_lens mark the boundaries), `sdpa_varlen` attention
  (train/attention.py: causal SDPA per example, what `padding_free: true` selects on CPU).

`--with-sdpa-mask` adds the padding-free row under stock `sdpa` (a T x T block-diagonal mask from
position_ids), the path this benchmark used to measure (memory-hungry: the masked attention over
the whole row). Tokens/s counts real (non-pad) tokens; wall-clock and process-CPU-time rates are both reported (on a shared machine CPU time is
steadier). Before timing, one forward/backward on the first step's examples checks that the
batchings agree: summed claim-token loss and LoRA gradients (dropout off for this check, since
its random masks depend on the batch shape). The per-step losses of the timed runs (same initial
adapter, same optimizer, LoRA dropout on as in the demo) are reported too.

    flock /tmp/opclaim-cpu.lock python -m bench.bench_packing            # 8 real-length notes, 2 per step (the demo's batch)
    flock /tmp/opclaim-cpu.lock python -m bench.bench_packing --n 16 --batch-size 4 --length short
Memory: without gradient checkpointing, LoRA r=64 on every linear + lm_head keeps a few MB of
activations per token slot; a padded step of 4 real notes (~6,800 slots) was OOM-killed at 24 GB
on this 23 GB machine, 2 real notes or 4 short ones run. Padding-free holds fewer slots.
The model comes from `opclaim models pull smollm2-135m --out runs/models/smollm2-135m`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time

import opclaim  # noqa: F401  (offline first)

GOAL = 1.3
LOSS_RTOL = 1e-4  # summed loss, padded vs padding-free, same weights
GRAD_RTOL = 1e-3  # max |grad difference| / max |grad|


def examples(n: int, tok, seed: int, length: str) -> list[dict]:
    """Half dictation, half terse notes, shuffled: op notes vary in length, which padding wastes."""
    from opclaim.synth import generate_cases
    from prompts import detect_format, encode, training_pair

    fmt = detect_format(tok)
    cases = generate_cases(n - n // 2, seed, style="dictation", length=length) + \
        generate_cases(n // 2, seed + 1, style="terse", length=length, id_prefix="t")
    random.Random(seed).shuffle(cases)
    rows = []
    for c in cases:
        pair = training_pair(c.note, c.claim, fmt=fmt, tokenizer=tok)
        p_ids = encode(tok, pair["prompt"])
        ids = encode(tok, pair["prompt"] + pair["completion"])
        rows.append({"input_ids": ids, "labels": [-100] * len(p_ids) + ids[len(p_ids):]})
    return rows


def batches(rows, batch: int, pad_id: int, padding_free: bool) -> list[dict]:
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=padding_free)
    return [collate(rows[i:i + batch]) for i in range(0, len(rows), batch)]


def claim_tokens(b) -> int:
    return int((b["labels"][:, 1:] != -100).sum())


def real_tokens(b) -> int:
    return int(b["attention_mask"].sum()) if "attention_mask" in b else int(b["input_ids"].numel())


def build(model_dir: str, attn: str, seed: int):
    import torch
    from peft import get_peft_model

    from opclaim.registry import load_model
    from train.config import ModelArgs
    from train.model import attention_impl, lora_config

    torch.manual_seed(seed)  # the same LoRA initialisation for every variant
    model = load_model(model_dir, dtype=torch.float32, attn_implementation=attention_impl(attn))
    model.config.use_cache = False
    model = get_peft_model(model, lora_config(ModelArgs(model_name_or_path=model_dir)))
    model.train()
    return model


def check(model, batch) -> tuple:
    """Summed claim-token loss and the LoRA gradient of one step, without updating the model.
    LoRA dropout is off here (eval mode): its random masks depend on the batch's shape."""
    import torch

    model.eval()
    out = model(**batch)
    (out.loss * claim_tokens(batch)).backward()
    grads = [p.grad.detach().flatten().clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad(set_to_none=True)
    model.train()
    return out.loss.item() * claim_tokens(batch), torch.cat(grads)


def train(model, steps) -> dict:
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tokens, wall, cpu, losses = 0, 0.0, 0.0, []
    for batch in steps:
        t0, c0 = time.perf_counter(), time.process_time()
        out = model(**batch)
        out.loss.backward()  # mean over the step's claim tokens, as the Trainer does
        opt.step()
        opt.zero_grad(set_to_none=True)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        tokens += real_tokens(batch)
        losses.append(out.loss.item() * claim_tokens(batch))
    return {"wall": tokens / wall, "cpu": tokens / cpu, "tokens": tokens, "losses": losses}


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/models/smollm2-135m", help="SmolLM2 folder (opclaim models pull smollm2-135m)")
    ap.add_argument("--n", type=int, default=8, help="examples (half dictation, half terse, shuffled)")
    ap.add_argument("--batch-size", type=int, default=2, help="examples per optimizer step, both batchings")
    ap.add_argument("--length", choices=("real", "short"), default="real", help="synthetic note length")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--with-sdpa-mask", action="store_true",
                    help="also time padding-free rows under stock sdpa (block-diagonal mask)")
    args = ap.parse_args(argv)

    import torch

    from opclaim.registry import load_tokenizer

    tok = load_tokenizer(args.model)
    rows = examples(args.n, tok, args.seed, args.length)
    lens = [len(r["input_ids"]) for r in rows]
    variants = [("padded", "sdpa", False), ("padding-free", "sdpa_varlen", True)]
    if args.with_sdpa_mask:
        variants.append(("padding-free, sdpa mask", "sdpa", True))
    res, checks = {}, {}
    for name, attn, pf in variants:
        steps = batches(rows, args.batch_size, tok.pad_token_id, pf)
        model = build(args.model, attn, args.seed)
        checks[name] = check(model, steps[0])
        res[name] = train(model, steps)
        res[name]["width"] = sum(s["input_ids"].numel() for s in steps)  # tokens the linear layers process
        del model
        r = res[name]
        print(f"bench_packing: {name} ({attn}): {r['wall']:.1f} tok/s wall, {r['cpu']:.1f} tok/cpu-s, step-1 "
              f"summed loss {checks[name][0]:.4f}", file=sys.stderr, flush=True)

    base, pf = res["padded"], res["padding-free"]
    assert base["tokens"] == pf["tokens"], (base["tokens"], pf["tokens"])
    (l0, g0), (l1, g1) = checks["padded"], checks["padding-free"]
    loss_rel = abs(l1 - l0) / abs(l0)
    grad_rel = float((g1 - g0).abs().max() / g0.abs().max())
    step_rel = max(abs(a - b) / abs(a) for a, b in zip(base["losses"], pf["losses"], strict=True))
    agree = loss_rel <= LOSS_RTOL and grad_rel <= GRAD_RTOL
    shape = (f"{args.n} {args.length} notes ({min(lens)}-{max(lens)} tokens, mean {sum(lens) / len(lens):.0f}), "
             f"{args.batch_size} per step; padded steps hold {base['width']} token slots for {base['tokens']} tokens")
    out = [
        {"name": "padding-free: tokens/s (wall)", "baseline": f"{base['wall']:.1f}", "value": f"{pf['wall']:.1f}",
         "ratio": f"{pf['wall'] / base['wall']:.2f}", "unit": "tok/s", "note": f"goal >= {GOAL}x; {shape}"},
        {"name": "padding-free: tokens/s (CPU time)", "baseline": f"{base['cpu']:.1f}", "value": f"{pf['cpu']:.1f}",
         "ratio": f"{pf['cpu'] / base['cpu']:.2f}", "unit": "tok/cpu-s",
         "note": f"goal >= {GOAL}x; padded = sdpa, padding-free = sdpa_varlen; torch {torch.get_num_threads()} threads"},
        {"name": "padding-free: summed claim loss, step 1", "baseline": f"{l0:.4f}", "value": f"{l1:.4f}",
         "ratio": f"{1 + (l1 - l0) / l0:.6f}", "unit": "nats",
         "note": (f"{'AGREE' if agree else 'DISAGREE'}: loss rel diff {loss_rel:.1e} (tol {LOSS_RTOL:g}), "
                  f"LoRA grad max diff / max grad {grad_rel:.1e} (tol {GRAD_RTOL:g}); "
                  f"per-step losses over {len(base['losses'])} optimizer steps within {step_rel:.1e}")},
    ]
    if "padding-free, sdpa mask" in res:
        m = res["padding-free, sdpa mask"]
        lm, _ = checks["padding-free, sdpa mask"]
        out.append({"name": "padding-free under stock sdpa (block mask): tokens/s (CPU time)",
                    "baseline": f"{base['cpu']:.1f}", "value": f"{m['cpu']:.1f}", "ratio": f"{m['cpu'] / base['cpu']:.2f}",
                    "unit": "tok/cpu-s", "note": f"wall ratio {m['wall'] / base['wall']:.2f}; step-1 loss {lm:.4f}"})
    if not agree:
        raise RuntimeError("bench_packing: padded and padding-free losses/gradients disagree:\n" +
                         "\n".join(f"{r['name']}: {r['note']}" for r in out))
    return out


if __name__ == "__main__":
    from bench import print_table

    print_table(main())
