"""`opclaim doctor`: preflight before a long training run (environment, shape check, inference).
The logic is in opclaim/doctor.py."""

from __future__ import annotations

from opclaim.cli import verb

EXAMPLES = """
opclaim doctor
opclaim doctor --recipe train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml --model models/tiny-phi3 --json doctor.json
opclaim doctor --recipe train/recipes/phi3-mini-128k_qlora_zero3-4gpu.yaml --train-file data/split/train.jsonl --gpu-gb 24
"""


def register(subs) -> None:
    p = verb(subs, "doctor", "Preflight: environment, a few measured training steps of the recipe "
             "(random weights), memory fit, merge and generation.", EXAMPLES, run)
    p.add_argument("--recipe", help="training recipe YAML (train/recipes/); without it: the environment only")
    p.add_argument("--accelerate-config", help="accelerate config (default: the one the recipe's first line names)")
    p.add_argument("--model", help="model folder (config.json + tokenizer; weights not read); "
                   "default: the recipe's model_name_or_path")
    p.add_argument("--train-file", help="training cases JSONL: its longest example is measured "
                   "(default: a synthetic example at the recipe's max_length)")
    p.add_argument("--gpu-gb", type=float, help="memory per GPU to fit into, GiB (default: the smallest visible GPU)")
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--scratch", help="folder for the random-weight model, the steps and the merge (kept); "
                   "default: a temporary folder, removed")
    p.epilog += "\n\nexit 0 ready; 2 something the recipe needs is missing or would not fit (named); 1 internal error"


def run(args) -> int:
    from opclaim.doctor import run as doctor

    return doctor(args)
