"""Prompt templates and the one rendering API for inference prompts, training text and targets.

Two formats:
- "phi3": the study's special-token template (templates/phi3.j2) with <|placeholderN|> section
  delimiters; used when the tokenizer has those tokens as single ids.
- "generic": the tokenizer's own chat template with plain section headers.

Three modes, as in the study: "finetuned" (question only), "base" (adds an explicit format
instruction) and "rag" (format instruction + two "Relevant Example Claim" blocks).

Rendered text already holds every special token (including <s> for Phi-3): encode it with
`encode()` (add_special_tokens=False) so nothing is added twice.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import jinja2

from opclaim.claim import PHI3_MARKERS, PLAIN_MARKERS, Claim, Markers, render_target
from opclaim.errors import InputError

TEMPLATES = Path(__file__).parent / "templates"
MODES = ("finetuned", "base", "rag")
FORMATS = ("phi3", "generic")
PHI3_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"] + [
    f"<|placeholder{i}|>" for i in range(1, 7)]


@functools.lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    # Plain text, not HTML: no autoescape. StrictUndefined so a missing variable fails loudly.
    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False,
                              keep_trailing_newline=True, undefined=jinja2.StrictUndefined)


def _text(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8").strip()


@dataclass(frozen=True)
class PromptFormat:
    name: str

    @property
    def markers(self) -> Markers:
        return PHI3_MARKERS if self.name == "phi3" else PLAIN_MARKERS


def has_phi3_tokens(tokenizer) -> bool:
    """True when every Phi-3 section token is one id (so the study's template is usable)."""
    vocab = tokenizer.get_vocab()
    return all(t in vocab and len(tokenizer.encode(t, add_special_tokens=False)) == 1
               for t in PHI3_TOKENS)


def detect_format(tokenizer) -> PromptFormat:
    if has_phi3_tokens(tokenizer):
        return PromptFormat("phi3")
    if not getattr(tokenizer, "chat_template", None):
        raise InputError("tokenizer has neither Phi-3's special tokens nor a chat template")
    return PromptFormat("generic")


def get_format(name_or_tokenizer) -> PromptFormat:
    if isinstance(name_or_tokenizer, PromptFormat):
        return name_or_tokenizer
    if isinstance(name_or_tokenizer, str):
        if name_or_tokenizer not in FORMATS:
            raise InputError(f"unknown prompt format {name_or_tokenizer!r}; known: {', '.join(FORMATS)}")
        return PromptFormat(name_or_tokenizer)
    return detect_format(name_or_tokenizer)


def target(claim: Claim, fmt: PromptFormat | str) -> str:
    """The target text for a claim in this format (no end-of-claim token)."""
    return render_target(claim, get_format(fmt).markers)


def _user(mode: str, fmt: PromptFormat, examples) -> str:
    if mode not in MODES:
        raise InputError(f"unknown mode {mode!r}; known: {', '.join(MODES)}")
    examples = list(examples or [])
    if mode == "rag" and not examples:
        raise InputError("rag mode needs example claims (give a RAG index)")
    if mode != "rag" and examples:
        raise InputError(f"{mode} mode takes no example claims")
    instruction = "" if mode == "finetuned" else _env().get_template(
        "format_instruction.j2").render(m=fmt.markers).strip()
    rendered = [e if isinstance(e, str) else render_target(e, fmt.markers) for e in examples]
    return _env().get_template("user.j2").render(
        question=_text("question.txt"), instruction=instruction, examples=rendered).rstrip("\n")


def prompt(note: str, mode: str = "finetuned", *, fmt: PromptFormat | str = "phi3",
           tokenizer=None, examples=None) -> str:
    """The inference prompt, ending where the assistant starts writing."""
    fmt = get_format(fmt)
    user = _user(mode, fmt, examples)
    if fmt.name == "phi3":
        return _env().get_template("phi3.j2").render(system=_text("system.txt"), user=user, note=note)
    if tokenizer is None:
        raise InputError("the generic format needs the model's tokenizer")
    content = _env().get_template("generic_user.j2").render(user=user, note=note).rstrip("\n")
    messages = [{"role": "system", "content": _text("system.txt")}, {"role": "user", "content": content}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def end_of_claim(fmt: PromptFormat | str, tokenizer=None) -> str:
    """Text appended after the target in training; generation stops on its first token."""
    fmt = get_format(fmt)
    if fmt.name == "phi3":
        return "<|end|>"
    # The chat template's end-of-turn: what it writes after an assistant message's content.
    probe = "\x00PROBE\x00"
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": probe}]
    full = tokenizer.apply_chat_template(msgs, tokenize=False)
    tail = full.split(probe, 1)[1] if probe in full else ""
    # First line only: templates may append eos after the turn (Phi-3's does when not generating).
    stop = tail.lstrip("\n").split("\n", 1)[0].strip() or (tokenizer.eos_token or "")
    if not stop:
        raise InputError("cannot find the chat template's end-of-turn text or an eos token")
    return stop


def end_of_claim_ids(fmt: PromptFormat | str, tokenizer) -> list[int]:
    """Token ids generation should stop on (the end-of-claim token plus the tokenizer's eos)."""
    ids = encode(tokenizer, end_of_claim(fmt, tokenizer))[:1]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def training_pair(case_note: str, claim: Claim, *, fmt: PromptFormat | str, tokenizer=None,
                  mode: str = "finetuned", examples=None) -> dict:
    """{"prompt", "completion"} for TRL's prompt-completion datasets: loss on completion only."""
    fmt = get_format(fmt)
    return {"prompt": prompt(case_note, mode, fmt=fmt, tokenizer=tokenizer, examples=examples),
            "completion": target(claim, fmt) + end_of_claim(fmt, tokenizer)}


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]
