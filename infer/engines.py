"""Engines: how a batch of prompts becomes text. `HFEngine` (transformers, CPU/GPU) and
`VllmEngine` (optional, GPU only, extra `[vllm]`) side by side, with the same interface:

    engine.context                      the model's context length (0 = unknown)
    engine.count_tokens(text) -> int
    engine.generate(prompts, max_new_tokens) -> (texts, ran_out_of_tokens)

Decoding is the study's: one beam, no sampling, repetition penalty 1.1, at most 512 new tokens,
stopping on the end-of-claim token. Both engines use the same claim grammar when constrained.
"""

from __future__ import annotations

import opclaim  # noqa: F401  (offline environment before transformers)
from infer.loading import Loaded
from opclaim.errors import InputError

# The study's decoding settings.
STUDY = {"num_beams": 1, "do_sample": False, "repetition_penalty": 1.1, "max_new_tokens": 512}
DECODERS = ("loop", "generate")  # loop: infer.decode (drops finished rows); generate: HF generate()
# What the repetition penalty sees: prompt = every input token, prompt included (HF generate, the
# study); generated = only the tokens written so far (a RAG prompt's example codes stay copyable);
# off = no penalty.
REPETITION_SCOPES = ("prompt", "generated", "off")


# ---------------------------------------------------------------- transformers
class PaddingAwareRepetitionPenalty:
    """The study's repetition penalty (HF's formula) that ignores left padding, over the prompt and
    the generated tokens (scope "prompt", as HF) or the generated tokens only (scope "generated").

    HF's RepetitionPenaltyLogitsProcessor also penalises the pad token in padded rows; with
    pad == eos that delays the stop in a batch but not alone, so batched and one-at-a-time
    outputs would differ. Each row's seen tokens are gathered into a [B, V] mask instead, so
    padding (and, for "generated", the prompt) is never counted; a token seen twice is penalised
    once, as in HF."""

    def __init__(self, penalty: float, pad_lengths, *, scope: str = "prompt", prompt_width: int | None = None):
        import torch

        if scope not in REPETITION_SCOPES:
            raise InputError(f"unknown repetition scope {scope!r}; known: {', '.join(REPETITION_SCOPES)}",
                             field="--repetition-scope")
        self.penalty = 1.0 if scope == "off" else penalty
        self.pad = torch.as_tensor(pad_lengths)
        self.scope = scope
        self.prompt_width = prompt_width  # the padded prompt's length: new tokens start there

    def __call__(self, input_ids, scores):
        import torch

        if self.penalty == 1.0:
            return scores
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        start = self.pad.to(input_ids.device)[:, None]
        if self.scope == "generated":
            start = torch.full_like(start, self.prompt_width)
        seen = pos[None, :] >= start
        if not bool(seen.any()):
            return scores
        vocab = scores.shape[1]
        mask = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
        mask.scatter_(1, torch.where(seen, input_ids, vocab), True)  # unseen positions -> a spare column
        mask = mask[:, :vocab]
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(mask, penalised, scores)


