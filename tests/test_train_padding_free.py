"""Padding-free batching on CPU (`sdpa_varlen`, train/attention.py): same loss and gradients as
padded batches on the same examples, and a real training run through it.

Real parts only: the tiny Phi-3, TRL's collators and SFTTrainer (ClaimSFTTrainer), PEFT LoRA.
Equivalence is checked with LoRA dropout off (eval mode): dropout draws masks by batch shape.
Tolerances: losses to 1e-5 relative, gradients to 1e-4 of the largest gradient (float
reduction order is all that differs; observed differences are ~1e-7).
"""

import json
import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT
from tests.train_helpers import make_cases


def test_segment_lengths_from_cu_seq_lens_and_position_ids():
    from train.attention import segment_lengths

    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3]])
    assert segment_lengths(pos, None, 1, 9) == [[3, 2, 4]]
    assert segment_lengths(None, torch.tensor([0, 3, 5, 9], dtype=torch.int32), 1, 9) == [[3, 2, 4]]
    assert segment_lengths(torch.arange(5)[None], None, 2, 5) == [[5], [5]]  # broadcast position ids
    assert segment_lengths(None, None, 1, 7) == [[7]]


def _rows(tok, n=4, seed=3):
    from prompts import detect_format, encode, training_pair

    fmt = detect_format(tok)
    rows = []
    for c in make_cases(n, seed=seed):
        pair = training_pair(c.note, c.claim, fmt=fmt, tokenizer=tok)
        p_ids = encode(tok, pair["prompt"])
        ids = encode(tok, pair["prompt"] + pair["completion"])
        rows.append({"input_ids": ids, "labels": [-100] * len(p_ids) + ids[len(p_ids):]})
    return rows


def _loss_and_grads(model_dir, attn, batch):
    from peft import get_peft_model

    from opclaim.registry import load_model
    from train.config import ModelArgs
    from train.model import attention_impl, lora_config

    torch.manual_seed(0)
    model = load_model(model_dir, dtype=torch.float32, attn_implementation=attention_impl(attn))
    model.config.use_cache = False
    model = get_peft_model(model, lora_config(ModelArgs(model_name_or_path=str(model_dir))))
    model.eval()  # LoRA dropout off
    out = model(**batch)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.item(), grads, out.logits.detach()


def _assert_same(a, b):
    (la, ga, _), (lb, gb, _) = a, b
    assert la == pytest.approx(lb, rel=1e-5)
    assert ga.keys() == gb.keys() and ga
    scale = max(g.abs().max().item() for g in ga.values())
    worst = max((ga[k] - gb[k]).abs().max().item() for k in ga)
    assert worst <= 1e-4 * scale, (worst, scale)


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_padding_free_matches_padded(tiny_phi3_dir, tiny_tokenizer):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    rows = _rows(tiny_tokenizer)
    assert len({len(r["input_ids"]) for r in rows}) > 1  # mixed lengths: the padded batch really pads
    pad_id = tiny_tokenizer.pad_token_id
    padded = DataCollatorForLanguageModeling(pad_token_id=pad_id)(rows)
    free = DataCollatorForLanguageModeling(pad_token_id=pad_id, padding_free=True)(rows)
    assert "attention_mask" not in free and free["input_ids"].shape == (1, sum(len(r["input_ids"]) for r in rows))
    assert (padded["attention_mask"] == 0).any()

    reference = _loss_and_grads(tiny_phi3_dir, "sdpa", padded)
    varlen = _loss_and_grads(tiny_phi3_dir, "sdpa_varlen", free)
    _assert_same(reference, varlen)
    # Per-token logits too: each example's positions in the row equal its row of the padded batch.
    start = 0
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        torch.testing.assert_close(varlen[2][0, start:start + n], reference[2][i, :n], rtol=1e-4, atol=1e-4)
        start += n
    # Boundaries from position_ids alone (no cu_seq_lens) give the same answer.
    bare = {k: free[k] for k in ("input_ids", "labels", "position_ids")}
    _assert_same(reference, _loss_and_grads(tiny_phi3_dir, "sdpa_varlen", bare))
    # And sdpa_varlen on the padded batch (evaluation without padding-free) is plain sdpa.
    _assert_same(reference, _loss_and_grads(tiny_phi3_dir, "sdpa_varlen", padded))


