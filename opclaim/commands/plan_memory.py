"""`opclaim plan-memory`: will this fine-tune fit? (estimate per device; formula in train/memory.py)."""

from __future__ import annotations

import json

from opclaim.cli import verb

EXAMPLES = """
opclaim plan-memory --model phi3-mini --gpus 4 --gpu-gb 24 --seq-len 4096
opclaim plan-memory --model phi3-medium --gpus 4 --gpu-gb 24 --seq-len 8192 --grad-ckpt
opclaim plan-memory --model models/smollm2 --gpus 1 --gpu-gb 8 --seq-len 2048 --batch-size 4 --zero 0 --json
"""


def register(subs) -> None:
    p = verb(subs, "plan-memory", "Estimate per-GPU memory of a QLoRA fine-tune and the longest sequence that fits.",
             EXAMPLES, run)
    p.add_argument("--model", required=True, help="phi3-mini, phi3-medium, or a model folder (config.json)")
    p.add_argument("--gpus", type=int, default=4, help="devices sharing the job (ZeRO shards over them)")
    p.add_argument("--gpu-gb", type=float, default=24, help="memory per device, GiB")
    p.add_argument("--seq-len", type=int, required=True, help="tokens per example (prompt + claim)")
    p.add_argument("--batch-size", type=int, default=1, help="micro-batch per device")
    p.add_argument("--zero", type=int, choices=(0, 1, 2, 3), default=3, help="DeepSpeed ZeRO stage")
    p.add_argument("--grad-ckpt", action="store_true", help="gradient (activation) checkpointing")
    p.add_argument("--lora-r", type=int, default=64, help="LoRA rank")
    p.add_argument("--no-4bit", action="store_true", help="base weights in bf16 instead of nf4")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")


def run(args) -> int:
    from opclaim.errors import InputError
    from train.memory import plan

    for name in ("gpus", "seq_len", "batch_size", "lora_r"):
        if getattr(args, name) < 1:
            raise InputError("must be >= 1", field=f"--{name.replace('_', '-')}")
    if args.gpu_gb <= 0:
        raise InputError("must be > 0", field="--gpu-gb")
    res = plan(args.model, gpus=args.gpus, gpu_gb=args.gpu_gb, seq_len=args.seq_len, batch=args.batch_size,
               zero=args.zero, grad_ckpt=args.grad_ckpt, lora_r=args.lora_r, load_in_4bit=not args.no_4bit)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    s = res["settings"]
    print(f"model {res['model']['name']}: {s['gpus']} x {s['gpu_gb']:g} GiB, seq len {s['seq_len']}, "
          f"batch {s['batch']}, ZeRO-{s['zero']}, grad ckpt {'on' if s['grad_ckpt'] else 'off'}, "
          f"{'nf4' if s['load_in_4bit'] else 'bf16'} base, LoRA r={s['lora_r']} "
          f"({res['lora_param_count'] / 1e6:.1f} M params)")
    for k, v in res["parts_gib"].items():
        print(f"  {k:<12} {v:8.2f} GiB")
    print(f"  {'total':<12} {res['per_gpu_gib']:8.2f} GiB per GPU -> {'fits' if res['fits'] else 'does NOT fit'}")
    print(f"largest sequence length that fits: {res['max_seq_len']}")
    return 0
