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


# ---------------------------------------------------------------- transformers
class PaddingAwareRepetitionPenalty:
    """The study's repetition penalty (HF's formula) that ignores left padding.

    HF's RepetitionPenaltyLogitsProcessor also penalises the pad token in padded rows; with
    pad == eos that delays the stop in a batch but not alone, so batched and one-at-a-time
    outputs would differ. Pad positions are replaced by a token already in the row (penalising
    a token twice is the same as once)."""

    def __init__(self, penalty: float, pad_lengths):
        import torch

        self.penalty = penalty
        self.pad = torch.as_tensor(pad_lengths)

    def __call__(self, input_ids, scores):
        import torch

        if self.penalty == 1.0:
            return scores
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        padded = pos[None, :] < self.pad.to(input_ids.device)[:, None]
        first = input_ids.gather(1, self.pad.to(input_ids.device)[:, None].clamp(max=input_ids.shape[1] - 1))
        ids = torch.where(padded, first, input_ids)
        score = scores.gather(1, ids)
        score = torch.where(score < 0, score * self.penalty, score / self.penalty)
        return scores.scatter(1, ids, score)


def generate_batch(loaded: Loaded, prompts_text: list[str], *, max_new_tokens: int = STUDY["max_new_tokens"],
                   repetition_penalty: float = STUDY["repetition_penalty"], processor_factory=None,
                   decoder: str = "loop") -> tuple[list[str], list[bool]]:
    """Greedy outputs for one batch of prompts (left-padded), and whether each ran out of new
    tokens before its stop token. Text from the stop token on is cut. `decoder="generate"` is
    HF generate(), the study's call; models the loop does not support use it too."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    from infer import decode

    tok, model = loaded.tokenizer, loaded.model
    enc = tok(prompts_text, add_special_tokens=False, padding=True, return_tensors="pt")
    pad_lengths = (enc["attention_mask"] == 0).sum(dim=1)
    procs = [PaddingAwareRepetitionPenalty(repetition_penalty, pad_lengths)]
    if processor_factory is not None:
        procs.append(processor_factory(len(prompts_text)))  # the grammar mask goes last
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else loaded.stop_ids[0]
    with torch.inference_mode():
        if decoder == "loop" and decode.supported(model):
            prompts_ids = [ids[n:] for ids, n in zip(enc["input_ids"].tolist(), pad_lengths.tolist(), strict=True)]
            new = decode.greedy(model, prompts_ids, max_new_tokens=max_new_tokens, stop_ids=loaded.stop_ids,
                                pad_id=pad_id, processors=procs)
        else:
            gen = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                   eos_token_id=list(loaded.stop_ids), pad_token_id=pad_id,
                                   bos_token_id=tok.bos_token_id)
            out = model.generate(**enc, generation_config=gen, logits_processor=LogitsProcessorList(procs))
            new = out[:, enc["input_ids"].shape[1]:]
    texts, truncated = [], []
    stops = set(loaded.stop_ids)
    for row in new.tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), None)
        truncated.append(cut is None)
        texts.append(tok.decode(row[:cut], skip_special_tokens=False))
    return texts, truncated


class HFEngine:
    """transformers models on CPU/GPU: the row-dropping loop (default) or generate(); the grammar
    (if any) masks each batch row."""

    name = "hf"

    def __init__(self, loaded: Loaded, *, repetition_penalty: float = STUDY["repetition_penalty"], grammar=None,
                 decoder: str = "loop"):
        self.loaded, self.repetition_penalty, self.grammar = loaded, repetition_penalty, grammar
        self.decoder = decoder
        self.context = loaded.context

    def count_tokens(self, text: str) -> int:
        return len(self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts_text: list[str], max_new_tokens: int):
        return generate_batch(self.loaded, prompts_text, max_new_tokens=max_new_tokens,
                              repetition_penalty=self.repetition_penalty,
                              processor_factory=self.grammar.processor if self.grammar else None,
                              decoder=self.decoder)


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
        self.llm = LLM(model=str(model_dir), tensor_parallel_size=tensor_parallel, trust_remote_code=False,
                       max_model_len=self.context or None, seed=0)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def sampling_params(self, max_new_tokens: int):
        from vllm import SamplingParams

        kwargs = {"temperature": 0.0, "max_tokens": max_new_tokens, "repetition_penalty": self.repetition_penalty,
                  "stop_token_ids": list(self.loaded.stop_ids), "skip_special_tokens": False}
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
        return texts, truncated
