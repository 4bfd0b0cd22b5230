"""Batched decoding equals one prompt at a time, step by step, on a model whose attention is sharp.

The random tiny Phi-3 attends almost uniformly, so a wrong position id barely moves its logits
(a 27-position shift: 0.002 against a spread of ~1) and token equality cannot see it. Scaling
the query and key projections by SCALE multiplies every attention score by SCALE**2: attention
then depends on relative position (RoPE) strongly enough that the same shift moves the logits by
~0.2. The tests compare the logits each decoding step hands to the logits processors, per row,
batched (left-padded prompts of different lengths) against each prompt alone, with a tolerance
far below what a position error costs (checked first, so the comparison can fail).
"""

import shutil

import pytest
import torch

from tests.test_infer import make_cases

SCALE = 8.0
ATOL = 1e-3  # fp32 batched-vs-alone noise is ~1e-5 here; a position slip is ~0.1


@pytest.fixture(scope="module")
def sharp(tiny_phi3_dir, tmp_path_factory):
    """The tiny Phi-3 with q/k projections scaled, saved as a model folder and loaded as infer does."""
    from transformers import Phi3ForCausalLM

    from tests import infer_api as generate

    out = tmp_path_factory.mktemp("sharp") / "model"
    shutil.copytree(tiny_phi3_dir, out)
    model = Phi3ForCausalLM.from_pretrained(tiny_phi3_dir)
    cfg = model.config
    head = cfg.hidden_size // cfg.num_attention_heads
    qk = (cfg.num_attention_heads + cfg.num_key_value_heads) * head  # qkv_proj rows: q, then k, then v
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.qkv_proj.weight[:qk] *= SCALE
    model.save_pretrained(out, safe_serialization=True)
    return generate.load(out)


class Recorder:
    """Last in the processor list: keeps the scores of every step (what greedy's argmax sees)."""

    def __init__(self):
        self.steps = []

    def __call__(self, input_ids, scores):
        self.steps.append(scores.detach().clone().float())
        return scores


def _run(loaded, prompts_text, decoder, max_new_tokens):
    from tests import infer_api as generate

    rec = []

    def factory(n):
        rec.append(Recorder())
        return rec[-1]

    texts, _ = generate.generate_batch(loaded, prompts_text, max_new_tokens=max_new_tokens,
                                       processor_factory=factory, decoder=decoder)
    return texts, rec[0].steps


def _prompts(loaded, n):
    from tests import infer_api as generate

    texts = generate.build_prompts(make_cases(n), "finetuned", loaded)
    lengths = [len(loaded.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert max(lengths) - min(lengths) >= 50  # real left padding in the batch
    return texts


def test_attention_is_sharp_enough_to_see_a_position_slip(sharp):
    """The premise: moving the last position by 27 (what ignoring left padding does) changes the
    logits by far more than ATOL, and the scores have a real spread."""
    ids = torch.tensor([sharp.tokenizer(_prompts(sharp, 6)[0], add_special_tokens=False)["input_ids"]])
    pos = torch.arange(ids.shape[1])[None].clone()
    with torch.no_grad():
        right = sharp.model(input_ids=ids, position_ids=pos).logits[0, -1]
        pos[0, -1] += 27
        slipped = sharp.model(input_ids=ids, position_ids=pos).logits[0, -1]
    assert (right - slipped).abs().max() > 50 * ATOL
    assert right.max() - right.min() > 0.5


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
@pytest.mark.parametrize("decoder", ["loop", "generate"])
def test_batched_logits_equal_one_at_a_time_on_sharp_attention(sharp, decoder):
    """Each decoder, batched, against HF generate() on one prompt (no padding at all): a position
    error shared by batched and single runs of the loop is caught too."""
    n, steps = 6, 12
    prompts_text = _prompts(sharp, n)
    batched_texts, batched = _run(sharp, prompts_text, decoder, steps)
    worst, alone_texts = 0.0, []
    for i, p in enumerate(prompts_text):
        text, alone = _run(sharp, [p], "generate", steps)  # the reference: HF generate(), one prompt
        alone_texts.append(text[0])
        for t, scores in enumerate(alone):  # the steps this prompt decoded alone
            diff = (batched[t][i] - scores[0]).abs()
            finite = torch.isfinite(scores[0])
            assert torch.equal(finite, torch.isfinite(batched[t][i]))
            worst = max(worst, float(diff[finite].max()))
    assert len(batched) > 1
    assert worst < ATOL, f"batched logits differ from one-at-a-time by {worst:.4g} (tolerance {ATOL})"
    assert batched_texts == alone_texts
