"""The frozen lower layers computed once per example, not once per step ([ours], `cache_frozen_layers`).

With LoRA on the top N decoder layers only (`lora_top_layers`), every layer below the lowest adapted
one is frozen and receives no gradient: its output for a given example is the same at every epoch.
This module runs those layers once per training and validation example at the start of the run
(no grad, under the trainer's own autocast) and, during training, replaces them with a lookup of
that output, so each step runs the embedding, the adapted layers and the head only.

Measured on SmolLM2-135M (30 layers), steps of 2 terse notes (~1,000 tokens), 2-core CPU:
all-layer LoRA 3.2 s per step, top-8 LoRA 1.2 s (backward stops at layer 22), top-8 with this cache
0.75 s; building the cache costs about one forward pass of the frozen layers over the data
(docs/benchmarks.md, "learning efficiency").

Why by hand: no library caches intermediate activations across epochs for a PEFT model. The cache
lives in memory for one run, built from the loaded weights and the prepared datasets, so it cannot
come from another model or other data; attaching it to a model whose frozen layers differ (a digest
of their weights) is refused, and so is a batch holding an example it has not seen.
"""

from __future__ import annotations

import hashlib
import logging
import time

import torch
from tqdm.auto import tqdm

from opclaim.errors import InputError

log = logging.getLogger("train")


class _Stop(Exception):
    """Raised by the capture hook: the layers above the cached one need not run while building."""


class _Skip(torch.nn.Module):
    """Stands in for a frozen layer whose output the cache already holds."""

    def forward(self, hidden_states, *args, **kwargs):
        return hidden_states


class _Cached(torch.nn.Module):
    """Stands in for the highest frozen layer: returns the cached output for the current batch."""

    def __init__(self, cache: FrozenCache):
        super().__init__()
        self._cache = [cache]  # a list: not registered as a sub-module

    def forward(self, hidden_states, *args, **kwargs):
        cache = self._cache[0]
        out, cache.current = cache.current, None
        if out is None or out.shape != hidden_states.shape:
            raise RuntimeError("frozen-layer cache: no cached activations for this batch")
        return out


def _key(ids) -> bytes:
    return hashlib.blake2b(torch.as_tensor(ids, dtype=torch.int64).numpy().tobytes(), digest_size=16).digest()


