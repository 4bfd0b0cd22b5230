"""Fine-tune with LoRA/QLoRA on op-note -> claim pairs.

Usage:
    accelerate launch --config_file ds_configs/<strategy>.yaml -m train --config train/recipes/<recipe>.yaml [--key value ...]
    python -m train --config train/recipes/<recipe>.yaml [--key value ...]     (= opclaim train)

Example (2 CPU ranks, ZeRO-3, tiny Phi-3):
    accelerate launch --config_file ds_configs/zero3-cpu2.yaml -m train \\
        --config train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml \\
        --model_name_or_path models/tiny --train_file data/train.jsonl --output_dir runs/tiny

Every key of the recipe (ModelArgs, DataArgs in train/config.py; TRL's SFTConfig) can be
overridden with `--key value` (`--key-name` or `--key_name`). Exit codes (opclaim/exits.py): 0 done,
2 bad input, 75 stopped on SIGTERM/SIGUSR1 after saving a complete checkpoint (run the same command
again to resume), 1 internal failure (no traceback unless --debug or OPCLAIM_DEBUG=1).
"""

import sys

import opclaim  # noqa: F401  (offline before any HF import)
from opclaim.exits import call, take_debug_flag


def entry(argv=None) -> int:
    from train.run import run_cli

    argv, debug = take_debug_flag(sys.argv[1:] if argv is None else argv)
    return call("train", run_cli, argv, debug=debug)


if __name__ == "__main__":
    sys.exit(entry())
