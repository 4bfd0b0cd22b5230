"""The shape check of `opclaim doctor`, without the real weights: read the recipe and its accelerate
config, build the recipe's model from its config (meta device: parameter counts, LoRA targets),
write a random-weight copy of it when it fits in memory, run a few measured optimizer steps on the
longest training example (train/probe.py, under the recipe's accelerate/DeepSpeed config), and
compare the peak with train/memory.py's estimate and a stated per-GPU budget.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import opclaim  # noqa: F401
from opclaim.errors import InputError
from opclaim.io import read_json, read_yaml

TOLERANCE = 0.25  # train/memory.py's documented agreement with measured peaks (docs/training.md)
WEIGHT_FILES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf")


# ---------------------------------------------------------------- recipe + accelerate config
def recipe_accelerate_config(recipe: Path) -> str | None:
    """The accelerate config a recipe's first comment line names (`accelerate launch --config_file X`)."""
    first = recipe.read_text(encoding="utf-8").splitlines()[:1]
    m = re.search(r"accelerate launch .*?--config_file\s+(\S+)", first[0]) if first else None
    return m.group(1) if m else None


def read_recipe(recipe: str | Path, overrides: list[str]):
    """(ModelArgs, DataArgs, SFTConfig) as training would parse them; InputError on a bad recipe."""
    from train.run import parse

    return parse(["--config", str(recipe), *overrides])


def _int_field(doc: dict, key: str, path: Path, default=None) -> int:
    v = doc.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InputError(f"expected an integer >= 1, got {v!r}", file=path, field=key)
    return v


def read_accelerate_config(path: str | Path | None) -> dict:
    """{"file", "processes", "deepspeed", "zero_stage", "ds_config"}; no config = one process."""
    if path is None:
        return {"file": None, "processes": 1, "machines": 1, "deepspeed": False, "zero_stage": 0,
                "distributed_type": "NO"}
    p = Path(path)
    if not p.is_file():
        raise InputError("accelerate config not found", file=p, field="--accelerate-config")
    doc = read_yaml(p, "accelerate config")
    if not isinstance(doc, dict):
        raise InputError("accelerate config is not a YAML mapping", file=p)
    dtype = doc.get("distributed_type", "NO")
    if not isinstance(dtype, str):
        raise InputError(f"expected a string, got {type(dtype).__name__}", file=p, field="distributed_type")
    out = {"file": str(p), "processes": _int_field(doc, "num_processes", p, 1),
           "machines": _int_field(doc, "num_machines", p, 1), "distributed_type": dtype,
           "deepspeed": dtype == "DEEPSPEED", "zero_stage": 0}
    if out["deepspeed"]:
        ds = doc.get("deepspeed_config")
        if not isinstance(ds, dict):
            raise InputError("DEEPSPEED needs a deepspeed_config mapping", file=p, field="deepspeed_config")
        if "deepspeed_config_file" in ds:
            f = ds["deepspeed_config_file"]
            if not isinstance(f, str) or not Path(f).is_file():
                raise InputError(f"DeepSpeed config file not found: {f!r}", file=p,
                                 field="deepspeed_config.deepspeed_config_file")
            dsj = read_json(f, "DeepSpeed config")
            stage = (dsj.get("zero_optimization") or {}).get("stage", 0) if isinstance(dsj, dict) else None
            where = f
        else:
            stage, where = ds.get("zero_stage", 0), str(p)
        if isinstance(stage, bool) or stage not in (0, 1, 2, 3):
            raise InputError(f"ZeRO stage must be 0-3, got {stage!r}", file=where, field="zero_optimization.stage")
        out["zero_stage"], out["ds_config"] = stage, str(where)
    return out


