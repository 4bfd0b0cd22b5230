"""One batch of prompts -> output rows: the single decode step `opclaim infer` (infer/run.py) and
the service (opclaim/serve/engine.py) both call, so the two cannot drift.

A row: {"output", "flags", "confidence"?}; `confidence` (eval/confidence.py) is present when the
engine reports token probabilities, with RAG neighbour agreement (`examples`) and calibration
(`calibration`: p_cal and route per code) added as `opclaim infer --calibration` does.
"""

from __future__ import annotations

from eval import calibrate, confidence
from infer.output import FLAG_CAPPED, FLAG_TRUNCATED


def trim_incomplete(text: str) -> str:
    """Drop the unfinished item after the last separator: a constrained output cut off by the
    token budget could otherwise end in half a code (e.g. 'K80.2' of 'K80.20')."""
    cut = max(text.rfind(","), text.rfind("\n"))
    return text[:cut] if cut >= 0 else ""


def budget_for(lengths: list[int], context: int | None, max_new_tokens: int) -> int:
    """New-token budget of a batch: the study's, capped so the longest prompt fits the context."""
    longest = max(lengths)
    return min(max_new_tokens, context - longest) if context else max_new_tokens


def decode_batch(engine, prompts: list[str], lengths: list[int], *, max_new_tokens: int, constrained: bool,
                 calibration=None, examples: list | None = None) -> list[dict]:
    """Decode `prompts` together (one engine.generate call, left padding) and build each row.
    `examples`: per prompt, the RAG examples it showed (None entries allowed)."""
    budget = budget_for(lengths, engine.context, max_new_tokens)
    texts, truncated = engine.generate(list(prompts), budget)
    token_probs = getattr(engine, "last_token_probs", None) or [None] * len(prompts)
    examples = examples or [None] * len(prompts)
    rows = []
    for text, cut, tp, ex in zip(texts, truncated, token_probs, examples, strict=False):
        flags = []
        if cut:
            flags.append(FLAG_TRUNCATED)
            if constrained:
                text = trim_incomplete(text)
        if budget < max_new_tokens:
            flags.append(FLAG_CAPPED)
        row = {"output": text, "flags": flags}
        if tp is not None:
            row["confidence"] = confidence.score_output(
                text, tp, masked=constrained and getattr(engine, "processed", True))
            if ex is not None:
                confidence.add_agreement(row["confidence"], ex)
            if calibration is not None:
                calibrate.annotate(row["confidence"], calibration)
        rows.append(row)
    return rows
