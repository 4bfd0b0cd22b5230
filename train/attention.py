"""`sdpa_varlen`: padding-free attention on CPU (and anywhere FlashAttention-2 is not available).

A padding-free batch is one row holding several examples back to back; sequence boundaries come
as `cu_seq_lens_q` (TRL's padding-free collator sends them) or, failing that, from `position_ids`
restarting. Stock `sdpa` sees such a row as one long sequence: transformers builds a T x T
block-diagonal mask from the position ids and SDPA does the masked O(T^2) work over the whole
row, which on CPU costs more than the padding it saves. This function instead runs causal SDPA on
each example separately (the varlen idea of FlashAttention-2, done with a loop of ordinary SDPA
calls), so attention does no cross-example work and the linear layers see no padding at all.

Registered with transformers' `AttentionInterface` under `NAME` and deliberately *not* with the
mask interface: the model then passes the raw 2-D padding mask (or None) straight through and
never builds a 4-D mask. Padded batches (evaluation without padding-free, generation) still work:
a 2-D mask is turned into a causal + padding mask here and given to SDPA.

    from train.attention import register; register()
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa_varlen")
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "sdpa_varlen"


def _repeat_kv(x: torch.Tensor, n: int) -> torch.Tensor:
    if n == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n, t, d).reshape(b, h * n, t, d)


def segment_lengths(position_ids: torch.Tensor | None, cu_seq_lens: torch.Tensor | None,
                    batch: int, length: int) -> list[list[int]]:
    """Per row, the lengths of the examples it holds (they sum to `length`)."""
    if cu_seq_lens is not None and batch == 1:
        cu = cu_seq_lens.tolist()
        if cu and cu[0] == 0 and cu[-1] == length:
            return [[b - a for a, b in zip(cu[:-1], cu[1:], strict=True) if b > a]]
    if position_ids is None or position_ids.shape[-1] != length:
        return [[length]] * batch
    pos = position_ids.expand(batch, -1) if position_ids.shape[0] != batch else position_ids
    # A new example starts wherever the position does not continue from the previous token.
    starts = torch.ones_like(pos, dtype=torch.bool)
    starts[:, 1:] = pos[:, 1:] != pos[:, :-1] + 1
    rows = []
    for r in range(batch):
        idx = starts[r].nonzero().flatten().tolist() + [length]
        rows.append([b - a for a, b in zip(idx[:-1], idx[1:], strict=True)])
    return rows


def _mask(q_len: int, kv_len: int, device, *, causal: bool, window: int | None, pad: torch.Tensor | None):
    """Boolean (batch|1, 1, q_len, kv_len) mask: True = attend. Queries are the last q_len positions."""
    q = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
    k = torch.arange(kv_len, device=device)[None, :]
    keep = k <= q if causal else torch.ones(q_len, kv_len, dtype=torch.bool, device=device)
    if window is not None:
        keep = keep & (q - k < window)
    keep = keep[None, None]
    if pad is not None:
        # Every query keeps at least itself, so padded query rows never softmax over nothing (NaN).
        keep = (keep & pad[:, None, None, :].bool()) | (k == q)[None, None]
    return keep


def sdpa_varlen_attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0,
                                  scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """(batch, heads, T, dim) query/key/value -> ((batch, T, heads, dim) output, None)."""
    if kwargs.get("softcap") is not None:
        raise ValueError(f"{NAME} does not support attention softcapping; use eager")
    if kwargs.get("position_bias") is not None or kwargs.get("s_aux") is not None:
        raise ValueError(f"{NAME} supports plain softmax attention only; use sdpa or eager")
    batch, _, q_len, _ = query.shape
    kv_len = key.shape[2]
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = _repeat_kv(key, groups), _repeat_kv(value, groups)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    window = kwargs.get("sliding_window")

    def sdpa(q, k, v, mask=None, causal_flag=False):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling,
                                              is_causal=causal_flag)

    def one_example(q, k, v):  # causal attention, one example per row, no padding
        n = q.shape[2]
        if window is not None and n > window:
            return sdpa(q, k, v, _mask(n, n, q.device, causal=True, window=window, pad=None))
        return sdpa(q, k, v, causal_flag=n > 1)

    if attention_mask is not None and attention_mask.dim() == 4:  # a caller-made mask: use it as is
        out = sdpa(query, key, value, attention_mask)
    elif attention_mask is not None and not bool(attention_mask.all()):  # padded batch
        out = sdpa(query, key, value, _mask(q_len, kv_len, query.device, causal=causal, window=window,
                                            pad=attention_mask[:, -kv_len:]))
    elif q_len != kv_len or q_len == 1 or not causal:  # decoding with a cache, or bidirectional
        mask = None if (q_len == 1 and window is None) or not causal else \
            _mask(q_len, kv_len, query.device, causal=causal, window=window, pad=None)
        out = sdpa(query, key, value, mask)
    else:
        lengths = segment_lengths(kwargs.get("position_ids"), kwargs.get("cu_seq_lens_q"), batch, q_len)
        if all(len(segs) == 1 for segs in lengths):
            out = one_example(query, key, value)
        else:
            rows = []
            for r, segs in enumerate(lengths):
                # split (not slicing): the backward pass is then one concatenation, not a zero-filled
                # full-size gradient per example
                pieces = zip(*(t[r:r + 1].split(segs, dim=2) for t in (query, key, value)), strict=True)
                rows.append(torch.cat([one_example(q, k, v) for q, k, v in pieces], dim=2))
            out = rows[0] if batch == 1 else torch.cat(rows, dim=0)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Make `NAME` a valid `attn_implementation` (idempotent); returns NAME."""
    from transformers import AttentionInterface

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, sdpa_varlen_attention_forward)
    return NAME
