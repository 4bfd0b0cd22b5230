"""Inference: merge adapters, batched greedy decoding, decoding constrained to valid codes,
data-parallel runs across processes, and an optional vLLM engine.

    opclaim infer --model DIR [--adapter DIR] --mode finetuned --cases test.jsonl --out preds.jsonl
    accelerate launch --num_processes 2 -m infer --model DIR --mode base --cases F --out preds.jsonl
    opclaim merge --model DIR --adapter DIR --out DIR
"""
