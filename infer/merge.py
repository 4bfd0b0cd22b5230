"""Merge a LoRA adapter into its base model: `opclaim merge --model DIR --adapter DIR --out DIR`.

For an adapter trained on a 4-bit (nf4) base, the default is to merge into the NF4-dequantised
base weights: those are the weights the adapter was trained against, so the merged model
reproduces the trained model. `--from-bf16` merges into the original full-precision weights
instead (the adapter then sits on slightly different base weights than it was trained on).

The output is a plain model folder: safetensors weights, the tokenizer, a generation config
whose eos ids include the end-of-claim token (so any runtime stops where training stopped), and
the adapter's opclaim_run.json (prompt format, training facts) plus opclaim_merge.json.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import opclaim  # noqa: F401
from opclaim.errors import InputError


def trained_in_4bit(run_info: dict) -> bool:
    from infer.generate import find_key

    return bool(find_key(run_info, "load_in_4bit") or find_key(run_info, "load_4bit"))


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


def merge(model_dir, adapter_dir, out_dir, *, from_bf16: bool = False, dtype: str | None = None) -> dict:
    import torch
    from peft import PeftModel
    from transformers import BitsAndBytesConfig

    import prompts
    from infer.generate import check_adapter, read_run_info
    from opclaim.registry import check_model_dir, load_model, load_tokenizer

    mdir, out = check_model_dir(model_dir), Path(out_dir)
    if out.resolve() in (mdir.resolve(), Path(adapter_dir).resolve()):
        raise InputError("--out must be a new folder, not the model or adapter folder", file=out)
    tok = load_tokenizer(mdir)
    config = json.loads((mdir / "config.json").read_text(encoding="utf-8"))
    saved_dtype = getattr(torch, dtype or config.get("torch_dtype") or config.get("dtype") or "float32")
    a = Path(adapter_dir)
    run = read_run_info(a) if a.is_dir() else {}
    nf4 = trained_in_4bit(run) and not from_bf16
    if nf4:
        # Same quantisation as train/model.py: nf4 + double quant. Dequantising gives exactly the
        # weights the 4-bit training forward pass used.
        q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.float32)
        model = load_model(mdir, dtype=torch.float32, quantization_config=q)
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

    fmt_name = run.get("prompt_format") if isinstance(run.get("prompt_format"), str) else None
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
    info = {"base_model": str(mdir.resolve()), "adapter": str(a.resolve()),
            "merged_into": "nf4-dequantised" if nf4 else "original",
            "dtype": str(saved_dtype).replace("torch.", ""), "prompt_format": fmt.name,
            "untied_lm_head": untied,
            "eos_token_id": gen.eos_token_id}
    run_out = dict(run)
    run_out.setdefault("prompt_format", fmt.name)
    (tmp / "opclaim_run.json").write_text(json.dumps(run_out, indent=2) + "\n", encoding="utf-8")
    (tmp / "opclaim_merge.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)  # a half-written folder never carries the final name
    return info
