"""Optional vLLM engine (`--engine vllm`, extra `[serve]`, GPU only).

Same prompts, greedy with the study's settings, and guided decoding with the same claim
grammar as the transformers engine. Without vllm or a CUDA GPU it refuses with a clear error.
"""

from __future__ import annotations

from opclaim.errors import InputError


class VllmEngine:
    name = "vllm"

    @staticmethod
    def check():
        """The class when vllm and a GPU are usable; InputError naming what is missing otherwise."""
        try:
            import vllm  # noqa: F401
        except ImportError:
            raise InputError("--engine vllm needs the vllm package: pip install 'opclaim[serve]' "
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
