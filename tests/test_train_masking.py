"""Loss masking: -100 on every prompt token, nothing masked in the claim; special tokens survive."""

import pytest
import torch

from tests.train_helpers import make_cases


def _trainer(tmp_path, model_dir, fmt_name, n=4):
    from trl import SFTConfig

    from opclaim.registry import load_tokenizer
    from train import data
    from train.config import ModelArgs
    from train.model import load_base, lora_config
    from train.trainer import ClaimSFTTrainer

    tok = load_tokenizer(model_dir)
    fmt = data.choose_format(tok, fmt_name)
    cases = make_cases(n, seed=3)
    margs = ModelArgs(model_name_or_path=str(model_dir))
    model, _ = load_base(margs)
    args = SFTConfig(output_dir=str(tmp_path / "o"), use_cpu=True, bf16=False, max_length=1024,
                     report_to=[], gradient_checkpointing=False, per_device_train_batch_size=2)
    trainer = ClaimSFTTrainer(model=model, args=args, train_dataset=data.to_dataset(cases, fmt, tok),
                              processing_class=tok, peft_config=lora_config(margs))
    return trainer, tok, fmt, cases


@pytest.mark.parametrize("fmt_name", ["phi3", "generic"])
def test_prompt_masked_claim_kept(tmp_path, tiny_phi3_dir, fmt_name):
    from prompts import encode, end_of_claim, prompt, target

    trainer, tok, fmt, cases = _trainer(tmp_path, tiny_phi3_dir, fmt_name)
    assert fmt.name == fmt_name
    for row, case in zip(trainer.train_dataset, cases, strict=True):
        ids, labels = row["input_ids"], row["labels"]
        p_ids = encode(tok, prompt(case.note, fmt=fmt, tokenizer=tok))
        assert ids[: len(p_ids)] == p_ids  # the prompt is tokenized exactly as at inference
        assert all(x == -100 for x in labels[: len(p_ids)])
        assert labels[len(p_ids):] == ids[len(p_ids):]  # every claim token (and the stop tokens) is learned
        learned = tok.decode(ids[len(p_ids):], skip_special_tokens=False)
        assert learned.startswith(target(case.claim, fmt))
        assert end_of_claim(fmt, tok) in learned


def test_special_tokens_and_newlines_survive(tmp_path, tiny_phi3_dir):
    trainer, tok, fmt, cases = _trainer(tmp_path, tiny_phi3_dir, "phi3")
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"][0]
    kept = [int(x) for x in labels if x != -100]
    text = tok.decode(kept, skip_special_tokens=False)
    ph = {t: tok.convert_tokens_to_ids(t) for t in ("<|placeholder2|>", "<|placeholder3|>",
                                                   "<|placeholder4|>", "<|placeholder5|>", "<|end|>")}
    for t, i in ph.items():
        assert i in kept, t  # each section token is one id and is trained on
    assert text.startswith("<|placeholder2|>ICD-10-CM Diagnoses:\n")
    assert "<|placeholder3|>\n<|placeholder4|>CPT Codes with Modifiers:\n" in text
    assert "<|placeholder5|><|end|>" in text
    # The prompt's own special tokens are never learned.
    for t in ("<|system|>", "<|user|>", "<|assistant|>", "<|placeholder1|>"):
        assert tok.convert_tokens_to_ids(t) not in kept
    assert (batch["labels"] == -100).any(dim=1).all()
    assert torch.equal(batch["labels"][batch["labels"] != -100], batch["input_ids"][batch["labels"] != -100])
