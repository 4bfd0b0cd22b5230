"""Inference: merge adapters, batched greedy decoding, decoding constrained to valid codes,
data-parallel runs across processes, and an optional vLLM engine.

    opclaim infer --model DIR [--adapter DIR] --mode finetuned --cases test.jsonl --out preds.jsonl
    accelerate launch --num_processes 2 -m infer --model DIR --mode base --cases F --out preds.jsonl
    opclaim merge --model DIR --adapter DIR --out DIR

Modules, imports pointing down the list only (tests/test_imports.py checks there is no cycle):

    cli        the verbs: arguments, inputs checked first, one run or N ranks
    parallel   data-parallel ranks (accelerate): shards, then rank 0 merges them
    run        one run: length buckets, streaming rows, resume
    output     PRED, PRED.partial, PRED.run.json, PRED.lock: resume safety (opclaim/artifacts.py)
    render     prompt text per case (prompts/, RAG examples)
    engines    HFEngine and VllmEngine: prompts -> text with the study's decoding
    merge      `opclaim merge`
    loading    model + adapter, their checks and their prompt format
    constrain, decode, attention   the grammar, the row-dropping loop, CPU SDPA decode steps
"""
