"""`sdpa_decode`: transformers' SDPA attention, except single-token decode steps on CPU.

A decode step has one query per row against a long KV cache. PyTorch's CPU SDPA kernel is slow at
that shape: for a batch of 16, 9 query heads on 3 KV heads (SmolLM2) and 900 cached positions it
takes 4.7 ms per layer, where the same attention as two matmuls (query heads folded onto their KV
head, as transformers' `pack_gqa` does, so the cache is never repeated) takes 1.9 ms; attention
was 43% of a batch-16 decode step (bench/bench_infer.py). Prefill, training and GPUs keep SDPA.

The mask function is SDPA's (registered with the mask interface under the same name), so the
model builds exactly the boolean mask it builds for `sdpa`.

    from infer.attention import register; register()
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa_decode")
"""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

NAME = "sdpa_decode"


def sdpa_decode_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                                  scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """(batch, heads, q, dim) query, (batch, kv_heads, T, dim) key/value -> ((batch, q, heads, dim), None)."""
    plain = (query.shape[2] != 1 or query.device.type != "cpu" or (dropout and module.training)
             or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None
             or kwargs.get("s_aux") is not None or (attention_mask is not None and attention_mask.dim() != 4))
    if plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    b, heads, _, dim = query.shape
    kv_heads = key.shape[1]
    scale = scaling if scaling is not None else dim ** -0.5
    q = query.reshape(b, kv_heads, heads // kv_heads, dim)  # head h = kv * groups + g, as repeat_kv orders them
    scores = torch.matmul(q, key.transpose(-1, -2)).float() * scale  # (b, kv_heads, groups, T)
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, -key.shape[2]:]  # (b|1, 1|heads, 1, T): the one query's row
        if mask.shape[1] != 1:
            mask = mask.reshape(mask.shape[0], kv_heads, heads // kv_heads, -1)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores, dim=-1).to(value.dtype)
    out = torch.matmul(probs, value)  # (b, kv_heads, groups, dim)
    return out.reshape(b, heads, 1, dim).transpose(1, 2).contiguous(), None


def register() -> str:
    """Make `NAME` a valid `attn_implementation` (idempotent); returns NAME."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, sdpa_decode_attention_forward)
    if NAME not in AttentionMaskInterface._global_mapping:
        AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    return NAME
