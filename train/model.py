"""Base model loading (nf4 + double quant for QLoRA) and the LoRA configuration.

The 4-bit storage dtype equals the model dtype: DeepSpeed ZeRO-3 shards parameters of one dtype,
so packing nf4 weights into that dtype is what lets the quantised base shard across ranks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import opclaim  # noqa: F401  (offline before transformers is imported)
from opclaim.errors import InputError
from opclaim.registry import check_model_dir

# Study: every linear layer + lm_head. Phi-3 fuses q/k/v and gate/up.
TARGETS = {
    "phi3": ["o_proj", "qkv_proj", "gate_up_proj", "down_proj", "lm_head"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head"],
}
TARGETS["mistral"] = TARGETS["qwen2"] = TARGETS["llama"]


def has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def compute_dtype():
    """bf16 on a GPU that supports it, fp32 on CPU (bf16 matmuls on CPU are slow and inexact)."""
    import torch

    return torch.bfloat16 if has_gpu() and torch.cuda.is_bf16_supported() else torch.float32


def attention_impl(requested: str = "auto", padding_free: bool = False) -> str:
    """auto = flash_attention_2 when importable on a GPU (its varlen kernel serves padding-free
    batches); otherwise `sdpa_varlen` for padding-free batches (train/attention.py: causal SDPA per
    example, no cross-example work) and `sdpa` for padded ones."""
    from train import attention

    if requested == "auto":
        from transformers.utils import is_flash_attn_2_available

        if has_gpu() and is_flash_attn_2_available():
            return "flash_attention_2"
        requested = attention.NAME if padding_free else "sdpa"
    if requested == attention.NAME:
        attention.register()
    return requested


def is_padding_free(targs) -> bool:
    """TRL's rule: padding_free, or BFD packing (which implies it)."""
    return bool(getattr(targs, "padding_free", False) or (
        getattr(targs, "packing", False) and getattr(targs, "packing_strategy", "") in ("bfd", "bfd_split")))


def model_type(path: str | Path) -> str:
    return json.loads((Path(path) / "config.json").read_text(encoding="utf-8")).get("model_type", "")


def target_modules(path: str | Path, override: list[str] | None = None) -> list[str]:
    if override:
        return list(override)
    kind = model_type(path)
    if kind not in TARGETS:
        raise InputError(f"no default LoRA targets for model_type {kind!r}; set lora_target_modules",
                         file=Path(path) / "config.json", field="model_type")
    return list(TARGETS[kind])


def bnb_config():
    """The shared nf4 config (registry.nf4_config), stored in the compute dtype for ZeRO-3."""
    from opclaim.registry import nf4_config

    dtype = compute_dtype()
    return nf4_config(dtype, storage_dtype=dtype)


def load_base(margs, padding_free: bool = False):
    """(model, facts) where facts records what was actually used, for opclaim_run.json."""
    from opclaim.registry import load_model

    path = check_model_dir(margs.model_name_or_path)
    attn = attention_impl(margs.attn_implementation, padding_free)
    if padding_free and attn in ("sdpa", "eager"):
        import logging

        logging.getLogger("train").warning(
            "padding-free batches with attn_implementation=%s: correct, but attention runs over the whole "
            "concatenated row under a block-diagonal mask; 'auto' or 'sdpa_varlen' avoids that", attn)
    kwargs = {"dtype": compute_dtype(), "attn_implementation": attn}
    if margs.load_in_4bit:
        kwargs["quantization_config"] = bnb_config()
    model = load_model(path, **kwargs)
    n4 = keep_training_layout(model) if margs.load_in_4bit else 0
    model.config.use_cache = False  # the KV cache is useless in training and clashes with checkpointing
    return model, {"attn_implementation": attn, "padding_free": bool(padding_free), "linear4bit_layers": n4,
                   "load_in_4bit": bool(margs.load_in_4bit),
                   "compute_dtype": str(kwargs["dtype"]).replace("torch.", ""), "model_type": model_type(path)}


def keep_training_layout(model) -> int:
    """Turn off bitsandbytes' CPU inference repacking of 4-bit weights.

    On CPUs with AVX512-BF16, a Linear4bit in eval mode repacks its weight in place (and switches
    its quant state to bf16) on first use. During training that happens at every evaluation; the
    repacked layout then breaks ZeRO-3's partitioned parameters and checkpoint saving."""
    import bitsandbytes as bnb

    n = 0
    for m in model.modules():
        if isinstance(m, bnb.nn.Linear4bit):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def top_layers_pattern(targets: list[str], n_layers: int, top: int) -> str:
    """PEFT target regex (full match) for `targets` in the top `top` of `n_layers` decoder layers;
    targets outside the layer stack (lm_head) stay adapted. PEFT's own `layers_to_transform` drops
    every module without a layer index, lm_head included, so it cannot express the study's head."""
    if not 0 < top <= n_layers:
        raise InputError(f"lora_top_layers must be between 1 and the model's {n_layers} layers",
                         field="lora_top_layers")
    idx = "|".join(str(i) for i in range(n_layers - top, n_layers))
    inner = "|".join(re.escape(t) for t in targets if t != "lm_head")
    pattern = rf"(.*\.)?layers\.({idx})\.(.*\.)?({inner})"
    return pattern + ("|(.*\\.)?lm_head" if "lm_head" in targets else "")


def num_layers(path: str | Path) -> int:
    cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    return int(cfg.get("num_hidden_layers") or cfg.get("text_config", {}).get("num_hidden_layers") or 0)


def lora_config(margs):
    from peft import LoraConfig

    targets = target_modules(margs.model_name_or_path, margs.lora_target_modules)
    if getattr(margs, "lora_top_layers", 0):
        targets = top_layers_pattern(targets, num_layers(margs.model_name_or_path), margs.lora_top_layers)
    return LoraConfig(r=margs.lora_r, lora_alpha=margs.lora_alpha, lora_dropout=margs.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
