"""Merge a LoRA adapter into its base model: `opclaim merge --model DIR --adapter DIR --out DIR`.

For an adapter trained on a 4-bit (nf4) base, the default is to merge into the NF4-dequantised
base weights: those are the weights the adapter was trained against, so the merged model
reproduces the trained model. `--from-bf16` merges into the original full-precision weights
instead (the adapter then sits on slightly different base weights than it was trained on).

The output is a plain model folder: safetensors weights, the tokenizer, a generation config
whose eos ids include the end-of-claim token (so any runtime stops where training stopped), and
a copy of the adapter's training run record (opclaim_run.json) and the merge record
(opclaim_merge.json, which names the prompt format the merged weights expect); see
opclaim/artifacts.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import opclaim  # noqa: F401
from infer.loading import check_adapter, untie_adapted_head
from opclaim import artifacts
from opclaim.errors import InputError


def merge(model_dir, adapter_dir, out_dir, *, from_bf16: bool = False, dtype: str | None = None) -> dict:
    import torch
    from peft import PeftModel

    import prompts
    from opclaim.registry import check_model_dir, load_model, load_tokenizer, nf4_config

    mdir, out = check_model_dir(model_dir), Path(out_dir)
    if out.resolve() in (mdir.resolve(), Path(adapter_dir).resolve()):
        raise InputError("--out must be a new folder, not the model or adapter folder", file=out)
    tok = load_tokenizer(mdir)
    config = json.loads((mdir / "config.json").read_text(encoding="utf-8"))
    saved_dtype = getattr(torch, dtype or config.get("torch_dtype") or config.get("dtype") or "float32")
    a = Path(adapter_dir)
    run = artifacts.load_optional(artifacts.TrainRun, a) if a.is_dir() else None
    nf4 = bool(run and run.load_in_4bit) and not from_bf16
    if nf4:
        # Same quantisation as training (registry.nf4_config). Dequantising gives exactly the
        # weights the 4-bit training forward pass used.
        model = load_model(mdir, dtype=torch.float32, quantization_config=nf4_config(torch.float32))
        model = model.dequantize(dtype=torch.float32)
    else:
        model = load_model(mdir, dtype=torch.float32)
    check_adapter(a, model)
    untied = untie_adapted_head(model, a)
    merged = PeftModel.from_pretrained(model, str(a), is_trainable=False).merge_and_unload()
    merged = merged.to(saved_dtype)
    if hasattr(merged.config, "quantization_config"):
        del merged.config.quantization_config  # the saved weights are plain tensors
    merged.config.__dict__.pop("_pre_quantization_dtype", None)

    fmt_name = run.prompt_format if run is not None else None
    fmt = prompts.get_format(fmt_name) if fmt_name in prompts.FORMATS else prompts.detect_format(tok)
    gen = merged.generation_config
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]
    stops = [i for i in prompts.end_of_claim_ids(fmt, tok) + eos if i is not None]
    gen.eos_token_id = list(dict.fromkeys(stops))
    if gen.pad_token_id is None:
        gen.pad_token_id = tok.pad_token_id

    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    record = artifacts.MergeRecord(base_model=str(mdir.resolve()), adapter=str(a.resolve()),
                                   merged_into="nf4-dequantised" if nf4 else "original",
                                   dtype=str(saved_dtype).replace("torch.", ""), prompt_format=fmt.name,
                                   untied_lm_head=untied, eos_token_id=gen.eos_token_id)
    if run is not None:  # the merged model carries its training facts (model card, bundles)
        artifacts.save(run, tmp)
    artifacts.save(record, tmp)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # a half-written folder never carries the final name
    return record.to_dict()