def decoder_of(model):
    """(decoder module with `.layers`, its layers) of a causal LM, PEFT-wrapped or not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    dec = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", None)
    layers = getattr(dec, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise InputError("cache_frozen_layers: the model has no decoder layer list", field="cache_frozen_layers")
    return dec, layers


def frozen_digest(layers, first_trained: int) -> str:
    """sha256 over the weights of layers [0, first_trained): what the cached outputs depend on."""
    h = hashlib.sha256()
    for layer in list(layers)[:first_trained]:
        for name, p in sorted(layer.named_parameters()):
            h.update(name.encode())
            h.update(p.detach().to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class FrozenCache:
    """Outputs of decoder layers [0, first_trained) per example, keyed by the example's token ids."""

    def __init__(self, first_trained: int, digest: str):
        self.first_trained, self.digest = first_trained, digest
        self.store: dict[bytes, torch.Tensor] = {}
        self.current: torch.Tensor | None = None
        self._saved: list | None = None
        self._hook = None

    @classmethod
    def build(cls, model, first_trained: int, examples, autocast) -> FrozenCache:
        """Run the frozen layers over each example (a list of token ids), one at a time as training's
        per-example attention sees it; `autocast` is the trainer's (a context manager factory)."""
        dec, layers = decoder_of(model)
        if not 0 < first_trained < len(layers):
            raise InputError(f"cache_frozen_layers needs 0 < first adapted layer < {len(layers)}",
                             field="lora_top_layers")
        cache = cls(first_trained, frozen_digest(layers, first_trained))
        grabbed = {}

        def grab(_module, _args, output):
            grabbed["h"] = output[0] if isinstance(output, tuple) else output
            raise _Stop

        handle = layers[first_trained - 1].register_forward_hook(grab)
        t0 = time.perf_counter()
        try:
            with torch.no_grad(), autocast():
                for ids in tqdm(examples, desc="frozen-layer cache", unit="example"):  # ids only: no text
                    key = _key(ids)
                    if key in cache.store:
                        continue
                    x = torch.as_tensor([list(ids)], dtype=torch.long)
                    try:
                        dec(input_ids=x, position_ids=torch.arange(x.shape[1])[None], use_cache=False)
                    except _Stop:
                        pass
                    cache.store[key] = grabbed.pop("h").detach()
        finally:
            handle.remove()
        n_tok = sum(t.shape[1] for t in cache.store.values())
        log.warning("frozen-layer cache: layers 0-%d for %d examples (%d tokens, %.0f MB) in %.0f s",
                    first_trained - 1, len(cache.store), n_tok,
                    sum(t.numel() * t.element_size() for t in cache.store.values()) / 2**20,
                    time.perf_counter() - t0)
        return cache

    def rows(self, input_ids: torch.Tensor, position_ids, cu_seq_lens) -> torch.Tensor:
        """The cached activations of a batch: each row's examples (padding-free) back to back."""
        from train.attention import segment_lengths

        out = []
        for r, segs in enumerate(segment_lengths(position_ids, cu_seq_lens, *input_ids.shape)):
            pieces, start = [], 0
            for n in segs:
                ids = input_ids[r, start:start + n].tolist()
                start += n
                hit = self.store.get(_key(ids))
                if hit is None:
                    raise InputError("frozen-layer cache: a batch holds an example the cache was not built "
                                     "from (the data changed)", field="cache_frozen_layers")
                pieces.append(hit)
            out.append(torch.cat(pieces, dim=1))
        return torch.cat(out, dim=0)

    def attach(self, model) -> None:
        """Replace layers [0, first_trained) of `model` by the lookup; refused when their weights are
        not the ones the cache was built from."""
        dec, layers = decoder_of(model)
        if frozen_digest(layers, self.first_trained) != self.digest:
            raise InputError("frozen-layer cache: the model's frozen layers differ from the ones it was "
                             "built from", field="cache_frozen_layers")

        def before(_module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            if ids is None:
                raise RuntimeError("frozen-layer cache: the decoder was called without input_ids")
            mask = kwargs.get("attention_mask")
            if mask is not None and mask.dim() == 2 and not bool(mask.all()):
                raise InputError("cache_frozen_layers needs padding-free batches", field="padding_free")
            self.current = self.rows(ids, kwargs.get("position_ids"), kwargs.get("cu_seq_lens_q"))
            return None

        self._saved = [layers[i] for i in range(self.first_trained)]
        for i in range(self.first_trained - 1):
            layers[i] = _Skip()
        layers[self.first_trained - 1] = _Cached(self)
        self._hook = dec.register_forward_pre_hook(before, with_kwargs=True)

    def detach(self, model) -> None:
        """Put the real layers back (before saving, merging or generating)."""
        if self._saved is None:
            return
        _, layers = decoder_of(model)
        for i, layer in enumerate(self._saved):
            layers[i] = layer
        self._hook.remove()
        self._saved = self._hook = self.current = None


def check_args(margs, targs, world_size: int) -> None:
    if not getattr(margs, "cache_frozen_layers", False):
        return
    if not margs.lora_top_layers:
        raise InputError("cache_frozen_layers needs lora_top_layers (the cached layers must be frozen)",
                         field="cache_frozen_layers")
    if world_size > 1 or getattr(targs, "deepspeed", None):
        raise InputError("cache_frozen_layers runs in one process without DeepSpeed (each rank would "
                         "cache every example; ZeRO-3 partitions the layers it replaces)",
                         field="cache_frozen_layers")
    if margs.load_in_4bit:
        raise InputError("cache_frozen_layers with load_in_4bit is not supported (the cache holds the "
                         "frozen layers' output of an fp base)", field="cache_frozen_layers")
    if not getattr(targs, "padding_free", False):
        raise InputError("cache_frozen_layers needs padding_free: true", field="padding_free")


def attach_to_trainer(trainer, margs) -> FrozenCache | None:
    """Build the cache over the trainer's prepared datasets and attach it; None when not asked for."""
    check_args(margs, trainer.args, trainer.accelerator.num_processes)
    if not getattr(margs, "cache_frozen_layers", False):
        return None
    _, layers = decoder_of(trainer.model)
    first = len(layers) - margs.lora_top_layers
    examples = list(trainer.train_dataset["input_ids"])
    if trainer.eval_dataset is not None:
        examples += list(trainer.eval_dataset["input_ids"])
    cache = FrozenCache.build(trainer.model, first, examples, trainer.accelerator.autocast)
    cache.attach(trainer.model)
    return cache
