"""The training run: data -> 4-bit base + LoRA -> SFTTrainer -> adapter, tokenizer, run record.

Output folder: adapter_model.safetensors + adapter_config.json (PEFT), tokenizer files,
opclaim_run.json (written last: its presence means the run finished), runs/ (TensorBoard),
loss.png, checkpoint-N/ folders with completion markers.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import opclaim  # noqa: F401  (offline before any HF import)
from opclaim import artifacts
from opclaim.errors import InputError
from opclaim.io import atomic_write, read_yaml
from opclaim.registry import load_tokenizer
from train import checkpoint, data, frozen_cache
from train import model as model_mod

log = logging.getLogger("train")
RUN_FILE = artifacts.TrainRun.FILE


class WithholdText(logging.Filter):
    """TRL's prefix-mismatch warning quotes decoded prompt tokens, which can hold note text (PHI)."""

    def filter(self, record):
        if "tokenized prompt is not a prefix" in str(record.msg):
            record.msg, record.args = ("tokenized prompt is not a prefix of prompt+completion; the "
                                       "completion starts where they diverge (text withheld)"), ()
        return True


def _fix_report_to(targs) -> None:
    # Local TensorBoard files only: a remote tracker would ship run metadata off the machine.
    wanted = targs.report_to if isinstance(targs.report_to, list) else [targs.report_to]
    bad = [r for r in wanted if r not in ("tensorboard", "none", None)]
    if bad:
        raise InputError(f"report_to {bad} refused: only 'tensorboard' (local files) is allowed",
                         field="report_to")
    targs.report_to = ["tensorboard"] if "tensorboard" in wanted else []


def _adapters_to(model, dtype) -> None:
    """TRL casts trainable adapter weights to bf16 for quantised bases; on CPU we compute in fp32
    (bf16 CPU matmuls are slow), and ZeRO-3 needs one dtype across persistent params."""
    for p in model.parameters():
        if p.requires_grad and p.dtype != dtype:
            p.data = p.data.to(dtype)


def _losses(history: list[dict]) -> tuple[list, list]:
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    return train, val