def _trainer(tmp_path, model_dir, padding_free, max_length=1024):
    from transformers import set_seed
    from trl import SFTConfig

    from opclaim.registry import load_tokenizer
    from train import data
    from train.config import ModelArgs
    from train.model import load_base, lora_config
    from train.run import _adapters_to
    from train.trainer import ClaimSFTTrainer

    tok = load_tokenizer(model_dir)
    fmt = data.choose_format(tok, "auto")
    margs = ModelArgs(model_name_or_path=str(model_dir), load_in_4bit=False, attn_implementation="auto")
    set_seed(0)
    model, facts = load_base(margs, padding_free=padding_free)
    args = SFTConfig(output_dir=str(tmp_path / f"o{int(padding_free)}"), use_cpu=True, bf16=False,
                     max_length=max_length, report_to=[], per_device_train_batch_size=4,
                     padding_free=padding_free, max_steps=3, learning_rate=1e-3, logging_steps=1,
                     save_strategy="no", disable_tqdm=True, seed=0)
    trainer = ClaimSFTTrainer(model=model, args=args, processing_class=tok, peft_config=lora_config(margs),
                              train_dataset=data.to_dataset(make_cases(8, seed=3), fmt, tok))
    _adapters_to(trainer.model, torch.float32)
    return trainer, facts


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_trainer_padding_free_same_loss_and_grads_then_trains(tmp_path, tiny_phi3_dir):
    padded, facts_p = _trainer(tmp_path, tiny_phi3_dir, padding_free=False)
    free, facts_f = _trainer(tmp_path, tiny_phi3_dir, padding_free=True)
    assert facts_p["attn_implementation"] == "sdpa"
    assert facts_f["attn_implementation"] == "sdpa_varlen" and facts_f["padding_free"]
    assert free.model.config._attn_implementation == "sdpa_varlen"

    rows = [padded.train_dataset[i] for i in range(4)]
    assert rows == [free.train_dataset[i] for i in range(4)]  # the same prepared examples
    b_pad, b_free = padded.data_collator(rows), free.data_collator(rows)
    assert "attention_mask" in b_pad and "attention_mask" not in b_free and "cu_seq_lens_q" in b_free

    results = []
    for trainer, batch in ((padded, b_pad), (free, b_free)):
        trainer.model.eval()
        n_items = int((batch["labels"][:, 1:] != -100).sum())
        loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=n_items)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        trainer.model.zero_grad(set_to_none=True)
        trainer.model.train()
        results.append((loss.item(), grads, None))
    _assert_same(*results)

    free.train()
    losses = [h["loss"] for h in free.state.log_history if "loss" in h]
    assert free.state.global_step == 3 and len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_padding_free_keeps_max_length(tmp_path, tiny_phi3_dir):
    """TRL refuses max_length with padding_free (no packing); ClaimSFTTrainer truncates as TRL would."""
    full, _ = _trainer(tmp_path, tiny_phi3_dir, padding_free=True, max_length=None)
    longest = max(len(x) for x in full.train_dataset["input_ids"])
    limit = longest - 20
    cut, _ = _trainer(tmp_path, tiny_phi3_dir, padding_free=True, max_length=limit)
    assert cut.args.max_length == limit  # restored for the run record
    lengths = [len(x) for x in cut.train_dataset["input_ids"]]
    assert max(lengths) == limit and len(lengths) == len(full.train_dataset)
    for a, b in zip(full.train_dataset, cut.train_dataset, strict=True):
        assert b["input_ids"] == a["input_ids"][:limit] and b["labels"] == a["labels"][:limit]


@pytest.mark.slow
def test_train_cli_padding_free(tmp_path, tiny_phi3_dir, cli_env):
    """`python -m train --padding_free true` with the tiny recipe (nf4 QLoRA, eval on) runs end to end."""
    from opclaim.io import write_cases

    write_cases(tmp_path / "train.jsonl", make_cases(20, seed=0))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "train", "--config", "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml",
           "--model_name_or_path", str(tiny_phi3_dir), "--train_file", str(tmp_path / "train.jsonl"),
           "--output_dir", str(out), "--padding_free", "true", "--max_steps", "10", "--eval_steps", "5",
           "--save_steps", "10"]
    res = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=480)
    assert res.returncode == 0, res.stderr[-3000:]
    run = json.loads((out / "opclaim_run.json").read_text())
    assert run["attn_implementation"] == "sdpa_varlen" and run["padding_free"] is True
    assert run["config"]["training"]["max_length"] == 512
    assert run["final_val_loss"] is not None and run["final_train_loss"] is not None
    history = json.loads((out / "checkpoint-10" / "trainer_state.json").read_text())["log_history"]
    losses = [h["loss"] for h in history if "loss" in h]
    assert losses[-1] < losses[0], losses
    assert (out / "adapter_model.safetensors").stat().st_size > 0


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
@pytest.mark.parametrize("padding_free", [False, True])
def test_claim_logits_only_same_loss_and_grads(tmp_path, tiny_phi3_dir, padding_free):
    """ClaimSFTTrainer runs the (adapted) head only where a claim token is predicted: the loss and
    gradients equal the model's own full-logits loss on the same batch."""
    trainer, _ = _trainer(tmp_path, tiny_phi3_dir, padding_free=padding_free)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    n_items = int((batch["labels"][:, 1:] != -100).sum())
    model = trainer.model
    model.eval()
    results = []
    for own in (False, True):
        if own:
            loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n_items)
        else:
            out = model(**batch, use_cache=False)
            assert out.logits.shape[1] == batch["input_ids"].shape[1]  # the reference: every position
            loss = out.loss
        loss.backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()
                                      if p.grad is not None}, None))
        model.zero_grad(set_to_none=True)
    _assert_same(*results)
    loss, out = trainer.compute_loss(model, dict(batch), return_outputs=True, num_items_in_batch=n_items)
    assert out.logits.shape[0] == n_items  # only the claim-predicting positions were projected
