"""Loading a model (+ LoRA adapter) for generation, and the checks that refuse a wrong adapter.

The prompt format comes from the artifacts, not from guessing: an adapter's training run record
(opclaim_run.json) or a merged model's merge record (opclaim_merge.json); otherwise the tokenizer
decides (prompts.detect_format).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import opclaim  # noqa: F401  (offline environment before transformers)
from opclaim import artifacts
from opclaim.errors import InputError


@dataclass
class Loaded:
    model: object
    tokenizer: object
    fmt: object  # prompts.PromptFormat
    stop_ids: list[int]
    info: dict = field(default_factory=dict)  # what identifies the weights, for the run config
    trained: dict | None = None  # {"prompt_mode", "k", "from"} of the weights' training run, when recorded

    @property
    def context(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "max_position_embeddings", 0) or getattr(self.tokenizer, "model_max_length", 0))


def trained_format(folder: Path) -> str | None:
    """The prompt format a folder's weights were trained with, from its records; None when unknown."""
    merged = artifacts.load_optional(artifacts.MergeRecord, folder)
    if merged is not None:
        return merged.prompt_format
    run = artifacts.load_optional(artifacts.TrainRun, folder)
    return run.prompt_format if run is not None else None


def trained_mode(folder: Path) -> dict | None:
    """The prompt mode (and RAG k) a folder's weights were trained with, from its training run record
    (an adapter's own, or the copy a merged model carries); None when there is no record."""
    run = artifacts.load_optional(artifacts.TrainRun, folder)
    if run is None:
        return None
    return {"prompt_mode": run.prompt_mode, "k": (run.rag or {}).get("k"), "from": str(Path(folder) / run.FILE)}


ALLOWED_MODES = {"finetuned": ("finetuned",), "rag": ("rag",), "mixed": ("finetuned", "rag")}


def weights_mode(model_dir, adapter=None) -> dict | None:
    """The training mode of the weights a run loads: the adapter's record, else the (merged) model's."""
    return (trained_mode(Path(adapter)) if adapter else None) or trained_mode(Path(model_dir))


def check_mode(trained: dict | None, mode: str, k: int | None = None, *, allow: bool = False) -> None:
    """Refuse to run weights in a prompt mode they were not trained on (the prompt would not be the
    one they learned): a retrieval-tuned model without its examples, a plain fine-tune with them,
    or another number of examples. Base models (no training record) run in every mode."""
    if trained is None or allow:
        return
    want = ALLOWED_MODES.get(trained["prompt_mode"], (trained["prompt_mode"],))
    if mode not in want:
        raise InputError(f"these weights were trained in prompt mode {trained['prompt_mode']} and run in "
                         f"--mode {' or '.join(want)}, not --mode {mode} (the prompt would not be the one they "
                         "learned); pass --allow-mode-mismatch to run them anyway", file=trained["from"],
                         field="prompt_mode")
    if mode == "rag" and trained.get("k") and k is not None and k != trained["k"]:
        raise InputError(f"these weights were trained with {trained['k']} example claims per prompt, not "
                         f"--k {k}; pass --allow-mode-mismatch to run them anyway", file=trained["from"],
                         field="rag.k")


def check_adapter(adapter: str | Path, model) -> Path:
    """Refuse an adapter folder that is incomplete or made for another base (shapes must fit)."""
    from safetensors import safe_open

    a = Path(adapter)
    if not a.is_dir():
        raise InputError("adapter folder not found", file=a)
    if not (a / "adapter_config.json").is_file():
        raise InputError("no adapter_config.json: not a PEFT adapter folder", file=a)
    weights = a / "adapter_model.safetensors"
    if not weights.is_file():
        raise InputError("no adapter_model.safetensors (safetensors only)", file=a)
    modules = dict(model.named_modules())
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            if ".lora_A" not in key and ".lora_B" not in key:
                continue
            # base_model.model.<module path>.lora_A.weight -> <module path>
            path = key.split(".lora_")[0].removeprefix("base_model.model.")
            mod = modules.get(path)
            shape = f.get_slice(key).get_shape()
            if mod is None or not hasattr(mod, "in_features"):
                # the tensor name goes in `field` (not redacted): it names structure, never data
                raise InputError("adapter targets a module this base model lacks: "
                                 "the adapter was trained on another base", file=weights, field=key)
            want = (shape[1] == mod.in_features) if ".lora_A" in key else (shape[0] == mod.out_features)
            if not want:
                raise InputError(f"adapter shape {tuple(shape)} does not fit the base model's module "
                                 f"({mod.in_features}->{mod.out_features}): the adapter was trained on "
                                 "another base", file=weights, field=key)
    return a


def untie_adapted_head(model, adapter_dir) -> bool:
    """Give lm_head its own copy of the embedding matrix when the adapter changes lm_head.

    Models like SmolLM2 tie lm_head to the input embeddings; merging a LoRA on lm_head into the
    shared matrix would also move every input embedding, so the merged model would no longer be
    the trained one. Untied first, the merge changes the output head only. Returns whether it untied.
    """
    import torch

    cfg = json.loads((Path(adapter_dir) / "adapter_config.json").read_text(encoding="utf-8"))
    targets = cfg.get("target_modules") or []
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if "lm_head" not in targets or head is None or head.weight is not emb.weight:
        return False
    head.weight = torch.nn.Parameter(emb.weight.detach().clone())
    model.config.tie_word_embeddings = False
    text = getattr(model.config, "get_text_config", lambda: None)()
    if text is not None and text is not model.config:
        text.tie_word_embeddings = False
    return True


def load(model_dir: str | Path, adapter: str | Path | None = None, *, load_4bit: bool = False,
         merge: bool = True) -> Loaded:
    """Model (+ adapter, merged in memory unless 4-bit) and tokenizer, ready for generation."""
    import torch

    import prompts
    from opclaim.registry import check_model_dir, load_model, load_tokenizer, nf4_config

    mdir = check_model_dir(model_dir)
    tok = load_tokenizer(mdir)
    tok.padding_side = "left"  # decoder-only batches: prompts end where generation starts
    kwargs = {"dtype": torch.float32}
    if not torch.cuda.is_available():
        from infer import attention

        kwargs["attn_implementation"] = attention.register()  # SDPA, with faster CPU decode steps
    if load_4bit:
        kwargs["quantization_config"] = nf4_config(torch.float32)
    model = load_model(mdir, **kwargs)
    info = {"model": str(mdir.resolve()), "model_fingerprint": artifacts.folder_fingerprint(mdir),
            "load_4bit": load_4bit}
    fmt = prompts.detect_format(tok)
    merged_fmt = trained_format(mdir)  # a merged model keeps its training format
    trained = trained_mode(mdir)
    if merged_fmt in prompts.FORMATS:
        fmt = prompts.get_format(merged_fmt)
    if adapter:
        from peft import PeftModel

        a = check_adapter(adapter, model)
        trained_fmt = trained_format(a)
        trained = trained_mode(a) or trained
        if merge and not load_4bit:
            untie_adapted_head(model, a)  # a tied head would carry the merge into the input embeddings
        model = PeftModel.from_pretrained(model, str(a), is_trainable=False)
        if merge and not load_4bit:  # merging into 4-bit layers would re-quantise: keep it separate
            model = model.merge_and_unload()
        info.update(adapter=str(a.resolve()), adapter_fingerprint=artifacts.folder_fingerprint(a))
        if trained_fmt in prompts.FORMATS:
            fmt = prompts.get_format(trained_fmt)
    model.eval()
    return Loaded(model, tok, fmt, prompts.end_of_claim_ids(fmt, tok), info, trained)