# ---------------------------------------------------------------- model from its config
def model_shape(model_dir: Path, margs, padding_free: bool) -> dict:
    """The recipe's model on the meta device: parameters, LoRA targets found, quantisation, attention."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from opclaim.registry import check_model_dir
    from train import model as model_mod

    check_model_dir(model_dir, need_weights=False)
    cfg = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(cfg, trust_remote_code=False)
    n_params = sum(p.numel() for p in meta.parameters())
    targets = model_mod.target_modules(model_dir, margs.lora_target_modules)
    names = [n for n, m in meta.named_modules() if isinstance(m, torch.nn.Linear)]
    found = {t: sum(1 for n in names if n == t or n.endswith("." + t)) for t in targets}
    missing = [t for t, k in found.items() if k == 0]
    if missing:
        raise InputError(f"LoRA target(s) {', '.join(missing)} are not linear layers of this model "
                         f"(model_type {cfg.model_type})", field="lora_target_modules")
    return {"model_type": cfg.model_type, "parameters": n_params, "layers": cfg.num_hidden_layers,
            "hidden": cfg.hidden_size, "vocab": cfg.vocab_size,
            "max_position_embeddings": getattr(cfg, "max_position_embeddings", None),
            "quantisation": "nf4 + double quant (bitsandbytes)" if margs.load_in_4bit else "none",
            "compute_dtype": str(model_mod.compute_dtype()).replace("torch.", ""),
            "attention": model_mod.attention_impl(margs.attn_implementation, padding_free),
            "lora": {"r": margs.lora_r, "alpha": margs.lora_alpha, "dropout": margs.lora_dropout,
                     "targets": found}}


def random_copy(model_dir: Path, out: Path, *, seed: int = 0) -> Path:
    """The model with random weights (same config, tokenizer, generation config) in `out`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from train import model as model_mod

    out.mkdir(parents=True, exist_ok=True)
    for f in model_dir.iterdir():  # everything but the weights
        if f.is_file() and not f.name.endswith(WEIGHT_FILES) and not f.name.endswith(".index.json"):
            shutil.copy2(f, out / f.name)
    cfg = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=model_mod.compute_dtype(), trust_remote_code=False)
    model.save_pretrained(out, safe_serialization=True)
    return out


def fits_in_host_memory(n_params: int, dtype_bytes: int) -> bool:
    """Room for a random copy: twice its bytes free in RAM (init + save). Disk space is not checked."""
    import psutil

    need = 2 * n_params * dtype_bytes
    return need < psutil.virtual_memory().available


# ---------------------------------------------------------------- the longest example
def example_tokens(case, fmt, tok) -> tuple[int, int]:
    from prompts import encode, training_pair

    pair = training_pair(case.note, case.claim, fmt=fmt, tokenizer=tok)
    return len(encode(tok, pair["prompt"])), len(encode(tok, pair["completion"]))


def longest_case(cases, fmt, tok):
    """(case, prompt tokens, claim tokens) of the longest prompt + claim."""
    best = max(((c, *example_tokens(c, fmt, tok)) for c in cases), key=lambda x: x[1] + x[2])
    return best


def synthetic_case(fmt, tok, max_length: int):
    """A synthetic case (no patient data) whose prompt + claim is as close to max_length as it gets."""
    from opclaim.synth import generate_cases

    case = generate_cases(1, seed=0, style="dictation", length="real")[0]
    filler = " The patient tolerated the procedure well and was taken to recovery in stable condition."
    lo, hi = 0, 1
    grow = lambda k: dataclasses.replace(case, note=case.note + filler * k)  # noqa: E731
    while sum(example_tokens(grow(hi), fmt, tok)) < max_length and hi < 1 << 16:
        hi *= 2
    while lo < hi:  # most filler that stays within max_length
        mid = (lo + hi + 1) // 2
        if sum(example_tokens(grow(mid), fmt, tok)) <= max_length:
            lo = mid
        else:
            hi = mid - 1
    c = grow(lo)
    return (c, *example_tokens(c, fmt, tok))


# ---------------------------------------------------------------- estimates
def estimate_for(shape, *, seq_len, batch, devices, zero, grad_ckpt, lora_r, load_in_4bit, device,
                 logit_tokens=None) -> int:
    from train.memory import estimate

    return estimate(shape, seq_len=seq_len, batch=batch, gpus=devices, zero=zero, grad_ckpt=grad_ckpt,
                    lora_r=lora_r, load_in_4bit=load_in_4bit, device=device, logit_tokens=logit_tokens)["total"]


