"""infer.decode, the row-dropping greedy loop, on the tiny Phi-3: the same tokens as HF generate()
and as one prompt at a time, with rows stopping at different steps, a growing KV buffer, and the
grammar processor."""

import dataclasses

import pytest

from tests.test_infer import make_cases


@pytest.fixture(scope="module")
def loaded(tiny_phi3_dir):
    from infer import generate

    return generate.load(tiny_phi3_dir)


def _prompts(loaded, n):
    from infer import generate

    return generate.build_prompts(make_cases(n), "finetuned", loaded)


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


def test_loop_equals_generate_and_one_at_a_time_with_early_stops(loaded, monkeypatch):
    from infer import decode, generate

    monkeypatch.setattr(decode, "CHUNK", 3)  # the KV buffer grows several times
    prompts_text = _prompts(loaded, 7)
    stopping = dataclasses.replace(loaded, stop_ids=[_frequent_token(loaded, prompts_text), *loaded.stop_ids])
    loop, cut_loop = generate.generate_batch(stopping, prompts_text, max_new_tokens=24, decoder="loop")
    hf, cut_hf = generate.generate_batch(stopping, prompts_text, max_new_tokens=24, decoder="generate")
    one = [generate.generate_batch(stopping, [p], max_new_tokens=24, decoder="generate")[0][0] for p in prompts_text]
    assert loop == hf == one and cut_loop == cut_hf
    assert 0 < cut_loop.count(False) < len(prompts_text)  # some rows stopped early, some ran on
    assert len({len(t) for t in loop}) > 2


def test_loop_with_grammar_equals_generate(loaded, tmp_path):
    from infer import constrain, generate
    from opclaim.codes import MODIFIERS
    from tests.test_constrain import COHORT_ICD, CPT

    lists = constrain.CodeLists(COHORT_ICD, CPT, sorted(MODIFIERS), {})
    grammar = constrain.for_model(loaded, lists, cache=tmp_path)
    prompts_text = _prompts(loaded, 3)
    out = {d: generate.generate_batch(loaded, prompts_text, max_new_tokens=40, processor_factory=grammar.processor,
                                      decoder=d) for d in generate.DECODERS}
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
