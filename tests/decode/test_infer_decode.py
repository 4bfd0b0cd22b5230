"""infer.decode, the row-dropping greedy loop, on the tiny Phi-3: the same tokens as HF generate()
and as one prompt at a time, with rows stopping at different steps, a growing KV buffer, and the
grammar processor."""

import dataclasses

import pytest

from tests.test_infer import make_cases


@pytest.fixture(scope="module")
def loaded(tiny_phi3_dir):
    from infer.loading import load

    return load(tiny_phi3_dir)


def _prompts(loaded, n):
    from infer.render import build_prompts

    return build_prompts(make_cases(n), "finetuned", loaded)


def _frequent_token(loaded, prompts_text):
    """A token the random model emits in some rows, at different steps: used as a stop token so
    rows leave the batch one by one."""
    from collections import Counter

    from infer import decode

    tok = loaded.tokenizer
    ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts_text]
    new = decode.greedy(loaded.model, ids, max_new_tokens=24, stop_ids=[-1], pad_id=0).tolist()
    first = Counter(t for row in new for t in set(row[2:]))
    return next(t for t, _ in first.most_common() if sum(t in row[:1] for row in new) == 0)


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_loop_equals_generate_and_one_at_a_time_with_early_stops(loaded, monkeypatch):
    from infer import decode, engines

    monkeypatch.setattr(decode, "CHUNK", 3)  # the KV buffer grows several times
    prompts_text = _prompts(loaded, 7)
    stopping = dataclasses.replace(loaded, stop_ids=[_frequent_token(loaded, prompts_text), *loaded.stop_ids])
    loop, cut_loop = engines.generate_batch(stopping, prompts_text, max_new_tokens=24, decoder="loop")
    hf, cut_hf = engines.generate_batch(stopping, prompts_text, max_new_tokens=24, decoder="generate")
    one = [engines.generate_batch(stopping, [p], max_new_tokens=24, decoder="generate")[0][0] for p in prompts_text]
    assert loop == hf == one and cut_loop == cut_hf
    assert 0 < cut_loop.count(False) < len(prompts_text)  # some rows stopped early, some ran on
    assert len({len(t) for t in loop}) > 2


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_loop_with_grammar_equals_generate(loaded, tmp_path):
    from infer import constrain, engines
    from opclaim.codes import MODIFIERS
    from tests.constrain.test_constrain import COHORT_ICD, CPT

    lists = constrain.CodeLists(COHORT_ICD, CPT, sorted(MODIFIERS), {})
    grammar = constrain.for_model(loaded, lists, cache=tmp_path)
    prompts_text = _prompts(loaded, 3)
    out = {d: engines.generate_batch(loaded, prompts_text, max_new_tokens=40, processor_factory=grammar.processor,
                                      decoder=d) for d in engines.DECODERS}
    assert out["loop"] == out["generate"]
    assert all(t.startswith("<|placeholder2|>ICD-10-CM Diagnoses:\n") for t in out["loop"][0])


def test_sliding_window_models_fall_back_to_generate():
    from transformers import Phi3Config

    from infer import decode

    class Holder:  # only the config is read
        config = Phi3Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, sliding_window=8)

    assert not decode.supported(Holder())
    Holder.config = Phi3Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, sliding_window=None)
    assert decode.supported(Holder())


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_cli_decoder_flag(tiny_phi3_dir, tmp_path):
    """`--decoder generate` (HF generate) and the default loop write the same predictions."""
    import json

    from opclaim.cli import main
    from opclaim.io import write_cases

    write_cases(tmp_path / "cases.jsonl", make_cases(5))
    common = ["infer", "--model", str(tiny_phi3_dir), "--mode", "finetuned", "--cases", str(tmp_path / "cases.jsonl"),
              "--batch-size", "3", "--max-new-tokens", "12", "--no-progress"]
    assert main([*common, "--out", str(tmp_path / "loop.jsonl")]) == 0
    assert main([*common, "--out", str(tmp_path / "gen.jsonl"), "--decoder", "generate"]) == 0
    outs = [[json.loads(x)["output"] for x in (tmp_path / f).read_text().splitlines()] for f in ("loop.jsonl", "gen.jsonl")]
    assert outs[0] == outs[1] and len(outs[0]) == 5


@pytest.fixture(scope="module")
def gqa_model():
    """A tiny random Llama with grouped-query attention (6 query heads on 2 KV heads), as SmolLM2."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=300, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                      num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


def test_sdpa_decode_equals_sdpa_on_a_padded_gqa_step():
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from infer.attention import sdpa_decode_attention_forward

    class Attn(torch.nn.Module):
        num_key_value_groups, is_causal = 3, True

    torch.manual_seed(0)
    q, k, v = torch.randn(4, 6, 1, 16), torch.randn(4, 2, 30, 16), torch.randn(4, 2, 30, 16)
    mask = torch.ones(4, 1, 1, 30, dtype=torch.bool)
    mask[1, ..., :7] = mask[3, ..., :12] = False  # left padding
    for m in (mask, None):
        ours, _ = sdpa_decode_attention_forward(Attn(), q, k, v, m, scaling=0.25)
        ref, _ = sdpa_attention_forward(Attn(), q, k, v, m, scaling=0.25)
        assert ours.shape == ref.shape == (4, 1, 6, 16)
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    # Prefill (several queries) is SDPA itself.
    q5 = torch.randn(4, 6, 5, 16)
    assert torch.equal(sdpa_decode_attention_forward(Attn(), q5, k, v, None)[0],
                       sdpa_attention_forward(Attn(), q5, k, v, None)[0])


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_loop_with_shared_prefix_and_sdpa_decode_equals_one_at_a_time_generate(gqa_model):
    """The engine (shared-prefix prefill, `sdpa_decode`, row dropping) gives the tokens of the study's
    loop: HF generate() on one prompt at a time with stock SDPA."""
    import torch

    from infer import attention, decode

    g = torch.Generator().manual_seed(1)
    shared = torch.randint(3, 300, (40,), generator=g).tolist()
    prompts = [shared + torch.randint(3, 300, (n,), generator=g).tolist() for n in (3, 17, 9, 30, 1)]
    assert decode.common_prefix(prompts) == 40 and decode.common_prefix(prompts[:1]) == 0
    assert decode.common_prefix([[1, 2, 3], [1, 2, 3]]) == 2  # each prompt keeps a token of its own

    gqa_model.set_attn_implementation("sdpa")
    one = []
    with torch.inference_mode():
        for p in prompts:
            out = gqa_model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                     do_sample=False, max_new_tokens=12, eos_token_id=7, pad_token_id=0)
            one.append(out[0, len(p):].tolist())
        gqa_model.set_attn_implementation(attention.register())
        plain_logits, _ = decode._prefill(gqa_model, prompts, min_shared=10**9)
        shared_logits, _ = decode._prefill(gqa_model, prompts)
        torch.testing.assert_close(shared_logits, plain_logits, rtol=1e-4, atol=1e-5)
        new = decode.greedy(gqa_model, prompts, max_new_tokens=12, stop_ids=[7], pad_id=0).tolist()
    gqa_model.set_attn_implementation("sdpa")
    for row, ref in zip(new, one, strict=True):
        assert row[:len(ref)] == ref
