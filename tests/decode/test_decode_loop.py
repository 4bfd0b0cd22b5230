"""infer.decode, detail by detail, on a tiny random Llama built in the test (no download, seconds):
the KV buffer's growth, which models the loop supports, the shared prefix, rows after their stop
token, the length of what greedy returns, and chosen_probs. Cases found by mutation testing
(docs/records/mutation.md); the equivalence with generate() on real prompts is test_infer_decode.py."""

from types import SimpleNamespace

import pytest
import torch

from infer import decode


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


def _generate(model, prompt, n):
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                             do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=0, eos_token_id=None)
    return out[0, len(prompt):].tolist()


# ---------------------------------------------------------------- KV buffer
def test_buffer_fills_its_spare_columns_before_growing():
    k = torch.arange(2 * 8, dtype=torch.float).reshape(1, 1, 2, 8)
    kbuf = torch.zeros(1, 1, 3, 8)  # head dim 8 != length 3: a wrong axis cannot pass
    kbuf[:, :, :2] = k
    layer = decode.BufferLayer(kbuf, kbuf.clone(), 2)
    assert layer.is_initialized and layer.get_seq_length() == 2
    new = torch.full((1, 1, 1, 8), 7.0)
    keys, _ = layer.update(new, new)
    assert layer.kbuf.shape[2] == 3  # an exact fit does not grow the buffer
    more = torch.full((1, 1, 2, 8), 9.0)
    keys, values = layer.update(more, more)
    assert layer.kbuf.shape[2] == 3 + decode.CHUNK and layer.get_seq_length() == 5
    assert torch.equal(keys, torch.cat([k, new, more], 2)) and torch.equal(values[:, :, 3:], more)


def test_buffer_grows_by_the_update_when_it_is_larger_than_a_chunk(monkeypatch):
    monkeypatch.setattr(decode, "CHUNK", 2)
    layer = decode.BufferLayer(torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4), 1)
    layer.update(torch.ones(1, 1, 5, 4), torch.ones(1, 1, 5, 4))
    assert layer.kbuf.shape[2] == 6 and layer.get_seq_length() == 6


# ---------------------------------------------------------------- which models
def test_supported_needs_a_config_and_no_encoder_decoder(model):
    from transformers import LlamaConfig

    assert decode.supported(model)
    assert not decode.supported(SimpleNamespace())  # no config at all
    enc_dec = LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                          is_encoder_decoder=True)
    assert not decode.supported(SimpleNamespace(config=enc_dec))


# ---------------------------------------------------------------- shared prefix
def test_common_prefix_counts_what_every_prompt_shares_with_the_first():
    assert decode.common_prefix([[1, 7, 3, 3], [1, 2, 3, 3], [1, 2, 3, 3]]) == 1  # the first differs
    assert decode.common_prefix([[1, 2, 3, 4, 5], [1, 9, 9, 9, 9], [1, 2, 3, 4, 6]]) == 1  # the second does


@pytest.mark.parametrize("extra,calls", [(0, 3 + 1), (-1, 3)])
def test_a_prefix_of_exactly_min_shared_tokens_is_prefilled_once(model, extra, calls):
    n = decode.MIN_SHARED + extra
    shared = list(range(3, 3 + n))
    prompts = [shared + [40], shared + [41, 42], shared + [43]]
    seen = []
    hook = model.register_forward_pre_hook(lambda *a: seen.append(1))
    try:
        with torch.inference_mode():
            logits, _ = decode._prefill(model, prompts)
    finally:
        hook.remove()
    assert len(seen) == calls and logits.shape == (3, 64)


# ---------------------------------------------------------------- greedy
def test_one_prompt_equals_generate(model):
    prompt = [5, 9, 12, 30, 2]
    with torch.inference_mode():
        got = decode.greedy(model, [prompt], max_new_tokens=6, stop_ids=[-1], pad_id=0)
    assert got.tolist() == [_generate(model, prompt, 6)]


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_rows_hold_pad_after_their_stop_token(model):
    prompts = [[5, 9, 12], [7, 1, 33, 20, 2], [11, 4]]
    free = [_generate(model, p, 8) for p in prompts]
    stop = free[0][2]  # row 0 stops at its third token; the others may run on
    with torch.inference_mode():
        got = decode.greedy(model, prompts, max_new_tokens=8, stop_ids=[stop], pad_id=63).tolist()
    for row, ref in zip(got, free, strict=True):
        cut = ref.index(stop) + 1 if stop in ref else len(ref)
        assert row[:cut] == ref[:cut] and set(row[cut:]) <= {63}
    assert len(got[0]) >= 3 and got[0][3:] == [63] * (len(got[0]) - 3)


def test_output_ends_at_the_step_where_every_row_stopped(model):
    with torch.inference_mode():
        got = decode.greedy(model, [[5, 9], [7, 1, 3]], max_new_tokens=10, stop_ids=range(64), pad_id=0)
    assert got.shape == (2, 1)  # everything is a stop token: one step, not two


def test_chosen_probs_per_row_and_for_pad_index_zero():
    raw = torch.tensor([[0.0, 1.0, 2.0], [3.0, 0.0, 0.0]])
    processed = torch.tensor([[0.0, float("-inf"), 2.0], [1.0, 1.0, -5.0]])
    p, pm = decode.chosen_probs(raw, processed, torch.tensor([2, 0]))
    want_p = torch.stack([torch.softmax(processed[0], 0)[2], torch.softmax(processed[1], 0)[0]])
    want_pm = torch.stack([torch.softmax(raw[0], 0)[2], torch.softmax(raw[1], 0)[0]])
    torch.testing.assert_close(p, want_p)
    torch.testing.assert_close(pm, want_pm)


def test_the_cache_goes_by_the_name_this_transformers_uses(model):
    """transformers 5.2x renamed forward's `past_key_values` to `cache` (the old name warns and goes
    in 5.40): the loop passes whichever the model's forward takes, and warns about nothing."""
    import inspect
    import warnings

    new_name = "cache" in inspect.signature(model.forward).parameters
    assert decode._cache_kw(model, "C") == ({"cache": "C"} if new_name else {"past_key_values": "C"})
    assert decode._cache_kw(SimpleNamespace(forward=lambda input_ids, past_key_values=None: 0), "C") == {
        "past_key_values": "C"}
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("error", FutureWarning)
        out = decode.greedy(model, [[5, 6, 7], [9, 10]], max_new_tokens=3, stop_ids=[-1], pad_id=0)
    assert out[0].tolist() == _generate(model, [5, 6, 7], 3)
