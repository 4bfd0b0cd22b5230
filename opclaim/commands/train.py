"""`opclaim train --config RECIPE [--key value ...]`: one fine-tune in this process.

Multi-rank runs keep `accelerate launch --config_file ds_configs/<strategy>.yaml -m train ...` with
the same arguments (train/__main__.py). Every key of the recipe (ModelArgs and DataArgs in
train/config.py, TRL's SFTConfig) can be overridden as `--key-name value`; TRL's underscore
spelling `--key_name value` is accepted too.
"""

from __future__ import annotations

from opclaim.cli import verb

EXAMPLES = """
opclaim train --config train/recipes/smollm2-135m_qlora_cpu.yaml --model-name-or-path models/smollm2 --train-file data/train.jsonl --output-dir runs/smollm2
opclaim train --config train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml --model_name_or_path models/tiny --train_file data/train.jsonl --output_dir runs/tiny --max_steps 20
"""


def register(subs) -> None:
    p = verb(subs, "train", "Fine-tune with LoRA/QLoRA from a recipe, in this process "
             "(ranks: accelerate launch -m train).", EXAMPLES, run)
    p.add_argument("--config", required=True, metavar="RECIPE", help="recipe YAML (train/recipes/)")
    p.set_defaults(passthrough=True)  # every other --key value goes to the recipe parser
    p.epilog += ("\n\nany recipe key: --key-name value (or --key_name value); `python -m train --help` "
                 "lists them all.\nexit 75: stopped on SIGTERM/SIGUSR1 after a complete checkpoint "
                 "(run the same command again to resume)")


def run(args) -> int:
    from train.run import run_cli

    return run_cli(["--config", args.config, *args.overrides])