def knobs(shape, settings: dict, budget_bytes: float) -> list[dict]:
    """What would make the run fit, one knob at a time and all together, with the estimate for each."""
    from train.memory import GiB

    s = dict(settings)
    out = []

    def row(knob, change, **kw):
        est = estimate_for(shape, **{**s, **kw})
        out.append({"knob": knob, "change": change, "estimate_gib": round(est / GiB, 3),
                    "fits": est <= budget_bytes})

    if s["batch"] > 1:
        row("batch", f"per_device_train_batch_size: 1 (gradient_accumulation_steps x{s['batch']} keeps the "
            "effective batch)", batch=1, logit_tokens=None if s["logit_tokens"] is None
            else s["logit_tokens"] // s["batch"])
    if not s["grad_ckpt"]:
        row("gradient checkpointing", "gradient_checkpointing: true", grad_ckpt=True)
    if s["zero"] < 3 and s["devices"] > 1:
        row("ZeRO stage", "ZeRO-3 (ds_configs/zero3.json)", zero=3)
    lo, hi = 0, s["seq_len"]
    ratio = (s["logit_tokens"] / (s["batch"] * s["seq_len"])) if s["logit_tokens"] else None
    while lo < hi:  # the longest sequence that fits with everything else as is
        mid = (lo + hi + 1) // 2
        lt = None if ratio is None else max(1, int(ratio * s["batch"] * mid))
        if estimate_for(shape, **{**s, "seq_len": mid, "logit_tokens": lt}) <= budget_bytes:
            lo = mid
        else:
            hi = mid - 1
    if lo < s["seq_len"]:
        lt = None if ratio is None else max(1, int(ratio * s["batch"] * lo))
        row("max_length", f"max_length: {lo} (longer examples are truncated)" if lo else
            "no max_length fits: change the other knobs", seq_len=max(lo, 1), logit_tokens=lt)
    all_kw = {"batch": 1, "grad_ckpt": True, "zero": 3 if s["devices"] > 1 else s["zero"]}
    if s["logit_tokens"] is not None:
        all_kw["logit_tokens"] = s["logit_tokens"] // s["batch"]
    row("all of batch, checkpointing, ZeRO-3", "batch 1 + gradient_checkpointing + ZeRO-3", **all_kw)
    return out


# ---------------------------------------------------------------- the measured steps
def child_env(scratch: Path) -> dict:
    """Caches of every library the steps touch go to the scratch folder: nothing written elsewhere."""
    env = dict(os.environ)
    cache = scratch / "cache"
    env.update(HF_HOME=str(cache / "hf"), HF_DATASETS_CACHE=str(cache / "hf" / "datasets"),
               XDG_CACHE_HOME=str(cache), MPLCONFIGDIR=str(cache / "matplotlib"),
               TRITON_CACHE_DIR=str(cache / "triton"), TORCH_EXTENSIONS_DIR=str(cache / "torch_extensions"),
               OPCLAIM_CACHE=str(cache / "opclaim"), HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_probe(recipe: Path, accel: dict, *, model_dir: Path, train_file: Path, run_dir: Path, steps: int,
              scratch: Path, timeout: float | None = None) -> dict:
    """A few optimizer steps through `accelerate launch -m train.probe` (or one process without an
    accelerate config); per-rank measurements and the child's exit code."""
    probe_out = scratch / "probe"
    shutil.rmtree(probe_out, ignore_errors=True)
    train_args = ["--probe-out", str(probe_out), "--config", str(recipe), "--model_name_or_path", str(model_dir),
                  "--train_file", str(train_file), "--eval_file", "", "--val_fraction", "0",
                  "--output_dir", str(run_dir), "--max_steps", str(steps), "--eval_strategy", "no",
                  "--save_strategy", "no", "--report_to", "none", "--logging_steps", "1",
                  "--prompt_mode", "finetuned", "--disable_tqdm", "true", "--resume_from_checkpoint", ""]
    if accel["file"]:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accel["file"],
               "--main_process_port", str(free_port()), "-m", "train.probe", *train_args]
    else:
        cmd = [sys.executable, "-m", "train.probe", *train_args]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=child_env(scratch), capture_output=True, text=True, timeout=timeout)
    (scratch / "probe.log").write_text(res.stdout + res.stderr, encoding="utf-8")
    ranks = sorted((json.loads(p.read_text()) for p in probe_out.glob("probe-rank*.json")), key=lambda r: r["rank"])
    tail = res.stderr.strip().splitlines()[-1:] if res.returncode else []
    oom = "out of memory" in res.stderr.lower() or "OutOfMemoryError" in res.stderr
    return {"returncode": res.returncode, "ranks": ranks, "wall_s": round(time.perf_counter() - t0, 1),
            "command": " ".join(cmd[1:3] + ["..."]), "log": str(scratch / "probe.log"),
            "error_tail": tail[0][:300] if tail else "", "out_of_memory": oom}


def step_seconds(ranks: list[dict]) -> float | None:
    """Mean optimizer-step time after the first (warm-up), slowest rank."""
    per = [r["step_s"][1:] or r["step_s"] for r in ranks if r.get("step_s")]
    return max(sum(x) / len(x) for x in per) if per else None


def planned_steps(targs, n_train: int | None, per_step: int) -> int | None:
    if targs.max_steps and targs.max_steps > 0:
        return int(targs.max_steps)
    if not n_train:
        return None
    return int(math.ceil(n_train / per_step) * math.ceil(targs.num_train_epochs))
