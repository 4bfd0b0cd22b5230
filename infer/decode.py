"""A greedy decoding loop for a batch that drops rows as they finish (HF generate keeps them).

- Each prompt is prefilled on its own: no padding, the same shapes as a one-at-a-time run; a
  prefix all prompts share (system text, instruction: 112 to 248 tokens here) is prefilled once.
- The batch then decodes from a left-aligned KV buffer that grows in chunks, so a step does not
  copy the whole cache (DynamicCache concatenates every layer every step).
- A row that emits a stop token leaves the batch; later steps compute only the rows still going.
- Logits processors (repetition penalty, grammar) see the full batch as in generate(): finished
  rows hold the pad token, so per-row state (grammar matchers) lines up by row.
"""

from __future__ import annotations

import inspect

import torch
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer

CHUNK = 128  # KV buffer growth, in positions
MIN_SHARED = 16  # shortest common prompt prefix worth prefilling once


class BufferLayer(DynamicLayer):
    """One layer's keys/values in a buffer with spare columns; `keys`/`values` are views."""

    def __init__(self, kbuf, vbuf, n: int):
        super().__init__()
        self.kbuf, self.vbuf, self.n = kbuf, vbuf, n
        self.dtype, self.device, self.is_initialized = kbuf.dtype, kbuf.device, True
        self._views()

    def _views(self):
        self.keys, self.values = self.kbuf[:, :, :self.n], self.vbuf[:, :, :self.n]

    def update(self, key_states, value_states, *args, **kwargs):
        m = key_states.shape[-2]
        if self.n + m > self.kbuf.shape[2]:
            grow = max(m, CHUNK)
            self.kbuf = torch.cat([self.kbuf, self.kbuf.new_zeros(*self.kbuf.shape[:2], grow, self.kbuf.shape[3])], 2)
            self.vbuf = torch.cat([self.vbuf, self.vbuf.new_zeros(*self.vbuf.shape[:2], grow, self.vbuf.shape[3])], 2)
        self.kbuf[:, :, self.n:self.n + m] = key_states
        self.vbuf[:, :, self.n:self.n + m] = value_states
        self.n += m
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.n

    def batch_select_indices(self, indices) -> None:
        self.kbuf, self.vbuf = self.kbuf[indices], self.vbuf[indices]
        self._views()


def supported(model) -> bool:
    """Plain full-attention KV layers only (no sliding window, no linear attention)."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "sliding_window", None) or getattr(cfg, "is_encoder_decoder", False):
        return False
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=cfg).layers)


def common_prefix(prompts: list[list[int]]) -> int:
    """Leading tokens every prompt shares (the system text and instruction), leaving each prompt
    at least one token of its own so its last position's logits come from its own prefill."""
    if len(prompts) < 2:
        return 0
    n = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for p in prompts[1:]:
        n = next((i for i in range(n) if p[i] != first[i]), n)
    return n


def _cache_kw(model, cache) -> dict:
    """The forward keyword for the KV cache: transformers 5.2x renamed `past_key_values` to `cache`
    (the old name warns once per process and is removed in 5.40); older releases know only the old."""
    try:
        names = inspect.signature(model.forward).parameters
    except (AttributeError, TypeError, ValueError):
        names = {}
    return {"cache": cache} if "cache" in names else {"past_key_values": cache}


def _out_cache(out):
    return getattr(out, "cache", None) or out.past_key_values


