"""Cases JSONL -> prompt/completion records for TRL (loss on the completion only).

The prompt format ("phi3" or "generic") is chosen from the tokenizer unless a recipe names it.
The summary written to opclaim_run.json holds counts, services and dates, never note text.
"""

from __future__ import annotations

import random
from collections import Counter

from opclaim.claim import Case
from opclaim.io import read_cases
from prompts import detect_format, get_format, training_pair


def choose_format(tokenizer, name: str = "auto"):
    return detect_format(tokenizer) if name in ("auto", "", None) else get_format(name)


def load_splits(args) -> dict[str, list[Case]]:
    """{"train": [...], "val": [...]}; val comes from eval_file or a seeded slice of train_file."""
    train = read_cases(args.train_file)
    if args.eval_file:
        val = read_cases(args.eval_file)
    elif args.val_fraction > 0 and len(train) > 1:
        shuffled = train[:]
        random.Random(0).shuffle(shuffled)  # fixed seed: the same cases are held out on every rank
        n_val = max(1, round(len(train) * args.val_fraction))
        held = {c.id for c in shuffled[:n_val]}
        val = [c for c in train if c.id in held]
        train = [c for c in train if c.id not in held]
    else:
        val = []
    if args.max_train_samples:
        train = train[: args.max_train_samples]
    if args.max_val_samples:
        val = val[: args.max_val_samples]
    return {"train": train, "val": val}


def to_records(cases: list[Case], fmt, tokenizer, mode: str = "finetuned", examples=None) -> list[dict]:
    """One record per case in `mode`; `examples` (one list of claims per case) for rag; mixed gives
    each case twice, first without and then with its examples."""
    if mode == "finetuned":
        return [training_pair(c.note, c.claim, fmt=fmt, tokenizer=tokenizer) for c in cases]
    rag = [training_pair(c.note, c.claim, fmt=fmt, tokenizer=tokenizer, mode="rag", examples=ex)
           for c, ex in zip(cases, examples, strict=True)]
    return rag if mode == "rag" else to_records(cases, fmt, tokenizer) + rag


def to_dataset(cases: list[Case], fmt, tokenizer, mode: str = "finetuned", examples=None):
    from datasets import Dataset

    return Dataset.from_list(to_records(cases, fmt, tokenizer, mode, examples))


def build(splits: dict[str, list[Case]], dargs, fmt, tokenizer, seed: int):
    """(train dataset, val dataset or None, retrieval facts for the run record). In rag/mixed mode
    training cases show their nearest other training claims (a share: distractors); validation
    cases show their nearest training claims."""
    from train import rag_data

    rag_data.check_args(dargs)
    mode = dargs.prompt_mode
    train_ex = val_ex = None
    plan = None
    if mode != "finetuned":
        retriever = rag_data.load_retriever(dargs)
        plan = rag_data.plan(splits["train"], retriever, k=dargs.rag_k, share=dargs.rag_distractor_share,
                             kind=dargs.rag_distractors, seed=seed)
        train_ex = rag_data.examples(plan, retriever)
        if splits["val"]:
            val_ex = retriever.examples_batch([c.note for c in splits["val"]], k=dargs.rag_k,
                                              exclude_ids=[c.id for c in splits["val"]])
    train_ds = to_dataset(splits["train"], fmt, tokenizer, mode, train_ex)
    val_ds = to_dataset(splits["val"], fmt, tokenizer, mode, val_ex) if splits["val"] else None
    return train_ds, val_ds, rag_data.facts(dargs, plan)


def summary(splits: dict[str, list[Case]]) -> dict:
    """Counts per split, services and date range: no note text."""
    out = {}
    for name, cases in splits.items():
        dates = sorted(c.date for c in cases if c.date)
        out[name] = {"cases": len(cases),
                     "services": dict(Counter(c.service or "unknown" for c in cases).most_common()),
                     "date_range": [dates[0], dates[-1]] if dates else None}
    return out
