"""Per-device memory estimate for (Q)LoRA fine-tuning, optionally under DeepSpeed ZeRO.

Formula (bytes per device; N = devices, Z = ZeRO stage, b = micro-batch, s = sequence length,
h = hidden, i = MLP width, L = layers, V = vocab, r = LoRA rank, c = compute-dtype bytes:
2 for bf16 on GPU, 4 for fp32 on CPU):

  base weights   Q = n_lin * (0.5 + 1/64 + 4/(64*256))      nf4 + double-quantised absmax
                     (4-bit off: n_lin * c)                    (fp32/bf16 base)
                 + n_emb * c                                   embeddings, lm_head, norms
                 divided by N under Z=3
  LoRA params    P = r * sum(in + out) over adapted linears (lm_head included)
  params+grads   P * c * 2   (grads / N when Z>=2, params / N when Z=3)
  optimizer      P * 8 (AdamW moments) + P * 4 fp32 master copy when c=2 (DeepSpeed bf16);
                 divided by N when Z>=1
  activations    per token: L * (13h + 5i) * c  without checkpointing, or L*h*c + (13h + 5i)*c
                 with it (one layer recomputed at a time); times b*s. 13h + 5i counts the saved
                 inputs of attention/MLP pieces plus the LoRA dropout copies (SDPA/flash: no s^2 term).
  logits + loss  T * V * (c + 12): logits, their fp32 upcast, log-softmax and its gradient, over
                 T = b * s positions (plan-memory: every position, an upper bound); the trainer
                 computes them only at the T positions that predict a claim token when lm_head is
                 adapted (train/trainer.py), which `opclaim doctor` passes as logit_tokens
  runtime        + 0.5 GiB on a GPU (CUDA context, allocator slack); none on CPU, where the check
                 compares against measured peak live tensor bytes.

The CPU check (tests/test_plan_memory.py) measures peak live tensor bytes with torch.profiler
during real LoRA training steps on the tiny Phi-3 and SmolLM2 and requires agreement within 25%.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from opclaim.errors import InputError

GiB = 1024**3


@dataclass(frozen=True)
class Shape:
    name: str
    family: str  # "phi3" (fused qkv / gate_up) or "llama"
    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    tied: bool = False

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads


PRESETS = {
    # microsoft/Phi-3-mini-128k-instruct and Phi-3-medium-128k-instruct config.json values
    "phi3-mini": Shape("phi3-mini", "phi3", 32064, 3072, 32, 8192, 32, 32),
    "phi3-medium": Shape("phi3-medium", "phi3", 32064, 5120, 40, 17920, 40, 10),
}


def shape_from_dir(path: str | Path) -> Shape:
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        raise InputError("no config.json", file=cfg_path)
    c = json.loads(cfg_path.read_text(encoding="utf-8"))
    try:
        family = "phi3" if c["model_type"] == "phi3" else "llama"
        return Shape(Path(path).name, family, c["vocab_size"], c["hidden_size"], c["num_hidden_layers"],
                     c["intermediate_size"], c["num_attention_heads"],
                     c.get("num_key_value_heads") or c["num_attention_heads"],
                     bool(c.get("tie_word_embeddings", False)))
    except KeyError as e:
        raise InputError("missing key", file=cfg_path, field=str(e.args[0])) from None


def resolve_shape(model: str) -> Shape:
    if model in PRESETS:
        return PRESETS[model]
    if Path(model).is_dir():
        return shape_from_dir(model)
    raise InputError(f"unknown model {model!r}: give {', '.join(PRESETS)} or a model folder", field="--model",
                     from_command_line=True)


def layer_linears(s: Shape) -> list[tuple[int, int]]:
    """(in, out) of each linear in one decoder layer, as the family names them (LoRA targets)."""
    h, i, kv = s.hidden, s.intermediate, s.kv_dim
    if s.family == "phi3":
        return [(h, h + 2 * kv), (h, h), (h, 2 * i), (i, h)]  # qkv_proj, o_proj, gate_up_proj, down_proj
    return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]


def estimate(s: Shape, *, seq_len: int, batch: int = 1, gpus: int = 1, zero: int = 3,
             grad_ckpt: bool = False, lora_r: int = 64, load_in_4bit: bool = True,
             device: str = "gpu", logit_tokens: int | None = None) -> dict:
    """Bytes per device, by component. logit_tokens: positions whose logits are computed per
    micro-batch (default every position, b * s)."""
    c = 2 if device == "gpu" else 4
    n = max(1, gpus)
    lin = layer_linears(s)
    n_lin = s.layers * sum(a * b for a, b in lin)
    n_emb = s.vocab * s.hidden * (1 if s.tied else 2) + (2 * s.layers + 1) * s.hidden
    quant = n_lin * (0.5 + 1 / 64 + 4 / (64 * 256)) if load_in_4bit else n_lin * c
    weights = quant + n_emb * c
    lora = lora_r * (s.layers * sum(a + b for a, b in lin) + s.hidden + s.vocab)
    params = lora * c
    grads = lora * c
    optim = lora * 8 + (lora * 4 if c == 2 else 0)
    if zero >= 1:
        optim /= n
    if zero >= 2:
        grads /= n
    if zero >= 3:
        weights /= n
        params /= n
    per_token_layer = (13 * s.hidden + 5 * s.intermediate) * c
    if grad_ckpt:
        act = batch * seq_len * (s.layers * s.hidden * c + per_token_layer)
    else:
        act = batch * seq_len * s.layers * per_token_layer
    logits = (batch * seq_len if logit_tokens is None else logit_tokens) * s.vocab * (c + 12)
    runtime = 0.5 * GiB if device == "gpu" else 0
    parts = {"weights": weights, "lora_params": params, "lora_grads": grads, "optimizer": optim,
             "activations": act, "logits_loss": logits, "runtime": runtime}
    return {"parts": {k: int(v) for k, v in parts.items()}, "total": int(sum(parts.values())),
            "lora_param_count": int(lora)}


def plan(model: str, *, gpus: int, gpu_gb: float, seq_len: int, batch: int = 1, zero: int = 3,
         grad_ckpt: bool = False, lora_r: int = 64, load_in_4bit: bool = True) -> dict:
    s = resolve_shape(model)
    kw = dict(batch=batch, gpus=gpus, zero=zero, grad_ckpt=grad_ckpt, lora_r=lora_r, load_in_4bit=load_in_4bit)
    est = estimate(s, seq_len=seq_len, **kw)
    budget = gpu_gb * GiB
    lo, hi = 0, 1 << 21  # largest fitting sequence length by bisection (memory grows with s)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate(s, seq_len=mid, **kw)["total"] <= budget:
            lo = mid
        else:
            hi = mid - 1
    return {"model": asdict(s), "settings": {"gpus": gpus, "gpu_gb": gpu_gb, "seq_len": seq_len, **kw},
            "per_gpu_bytes": est["total"], "per_gpu_gib": round(est["total"] / GiB, 2),
            "parts_gib": {k: round(v / GiB, 3) for k, v in est["parts"].items()},
            "lora_param_count": est["lora_param_count"], "fits": est["total"] <= budget,
            "max_seq_len": lo}


def measure_peak(model_dir: str | Path, *, seq_len: int, batch: int = 1, steps: int = 2,
                 load_in_4bit: bool = True, grad_ckpt: bool = False, lora_r: int = 64) -> int:
    """Peak tensor bytes of LoRA training steps on CPU: resident model bytes (parameters and
    buffers, counted exactly) + the peak of live allocations during the steps.

    CPU has no allocator statistics like torch.cuda.max_memory_allocated, so the step part
    replays torch.profiler's allocation/free events in time order and takes the maximum running
    total. Model loading is left out on purpose: its transient peak depends on the loader, not
    on training, and the planner answers "does training fit"."""
    import torch
    from peft import get_peft_model
    from torch.profiler import ProfilerActivity, profile

    from opclaim.registry import load_model
    from train.config import ModelArgs
    from train.model import bnb_config, keep_training_layout, lora_config

    torch.manual_seed(0)
    kwargs = {"dtype": torch.float32, "attn_implementation": "sdpa"}
    if load_in_4bit:
        kwargs["quantization_config"] = bnb_config()
    model = load_model(model_dir, **kwargs)
    if load_in_4bit:
        keep_training_layout(model)
    model.config.use_cache = False
    model = get_peft_model(model, lora_config(ModelArgs(model_name_or_path=str(model_dir), lora_r=lora_r)))
    if grad_ckpt:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    model.train()
    seen, resident = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        key = t.untyped_storage().data_ptr()
        if key not in seen:  # tied weights share storage
            seen.add(key)
            resident += t.untyped_storage().nbytes()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for _ in range(steps):
            ids = torch.randint(0, vocab, (batch, seq_len), generator=gen)
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return resident + peak
