"""Packed (BFD, padding-free rows) vs padded batches: LoRA training tokens/s on SmolLM2.

Same examples, same loss (summed over claim tokens, prompt masked), same LoRA settings as the
demo recipe; only the batching differs. Padded: `batch` examples per step, padded to the longest.
Packed: TRL's `pack_dataset(..., "bfd")` into rows of `max_length` tokens, `rows` rows per step,
sequence boundaries carried by position_ids (transformers builds a block-diagonal mask from them).
Tokens/s counts real (non-pad) tokens. Both wall-clock and process-CPU-time rates are reported:
on a shared machine the CPU-time rate is the steadier one.

    python -m bench.bench_packing                       # 16 short notes, SmolLM2 at runs/models/smollm2-135m
    python -m bench.bench_packing --n 64 --model models/smollm2 --batch 4
The model comes from `opclaim models pull smollm2-135m --out runs/models/smollm2-135m`.
"""

from __future__ import annotations

import argparse
import time

import opclaim  # noqa: F401  (offline first)

GOAL = 1.3


def examples(n: int, tok, seed: int) -> list[dict]:
    """Half dictation, half terse notes: op notes vary in length, which is what packing exploits."""
    from opclaim.synth import generate_cases
    from prompts import detect_format, encode, training_pair

    fmt = detect_format(tok)
    cases = generate_cases(n - n // 2, seed, style="dictation", length="short") + \
        generate_cases(n // 2, seed + 1, style="terse", length="short", id_prefix="t")
    rows = []
    for c in cases:
        pair = training_pair(c.note, c.claim, fmt=fmt, tokenizer=tok)
        p_ids = encode(tok, pair["prompt"])
        ids = encode(tok, pair["prompt"] + pair["completion"])
        rows.append({"input_ids": ids, "labels": [-100] * len(p_ids) + ids[len(p_ids):]})
    return rows


def padded_batches(rows, batch, pad_id):
    import torch

    for i in range(0, len(rows), batch):
        chunk = rows[i:i + batch]
        width = max(len(r["input_ids"]) for r in chunk)
        ids = torch.full((len(chunk), width), pad_id)
        labels = torch.full((len(chunk), width), -100)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, r in enumerate(chunk):
            n = len(r["input_ids"])
            ids[j, :n], labels[j, :n], mask[j, :n] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
        yield {"input_ids": ids, "labels": labels, "attention_mask": mask}, int(mask.sum())


def packed_batches(rows, per_step, max_length, pad_id):
    from datasets import Dataset
    from trl.data_utils import pack_dataset
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    packed = pack_dataset(Dataset.from_list(rows), max_length, "bfd")
    collate = DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=True)
    packed = list(packed)
    for i in range(0, len(packed), per_step):
        chunk = packed[i:i + per_step]
        batch = collate(chunk)
        yield {k: batch[k] for k in ("input_ids", "labels", "position_ids")}, sum(len(r["input_ids"]) for r in chunk)


def run(model, batches) -> tuple[float, float, int]:
    import torch

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    tokens, wall, cpu = 0, 0.0, 0.0
    for batch, n in batches:
        t0, c0 = time.perf_counter(), time.process_time()
        out = model(**batch)
        # Sum over claim tokens: identical loss definition for both batchings.
        loss = out.loss * (batch["labels"][:, 1:] != -100).sum()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        tokens += n
    return tokens / wall, tokens / cpu, tokens


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="runs/models/smollm2-135m", help="SmolLM2 folder (opclaim models pull smollm2-135m)")
    ap.add_argument("--n", type=int, default=16, help="examples (half dictation, half terse)")
    ap.add_argument("--batch", type=int, default=4, help="examples per padded step")
    ap.add_argument("--max-length", type=int, default=2048, help="packed row length")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import torch
    from peft import get_peft_model

    from opclaim.registry import load_model, load_tokenizer
    from train.config import ModelArgs
    from train.model import lora_config

    tok = load_tokenizer(args.model)
    rows = examples(args.n, tok, args.seed)
    longest = max(len(r["input_ids"]) for r in rows)
    if args.max_length < longest:
        raise SystemExit(f"--max-length {args.max_length} is shorter than the longest example ({longest})")
    mean = sum(len(r["input_ids"]) for r in rows) / len(rows)
    # Packed steps carry about as many real tokens as padded steps do.
    per_step = max(1, round(args.batch * mean / args.max_length))
    results = {}
    for name in ("padded", "packed"):
        torch.manual_seed(args.seed)
        model = load_model(args.model, dtype=torch.float32, attn_implementation="sdpa")
        model.config.use_cache = False
        model = get_peft_model(model, lora_config(ModelArgs(model_name_or_path=args.model)))
        model.train()
        batches = (padded_batches(rows, args.batch, tok.pad_token_id) if name == "padded"
                   else packed_batches(rows, per_step, args.max_length, tok.pad_token_id))
        results[name] = run(model, batches)
        del model
    (pw, pc, n), (kw, kc, _) = results["padded"], results["packed"]
    note = f"{args.n} examples, {n} tokens, mean {mean:.0f}/max {longest}; goal >= {GOAL}x"
    return [
        {"name": "packing: tokens/s (wall)", "baseline": f"{pw:.1f}", "value": f"{kw:.1f}",
         "ratio": f"{kw / pw:.2f}", "unit": "tok/s", "note": note},
        {"name": "packing: tokens/s (CPU time)", "baseline": f"{pc:.1f}", "value": f"{kc:.1f}",
         "ratio": f"{kc / pc:.2f}", "unit": "tok/cpu-s", "note": f"batch {args.batch} padded vs "
         f"{per_step} x {args.max_length}-token packed rows per step"},
    ]


if __name__ == "__main__":
    from bench import print_table

    print_table(main())