def plot_losses(history: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train, val = _losses(history)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), label="train")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (claim tokens)")
    ax.legend()
    fig.tight_layout()
    with atomic_write(out, mode="wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


def main(margs, dargs, targs, extra_callbacks=()) -> int:
    import torch
    from transformers import set_seed

    from train.trainer import ClaimSFTTrainer

    t0 = time.time()
    _fix_report_to(targs)
    out = Path(targs.output_dir)
    tok = load_tokenizer(margs.model_name_or_path)
    # Read now, not after training: a refused record must not cost a run.
    source = artifacts.load_optional(artifacts.ModelSource, margs.model_name_or_path)
    fmt = data.choose_format(tok, dargs.prompt_format)
    splits = data.load_splits(dargs)
    train_ds, val_ds, rag_facts = data.build(splits, dargs, fmt, tok, seed=targs.seed)
    if val_ds is None:
        targs.eval_strategy = "no"

    # Seed before the adapter exists: LoRA A is initialised randomly when the model is wrapped,
    # which happens before Trainer seeds; without this two same-seed runs differ.
    set_seed(targs.seed)
    model, facts = model_mod.load_base(margs, padding_free=model_mod.is_padding_free(targs))
    callbacks = [checkpoint.CompletionMarker(), stopper := checkpoint.StopOnSignal(), *extra_callbacks]
    trainer = ClaimSFTTrainer(model=model, args=targs, train_dataset=train_ds, eval_dataset=val_ds,
                              processing_class=tok, peft_config=model_mod.lora_config(margs), callbacks=callbacks)
    _adapters_to(trainer.model, model_mod.compute_dtype())
    cache = frozen_cache.attach_to_trainer(trainer, margs)  # None unless cache_frozen_layers
    if trainer.accelerator.is_main_process:
        trainer.model.print_trainable_parameters()

    resume = checkpoint.resolve_resume(targs.resume_from_checkpoint, out)
    if trainer.accelerator.is_main_process:
        for p in checkpoint.set_aside_incomplete(out):
            log.warning("set aside checkpoint without completion marker: %s", p.name)
    trainer.accelerator.wait_for_everyone()
    if resume:
        log.warning("resuming from %s", resume)
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    if stopper.stopped:
        if cache is not None:
            cache.detach(trainer.model)
        log.warning("stopped on signal after a complete checkpoint; exit %d (requeue)", checkpoint.EXIT_REQUEUE)
        return checkpoint.EXIT_REQUEUE

    final_val = None
    if val_ds is not None:  # reuse an evaluation made at the last step rather than repeat it
        last = [h for h in trainer.state.log_history if "eval_loss" in h]
        final_val = (last[-1]["eval_loss"] if last and last[-1].get("step") == trainer.state.global_step
                     else trainer.evaluate()["eval_loss"])
    if cache is not None:
        cache.detach(trainer.model)  # the whole model again before it is saved
    trainer.save_model(str(out))  # PEFT adapter as safetensors (ZeRO-3 gathers it first)
    if trainer.accelerator.is_main_process:
        tok.save_pretrained(out)
        history = trainer.state.log_history
        train_l, _ = _losses(history)
        plot_losses(history, out / "loss.png")
        write_run_record(out, margs, dargs, targs, fmt.name, facts, data.summary(splits),
                         final_train=train_l[-1][1] if train_l else None, final_val=final_val,
                         wall=time.time() - t0, steps=trainer.state.global_step,
                         world=trainer.accelerator.num_processes, source=source,
                         zero=zero_facts(trainer), torch_version=torch.__version__,
                         prompt_mode=dargs.prompt_mode, rag=rag_facts)
    trainer.accelerator.wait_for_everyone()
    return 0


def zero_facts(trainer) -> dict:
    """What DeepSpeed actually ran (not what the config asked for)."""
    engine = trainer.model_wrapped
    stage = engine.zero_optimization_stage() if hasattr(engine, "zero_optimization_stage") else None
    partitioned = sum(1 for p in trainer.model.parameters() if hasattr(p, "ds_id"))
    return {"deepspeed": stage is not None, "zero_stage": stage, "zero3_partitioned_params": partitioned}


def _jsonable(obj):
    try:
        json.dumps(obj)
        return obj
    except TypeError:
        return str(obj)


def write_run_record(out: Path, margs, dargs, targs, fmt_name, facts, summary, *, final_train, final_val,
                     wall, steps, world, zero, torch_version, source=None, prompt_mode="finetuned",
                     rag=None) -> None:
    from dataclasses import asdict

    base = Path(margs.model_name_or_path)
    tr = {k: _jsonable(v) for k, v in targs.to_dict().items()}
    tr = {k: v for k, v in tr.items() if "token" not in k or k in ("eos_token", "pad_token")}
    record = artifacts.TrainRun(
        prompt_format=fmt_name, prompt_mode=prompt_mode, rag=rag or None, base_model=str(base.resolve()),
        base_model_source=source,
        **facts, world_size=world, **zero, data=summary, final_train_loss=final_train,
        final_val_loss=final_val, global_step=steps, wall_time_s=round(wall, 1), torch=torch_version,
        config=json.loads(json.dumps({"model": asdict(margs), "data": asdict(dargs), "training": tr},
                                     default=str)),
        date=artifacts.now_utc())
    artifacts.save(record, out)


def parse(argv=None):
    """(ModelArgs, DataArgs, SFTConfig) from --config RECIPE and --key value overrides; a missing or
    malformed recipe is an InputError (exit 2), not a traceback."""
    import sys

    from trl import SFTConfig, TrlParser

    from opclaim import shipped
    from train.config import DataArgs, ModelArgs

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        i = argv.index("--config")
        recipe = shipped.resolve(argv[i + 1]) if i + 1 < len(argv) else None
        if recipe is None or not recipe.is_file():
            raise InputError("recipe not found", file=recipe, field="--config")
        # TrlParser re-reads it; the hardened reader refuses duplicate keys, deep nesting, huge numbers first
        doc = read_yaml(recipe, "recipe")
        if not isinstance(doc, dict):
            raise InputError("recipe is not a YAML mapping", file=recipe)
        argv[i + 1] = str(recipe)  # the installed copy when the working directory has none
    parser = TrlParser((ModelArgs, DataArgs, SFTConfig))
    try:
        return parser.parse_args_and_config(argv)
    except ValueError as e:  # TRL/transformers reject bad keys and values this way
        raise InputError(f"bad training arguments: {str(e)[:300]}", field="--config") from None


def run_cli(argv=None) -> int:
    """Parse and train; errors propagate to the shared handler (opclaim/exits.py)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("trl.trainer.sft_trainer").addFilter(WithholdText())
    margs, dargs, targs = parse(argv)
    return main(margs, dargs, targs)