def _prefill(model, prompts: list[list[int]], min_shared: int = MIN_SHARED):
    """Last-position logits [B, V] and a left-padded BufferLayer cache for the prompts.

    When the prompts share at least `min_shared` leading tokens, that prefix is prefilled once and
    each prompt prefills only its own suffix against it (causal attention: the prefix's keys and
    values do not depend on what follows it)."""
    width = max(len(p) for p in prompts)
    shared = common_prefix(prompts)
    prefix = None
    if shared >= min_shared:
        out = model(input_ids=torch.tensor([prompts[0][:shared]]), use_cache=True,
                    **_cache_kw(model, DynamicCache(config=model.config)), logits_to_keep=1)
        prefix = [(layer.keys, layer.values) for layer in _out_cache(out).layers]
    else:
        shared = 0
    logits, rows = [], []
    for p in prompts:
        cache = DynamicCache(config=model.config)
        if prefix is not None:
            for li, (k, v) in enumerate(prefix):
                cache.update(k, v, li)  # a copy: the shared prefix stays as it is
        ids = torch.tensor([p[shared:]])
        out = model(input_ids=ids, attention_mask=torch.ones(1, len(p), dtype=torch.long), use_cache=True,
                    **_cache_kw(model, cache), logits_to_keep=1)
        logits.append(out.logits[0, -1].float())
        rows.append([(layer.keys, layer.values) for layer in _out_cache(out).layers])
    layers = []
    for li in range(len(rows[0])):
        k0 = rows[0][li][0]
        shape = (len(prompts), k0.shape[1], width + CHUNK, k0.shape[3])
        kbuf, vbuf = k0.new_zeros(shape), k0.new_zeros(shape)
        for b, p in enumerate(prompts):
            kbuf[b, :, width - len(p):width] = rows[b][li][0][0]
            vbuf[b, :, width - len(p):width] = rows[b][li][1][0]
        layers.append(BufferLayer(kbuf, vbuf, width))
    return torch.stack(logits), Cache(layers=layers)


def chosen_probs(raw: torch.Tensor, processed: torch.Tensor, nxt: torch.Tensor):
    """Probabilities of the chosen tokens [B] under the decoding distribution (`processed`: penalty
    and grammar mask applied, softmax renormalises over the allowed tokens) and under the model's
    own distribution (`raw` logits)."""
    idx = nxt.clamp(min=0)[:, None]
    p = torch.softmax(processed.float(), -1).gather(1, idx)[:, 0]
    p_model = torch.softmax(raw.float(), -1).gather(1, idx)[:, 0]
    return p, p_model


def greedy(model, prompts: list[list[int]], *, max_new_tokens: int, stop_ids, pad_id: int,
           processors=(), probs: list | None = None) -> torch.Tensor:
    """New tokens [B, T] (T <= max_new_tokens), pad after a row's stop token, as generate() returns.
    `processors` are HF-style callables (input_ids [B, t], scores [B, V]) -> scores.
    `probs`, when a list, receives two tensors [B, T]: each chosen token's probability under the
    decoding distribution and under the model's raw distribution (decode.chosen_probs)."""
    n = len(prompts)
    width = max(len(p) for p in prompts)
    lengths = torch.tensor([len(p) for p in prompts])
    ids = torch.full((n, width + max_new_tokens), pad_id, dtype=torch.long)
    mask = torch.ones_like(ids)
    for b, p in enumerate(prompts):
        ids[b, width - len(p):width] = torch.tensor(p)
        mask[b, :width - len(p)] = 0
    stops = torch.tensor(sorted(set(stop_ids)))
    scores, cache = _prefill(model, prompts)
    cache_kw = _cache_kw(model, cache)  # once: the cache is updated in place, step after step
    finished = torch.zeros(n, dtype=torch.bool)
    rows = torch.arange(n)  # cache row r holds batch row rows[r]
    steps_p, steps_pm = [], []
    for t in range(max_new_tokens):
        raw = scores.clone() if probs is not None else None  # the grammar masks in place
        for proc in processors:
            scores = proc(ids[:, :width + t], scores)
        nxt = torch.where(finished, pad_id, scores.argmax(-1))
        ids[:, width + t] = nxt
        if probs is not None:
            p, pm = chosen_probs(raw, scores, nxt)
            steps_p.append(p)
            steps_pm.append(pm)
        finished |= torch.isin(nxt, stops)
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        keep = (~finished[rows]).nonzero().squeeze(1)
        if len(keep) < len(rows):
            cache.batch_select_indices(keep)
            rows = rows[keep]
        out = model(input_ids=nxt[rows, None], position_ids=(lengths[rows] + t)[:, None],
                    attention_mask=mask[rows, :width + t + 1], **cache_kw, use_cache=True)
        scores = scores.clone()
        scores[rows] = out.logits[:, -1].float()
    if probs is not None:
        probs[:] = [torch.stack(steps_p, 1), torch.stack(steps_pm, 1)]
    return ids[:, width:width + t + 1]
