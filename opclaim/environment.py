"""The environment a training run needs, checked line by line (`opclaim doctor`).

`collect()` gathers facts (versions, the torch build, GPUs, whether bitsandbytes' kernels run);
`judge(facts, needs)` turns them into Check lines - ok / warning / error, each with its fix -
against what the recipe needs (`needs`: gpu, bf16, 4-bit, attention, DeepSpeed, RAG). The split
lets the judgement be tested with any facts (a CUDA build without GPUs) on any machine.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
from dataclasses import asdict, dataclass

OK, WARNING, ERROR = "ok", "warning", "error"
TORCH_CUDA = "pip install torch --index-url https://download.pytorch.org/whl/cu124 (match your driver: nvidia-smi)"
OFFLINE_VARS = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1"}


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _bnb_kernels(gpu: bool) -> tuple[bool, str]:
    """Quantise and run one small nf4 matmul where training will run it."""
    try:
        import bitsandbytes.functional as F
        import torch

        dev = "cuda" if gpu else "cpu"
        dtype = torch.bfloat16 if gpu else torch.float32
        w = torch.randn(64, 64, device=dev, dtype=dtype)
        q, state = F.quantize_4bit(w, quant_type="nf4", compress_statistics=True)
        back = F.dequantize_4bit(q, state)
        err = float((back - w).abs().mean() / w.abs().mean())
        return err < 0.2, f"nf4 quantise/dequantise on {dev}: mean relative error {err:.3f}"
    except Exception as e:  # noqa: BLE001 - any failure here is the finding
        return False, f"{type(e).__name__}: {str(e)[:160]}"


def collect() -> dict:
    """Facts about this machine and Python environment (imports torch; nothing is downloaded)."""
    import torch

    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": p.name, "memory_gib": round(p.total_memory / 1024**3, 2),
                         "compute_capability": f"{p.major}.{p.minor}",
                         "bf16": bool(p.major >= 8 or (torch.version.hip is not None))})
    nccl = None
    if gpus:
        try:
            v = torch.cuda.nccl.version()
            nccl = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception:  # noqa: BLE001
            nccl = None
    packages = {name: version(dist) for name, dist in (
        ("transformers", "transformers"), ("peft", "peft"), ("trl", "trl"), ("accelerate", "accelerate"),
        ("deepspeed", "deepspeed"), ("bitsandbytes", "bitsandbytes"), ("flash-attn", "flash-attn"),
        ("xgrammar", "xgrammar"), ("vllm", "vllm"))}
    packages["faiss"] = version("faiss-cpu") or version("faiss-gpu") or version("faiss-gpu-cu12")
    facts = {"python": platform.python_version(), "python_ok": sys.version_info >= (3, 10),
             "torch": torch.__version__, "cuda_build": torch.version.cuda, "rocm_build": torch.version.hip,
             "gpus": gpus, "nccl": nccl, "packages": packages,
             "env": {k: os.environ.get(k) for k in OFFLINE_VARS}}
    if packages["bitsandbytes"]:
        facts["bnb_kernels_ok"], facts["bnb_kernels"] = _bnb_kernels(bool(gpus))
    if packages["flash-attn"] and gpus:
        try:
            import flash_attn  # noqa: F401

            facts["flash_attn_import"] = True
        except Exception as e:  # noqa: BLE001 - a wheel built for another torch/CUDA fails here
            facts["flash_attn_import"] = f"{type(e).__name__}: {str(e)[:160]}"
    return facts


def judge(facts: dict, needs: dict) -> list[Check]:
    """Check lines. needs: gpu (the recipe trains on GPUs), bf16, load_in_4bit, attn (requested
    implementation), deepspeed (the accelerate config uses it), rag (prompt mode needs FAISS)."""
    out = []
    add = lambda *a: out.append(Check(*a))  # noqa: E731
    pk = facts["packages"]
    add("python", OK if facts["python_ok"] else ERROR, facts["python"],
        "" if facts["python_ok"] else "use Python >= 3.10")
    build = (f"CUDA {facts['cuda_build']}" if facts["cuda_build"] else
             f"ROCm {facts['rocm_build']}" if facts["rocm_build"] else "CPU only")
    gpus = facts["gpus"]
    if (facts["cuda_build"] or facts["rocm_build"]) and not gpus:
        add("torch", ERROR, f"{facts['torch']} ({build} build) but no GPU is visible",
            "check nvidia-smi / rocm-smi, the driver and CUDA_VISIBLE_DEVICES (SLURM: --gres=gpu:N)")
    elif needs.get("gpu") and not gpus:
        add("torch", ERROR, f"{facts['torch']} ({build} build): the recipe trains on GPUs", TORCH_CUDA)
    else:
        add("torch", OK, f"{facts['torch']} ({build} build)")
    if gpus:
        for g in gpus:
            bad_bf16 = needs.get("bf16") and not g["bf16"]
            add(f"gpu {g['index']}", ERROR if bad_bf16 else OK,
                f"{g['name']}, {g['memory_gib']:g} GiB, compute capability {g['compute_capability']}, "
                f"bf16 {'yes' if g['bf16'] else 'no'}",
                "this GPU has no bf16: set bf16: false and fp16: true in the recipe" if bad_bf16 else "")
        add("nccl", OK if facts["nccl"] else WARNING, facts["nccl"] or "NCCL version not reported",
            "" if facts["nccl"] else "multi-GPU runs need a torch build with NCCL")
    else:
        add("gpus", OK if not needs.get("gpu") else ERROR,
            "none" + (" (the recipe trains on CPU)" if needs else ""), "" if not needs.get("gpu") else "run on a GPU node (SLURM: --gres=gpu:N)")
        add("nccl", OK, "not used on CPU (gloo)")
    for name in ("transformers", "peft", "trl", "accelerate"):
        v = pk.get(name)
        add(name, OK if v else ERROR, v or "not installed", "" if v else "pip install -e . (make setup)")
    v = pk.get("deepspeed")
    if needs.get("deepspeed"):
        add("deepspeed", OK if v else ERROR, v or "not installed: the accelerate config uses DeepSpeed",
            "" if v else "pip install deepspeed")
    else:
        add("deepspeed", OK if v else WARNING, v or "not installed (not used by this accelerate config)",
            "" if v else "pip install deepspeed (ZeRO-3 configs need it)")
    v = pk.get("bitsandbytes")
    if not v:
        add("bitsandbytes", ERROR if needs.get("load_in_4bit") else WARNING, "not installed",
            "pip install bitsandbytes")
    else:
        ok = facts.get("bnb_kernels_ok")
        where = "CUDA" if gpus else "CPU"
        add("bitsandbytes", OK if ok else (ERROR if needs.get("load_in_4bit") else WARNING),
            f"{v}; {where} kernels {'load' if ok else 'do NOT load'} ({facts.get('bnb_kernels', '')})",
            "" if ok else "pip install --force-reinstall bitsandbytes (a build with "
            f"{'CUDA' if gpus else 'CPU'} support for this torch)")
    v = pk.get("flash-attn")
    attn = needs.get("attn", "auto")
    if gpus:
        imp = facts.get("flash_attn_import", False)
        if v and imp is True:
            add("flash-attn", OK, v)
        else:
            why = "not installed" if not v else f"installed ({v}) but does not import: {imp}"
            add("flash-attn", ERROR if attn == "flash_attention_2" else WARNING,
                why + ("" if attn == "flash_attention_2" else "; attention falls back to SDPA (slower, more memory)"),
                "pip install flash-attn --no-build-isolation")
    else:
        add("flash-attn", OK if attn != "flash_attention_2" else ERROR,
            (v or "not installed") + "; not used on CPU (SDPA)",
            "" if attn != "flash_attention_2" else "flash_attention_2 needs a GPU: set attn_implementation: auto")
    v = pk.get("xgrammar")
    add("xgrammar", OK if v else WARNING, v or "not installed: no constrained decoding (--constrain)",
        "" if v else "pip install xgrammar")
    v = pk.get("vllm")
    if gpus:
        add("vllm", OK if v else WARNING, v or "not installed (optional engine)",
            "" if v else "pip install 'opclaim[vllm]' for --engine vllm")
    else:
        add("vllm", OK, (v or "not installed") + "; GPU-only engine, not used here")
    v = pk.get("faiss")
    add("faiss", OK if v else (ERROR if needs.get("rag") else WARNING), v or "not installed",
        "" if v else "pip install faiss-cpu (retrieval: opclaim rag build, prompt_mode rag/mixed)")
    env = facts["env"]
    off = [k for k, want in OFFLINE_VARS.items() if env.get(k) != want]
    add("offline", OK if not off else WARNING,
        "HF hub, datasets and transformers offline; telemetry off" if not off else f"not set: {', '.join(off)}",
        "" if not off else "export " + " ".join(f"{k}={OFFLINE_VARS[k]}" for k in off))
    return out
