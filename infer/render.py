"""Prompt text for a run: the study's prompt per case (and its RAG examples), in the model's format."""

from __future__ import annotations

from infer.loading import Loaded
from opclaim.errors import InputError


def examples_for(cases, mode: str, retriever=None, k: int = 2) -> list:
    """The example claims each case's prompt shows (rag mode; None per case otherwise)."""
    if mode != "rag":
        return [None] * len(cases)
    if retriever is None:
        raise InputError("rag mode needs --rag-index")
    return retriever.examples_batch([c.note for c in cases], k=k, exclude_ids=[c.id for c in cases])


def build_prompts(cases, mode: str, loaded: Loaded, retriever=None, k: int = 2, examples=None) -> list[str]:
    import prompts

    if examples is None:
        examples = examples_for(cases, mode, retriever, k)
    return [prompts.prompt(c.note, mode, fmt=loaded.fmt, tokenizer=loaded.tokenizer, examples=ex)
            for c, ex in zip(cases, examples, strict=False)]
