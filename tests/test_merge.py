"""opclaim merge on the tiny Phi-3: merged greedy outputs == unmerged PEFT outputs (fp32 and nf4 bases)."""

import json

import pytest
import torch

import prompts
from opclaim.registry import load_model

NOTES = ["Laparoscopic cholecystectomy for symptomatic cholelithiasis.",
         "Open appendectomy. The appendix was inflamed but not perforated. Skin closed with staples.",
         "Right inguinal hernia repair with mesh."]
TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj", "lm_head"]


def _adapter(model, out, run_info: dict | None):
    """A LoRA with random (non-zero) B on every linear layer: merging changes the model.
    `run_info`: TrainRun fields of its run record (None: no record)."""
    from peft import LoraConfig, get_peft_model

    from opclaim.artifacts import TrainRun, save

    torch.manual_seed(1)
    peft = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False))
    for name, p in peft.named_parameters():
        if "lora_B" in name:  # strong enough to change greedy outputs of the random model
            p.data.normal_(0, 0.5)
    peft.save_pretrained(out, safe_serialization=True)
    if run_info is not None:
        save(TrainRun(**{"prompt_format": "phi3", "load_in_4bit": False, **run_info}), out)
    return peft


def _outputs(model, tokenizer):
    from infer.engines import generate_batch
    from infer.loading import Loaded

    fmt = prompts.detect_format(tokenizer)
    loaded = Loaded(model.eval(), tokenizer, fmt, prompts.end_of_claim_ids(fmt, tokenizer))
    return generate_batch(loaded, [prompts.prompt(n, "finetuned", fmt=fmt) for n in NOTES], max_new_tokens=20)[0]


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_merge_fp32_equals_unmerged_peft(tiny_phi3_dir, tiny_tokenizer, tmp_path):
    from opclaim.cli import main

    base_out = _outputs(load_model(tiny_phi3_dir), tiny_tokenizer)
    peft = _adapter(load_model(tiny_phi3_dir), tmp_path / "adapter",
                    {"prompt_format": "phi3", "load_in_4bit": False})
    unmerged = _outputs(peft, tiny_tokenizer)
    assert unmerged != base_out  # the adapter matters, so equality below is meaningful
    assert main(["merge", "--model", str(tiny_phi3_dir), "--adapter", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "merged")]) == 0
    merged_dir = tmp_path / "merged"
    assert _outputs(load_model(merged_dir), tiny_tokenizer) == unmerged
    gen = json.loads((merged_dir / "generation_config.json").read_text())
    end = tiny_tokenizer.convert_tokens_to_ids("<|end|>")
    assert end in gen["eos_token_id"]
    assert json.loads((merged_dir / "opclaim_run.json").read_text())["prompt_format"] == "phi3"
    assert json.loads((merged_dir / "opclaim_merge.json").read_text())["merged_into"] == "original"
    assert not list(merged_dir.glob("*.bin")) and list(merged_dir.glob("*.safetensors"))


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_merge_4bit_adapter_into_dequantised_nf4(tiny_phi3_dir, tiny_tokenizer, tmp_path):
    """Adapter trained on a real bitsandbytes nf4 base: the default merge reproduces the
    unmerged 4-bit PEFT model; --from-bf16 merges into the original weights instead."""
    from safetensors.torch import load_file

    from opclaim.cli import main
    from opclaim.registry import nf4_config

    base4 = load_model(tiny_phi3_dir, dtype=torch.float32, quantization_config=nf4_config(torch.float32))
    assert type(base4.model.layers[0].self_attn.qkv_proj).__name__ == "Linear4bit"
    peft = _adapter(base4, tmp_path / "adapter", {"load_in_4bit": True})
    unmerged = _outputs(peft, tiny_tokenizer)

    assert main(["merge", "--model", str(tiny_phi3_dir), "--adapter", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "nf4")]) == 0
    assert json.loads((tmp_path / "nf4" / "opclaim_merge.json").read_text())["merged_into"] == "nf4-dequantised"
    assert "quantization_config" not in json.loads((tmp_path / "nf4" / "config.json").read_text())
    assert _outputs(load_model(tmp_path / "nf4"), tiny_tokenizer) == unmerged

    assert main(["merge", "--model", str(tiny_phi3_dir), "--adapter", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "orig"), "--from-bf16"]) == 0
    w_nf4 = load_file(str(tmp_path / "nf4" / "model.safetensors"))
    w_orig = load_file(str(tmp_path / "orig" / "model.safetensors"))
    key = "model.layers.0.self_attn.qkv_proj.weight"
    assert not torch.equal(w_nf4[key], w_orig[key])  # quantisation error is what separates them
    assert torch.allclose(w_nf4[key], w_orig[key], atol=0.5)


def test_merge_refuses_adapter_for_another_base(tiny_phi3_dir, tmp_path, capsys):
    from opclaim.cli import main
    from opclaim.registry import build_tiny_phi3

    other = build_tiny_phi3(tmp_path / "other", hidden=32)
    _adapter(load_model(other), tmp_path / "adapter", None)
    assert main(["merge", "--model", str(tiny_phi3_dir), "--adapter", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "m")]) == 2
    assert "another base" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_merge_refuses_incomplete_adapter(tiny_phi3_dir, tmp_path, capsys, missing):
    from opclaim.cli import main

    _adapter(load_model(tiny_phi3_dir), tmp_path / "adapter", None)
    (tmp_path / "adapter" / missing).unlink()
    assert main(["merge", "--model", str(tiny_phi3_dir), "--adapter", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "m")]) == 2
    assert missing.split(".")[0] in capsys.readouterr().err


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_merge_into_a_tied_head_keeps_the_input_embeddings(tiny_phi3_dir, tiny_tokenizer, tmp_path):
    """SmolLM2 ties lm_head to the input embeddings. A LoRA on lm_head merged into the shared
    matrix would also move every input embedding; merge unties first, so merged == unmerged."""
    from opclaim.cli import main

    tied_dir = tmp_path / "tied"
    m = load_model(tiny_phi3_dir)
    m.config.tie_word_embeddings = True
    m.tie_weights()
    assert m.get_output_embeddings().weight is m.get_input_embeddings().weight
    m.save_pretrained(tied_dir, safe_serialization=True)
    tiny_tokenizer.save_pretrained(tied_dir)
    base = load_model(tied_dir)
    assert base.get_output_embeddings().weight is base.get_input_embeddings().weight
    emb = base.get_input_embeddings().weight.detach().clone()
    peft = _adapter(base, tmp_path / "adapter", {"prompt_format": "phi3", "load_in_4bit": False})
    unmerged = _outputs(peft, tiny_tokenizer)
    assert main(["merge", "--model", str(tied_dir), "--adapter", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "merged")]) == 0
    merged = load_model(tmp_path / "merged")
    assert torch.equal(merged.get_input_embeddings().weight, emb)  # only the head moved
    assert not torch.equal(merged.get_output_embeddings().weight, emb)
    assert _outputs(merged, tiny_tokenizer) == unmerged
    assert json.loads((tmp_path / "merged" / "opclaim_merge.json").read_text())["untied_lm_head"] is True
    from infer.loading import load  # `opclaim infer --adapter` merges in memory the same way

    loaded = load(tied_dir, tmp_path / "adapter")
    assert torch.equal(loaded.model.get_input_embeddings().weight, emb)
    assert _outputs(loaded.model, tiny_tokenizer) == unmerged