def generate_batch(loaded: Loaded, prompts_text: list[str], *, max_new_tokens: int = STUDY["max_new_tokens"],
                   repetition_penalty: float = STUDY["repetition_penalty"], processor_factory=None,
                   decoder: str = "loop", token_probs: list | None = None,
                   repetition_scope: str = "prompt") -> tuple[list[str], list[bool]]:
    """Greedy outputs for one batch of prompts (left-padded), and whether each ran out of new
    tokens before its stop token. Text from the stop token on is cut. `decoder="generate"` is
    HF generate(), the study's call; models the loop does not support use it too.

    `token_probs`, when a list, receives per row the generated tokens up to the stop token as
    (start, end, p, p_model, token id): character offsets in the returned text, the token's probability under
    the decoding distribution (repetition penalty and, when constrained, the grammar mask,
    renormalised over the allowed tokens) and under the model's raw distribution."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    from infer import decode

    tok, model = loaded.tokenizer, loaded.model
    enc = tok(prompts_text, add_special_tokens=False, padding=True, return_tensors="pt")
    pad_lengths = (enc["attention_mask"] == 0).sum(dim=1)
    procs = [PaddingAwareRepetitionPenalty(repetition_penalty, pad_lengths, scope=repetition_scope,
                                           prompt_width=enc["input_ids"].shape[1])]
    if processor_factory is not None:
        procs.append(processor_factory(len(prompts_text)))  # the grammar mask goes last
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else loaded.stop_ids[0]
    with torch.inference_mode():
        if decoder == "loop" and decode.supported(model):
            prompts_ids = [ids[n:] for ids, n in zip(enc["input_ids"].tolist(), pad_lengths.tolist(), strict=True)]
            probs = [] if token_probs is not None else None
            new = decode.greedy(model, prompts_ids, max_new_tokens=max_new_tokens, stop_ids=loaded.stop_ids,
                                pad_id=pad_id, processors=procs, probs=probs)
        else:
            gen = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                   eos_token_id=list(loaded.stop_ids), pad_token_id=pad_id,
                                   bos_token_id=tok.bos_token_id)
            scored = token_probs is not None
            # generate() keeps the tensor it processes as the raw logits; the grammar masks in place
            chain = [lambda _ids, s: s.clone(), *procs] if scored else procs
            out = model.generate(**enc, generation_config=gen, logits_processor=LogitsProcessorList(chain),
                                 return_dict_in_generate=scored, output_scores=scored, output_logits=scored)
            if scored:
                new = out.sequences[:, enc["input_ids"].shape[1]:]
                probs = [torch.stack(x, 1) for x in zip(*(decode.chosen_probs(r, s, new[:, t])
                         for t, (r, s) in enumerate(zip(out.logits, out.scores, strict=True))), strict=True)]
            else:
                new = out[:, enc["input_ids"].shape[1]:]
    texts, truncated = [], []
    stops = set(loaded.stop_ids)
    for row in new.tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), None)
        truncated.append(cut is None)
        texts.append(tok.decode(row[:cut], skip_special_tokens=False))
    if token_probs is not None:
        token_probs[:] = [token_offsets(tok, row[:cut], text, p.tolist(), pm.tolist())
                          for row, cut, text, p, pm in zip(new.tolist(), _cuts(new.tolist(), stops), texts,
                                                          probs[0], probs[1], strict=True)]
    return texts, truncated


def _cuts(rows, stops):
    return [next((i for i, t in enumerate(row) if t in stops), None) for row in rows]


def token_offsets(tok, ids: list[int], text: str, p: list[float], p_model: list[float]) -> list[tuple]:
    """(start, end, p, p_model, id) per generated token: a token's characters are what decoding the
    ids up to it adds to the text (decoding each token alone would lose the tokenizer's spacing)."""
    out, prev = [], 0
    for i in range(len(ids)):
        end = len(tok.decode(ids[:i + 1], skip_special_tokens=False)) if i + 1 < len(ids) else len(text)
        end = max(prev, min(end, len(text)))
        pm = None if p_model[i] is None else float(p_model[i])
        out.append((prev, end, float(p[i]), pm, int(ids[i])))
        prev = end
    return out


class HFEngine:
    """transformers models on CPU/GPU: the row-dropping loop (default) or generate(); the grammar
    (if any) masks each batch row."""

    name = "hf"

    def __init__(self, loaded: Loaded, *, repetition_penalty: float = STUDY["repetition_penalty"], grammar=None,
                 decoder: str = "loop", repetition_scope: str = "prompt"):
        self.loaded, self.repetition_penalty, self.grammar = loaded, repetition_penalty, grammar
        self.decoder, self.repetition_scope = decoder, repetition_scope
        self.context = loaded.context
        self.last_token_probs: list = []

    def count_tokens(self, text: str) -> int:
        return len(self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts_text: list[str], max_new_tokens: int):
        """(texts, ran_out_of_tokens); the rows' token probabilities are left in `last_token_probs`
        (engines.token_offsets rows) for per-code confidence (eval.confidence)."""
        self.last_token_probs = []
        return generate_batch(self.loaded, prompts_text, max_new_tokens=max_new_tokens,
                              repetition_penalty=self.repetition_penalty,
                              processor_factory=self.grammar.processor if self.grammar else None,
                              decoder=self.decoder, token_probs=self.last_token_probs,
                              repetition_scope=self.repetition_scope)


# ---------------------------------------------------------------- vLLM
class VllmEngine:
    name = "vllm"

    @staticmethod
    def check():
        """The class when vllm and a GPU are usable; InputError naming what is missing otherwise."""
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise InputError("--engine vllm needs the vllm package: pip install 'opclaim[vllm]' "
                             "(GPU machines only); use --engine hf on CPU", field="--engine") from None
        import torch

        if not torch.cuda.is_available():
            raise InputError("--engine vllm needs a CUDA GPU; none is visible. Use --engine hf",
                             field="--engine")
        return VllmEngine

    def __init__(self, model_dir, loaded, *, tensor_parallel: int = 1, repetition_penalty: float = 1.1,
                 ebnf: str | None = None):
        from vllm import LLM

        if loaded.info.get("adapter"):
            raise InputError("--engine vllm takes a merged model: run `opclaim merge` first", field="--adapter")
        self.loaded, self.ebnf, self.repetition_penalty = loaded, ebnf, repetition_penalty
        self.tokenizer = loaded.tokenizer
        self.context = loaded.context
        # GPU-only and untested here: per-token logprobs are the processed ones (after penalties
        # and the grammar's bitmask), the counterpart of HFEngine's `p`; vLLM gives no raw
        # distribution in the same run, so `p_model` stays null. Older vLLM without
        # `logprobs_mode` returns raw logprobs: then `p` is the model's own, stated by `masked`
        # being false in the rows.
        kwargs = {}
        try:
            import inspect

            from vllm.engine.arg_utils import EngineArgs

            if "logprobs_mode" in inspect.signature(EngineArgs).parameters:
                kwargs["logprobs_mode"] = "processed_logprobs"
        except (ImportError, TypeError, ValueError):
            pass
        self.processed = bool(kwargs)
        self.last_token_probs: list = []
        self.llm = LLM(model=str(model_dir), tensor_parallel_size=tensor_parallel, trust_remote_code=False,
                       max_model_len=self.context or None, seed=0, **kwargs)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sampling_params(self, max_new_tokens: int):
        from vllm import SamplingParams

        kwargs = {"temperature": 0.0, "max_tokens": max_new_tokens, "repetition_penalty": self.repetition_penalty,
                  "stop_token_ids": list(self.loaded.stop_ids), "skip_special_tokens": False, "logprobs": 0}
        if self.ebnf:
            try:  # vllm >= 0.10: structured outputs; earlier: guided decoding
                from vllm.sampling_params import StructuredOutputsParams

                kwargs["structured_outputs"] = StructuredOutputsParams(grammar=self.ebnf)
            except ImportError:
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(grammar=self.ebnf, backend="xgrammar")
        return SamplingParams(**kwargs)

    def generate(self, prompts_text: list[str], max_new_tokens: int):
        from vllm.inputs import TokensPrompt

        ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts_text]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=x) for x in ids],
                                 self.sampling_params(max_new_tokens), use_tqdm=False)
        texts = [o.outputs[0].text for o in outs]
        truncated = [o.outputs[0].finish_reason == "length" for o in outs]
        self.last_token_probs = []
        for o, text in zip(outs, texts, strict=True):
            import math

            gen = o.outputs[0]
            stops = set(self.loaded.stop_ids)
            ids = [t for t in gen.token_ids if t not in stops]
            lps = [(step or {}).get(t) for step, t in zip(gen.logprobs or [], ids, strict=False)]
            if len(lps) != len(ids) or any(x is None for x in lps):
                self.last_token_probs.append(None)  # no logprobs for some token: no confidence
                continue
            p = [math.exp(x.logprob) for x in lps]
            self.last_token_probs.append(token_offsets(self.tokenizer, ids, text, p, [None] * len(ids)))
        return texts, truncated
