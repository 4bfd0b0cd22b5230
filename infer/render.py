"""Prompt text for a run: the study's prompt per case (and its RAG examples), in the model's format."""

from __future__ import annotations

from infer.loading import Loaded
from opclaim.errors import InputError


def build_prompts(cases, mode: str, loaded: Loaded, retriever=None, k: int = 2) -> list[str]:
    import prompts

    if mode == "rag":
        if retriever is None:
            raise InputError("rag mode needs --rag-index")
        examples = retriever.examples_batch([c.note for c in cases], k=k, exclude_ids=[c.id for c in cases])
    else:
        examples = [None] * len(cases)
    return [prompts.prompt(c.note, mode, fmt=loaded.fmt, tokenizer=loaded.tokenizer, examples=ex)
            for c, ex in zip(cases, examples, strict=False)]
