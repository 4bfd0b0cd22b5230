"""The generic-format claim grammar (models without Phi-3's section tokens, like the demo's
SmolLM2) compiled against a real tokenizer and decoded with, not only read as EBNF text.

The model is a tiny random Llama (SmolLM2's architecture) with a ChatML chat template and a
byte-level BPE tokenizer that has none of Phi-3's special tokens, so `prompts.detect_format`
picks the generic format as it does for the demo model.
"""

import json

import pytest

import prompts
from opclaim.claim import Claim
from opclaim.codes import MODIFIERS
from opclaim.io import write_cases
from tests.test_infer import make_cases

ICD = ["K80.20", "K80.10", "R10.11"]
CPT = ["47562", "47563", "44970"]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
          "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}"
          "{% endif %}")
CLAIM = Claim.from_dict({"icd10": ["K80.20", "R10.11"], "providers": [
    {"name": "Dr. A. Rivera", "role": "surgeon",
     "lines": [{"cpt": "47562", "modifiers": ["51"], "description": "Laparoscopic cholecystectomy"}]}]})


@pytest.fixture(scope="module")
def generic_dir(tmp_path_factory):
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from opclaim.synth import generate_cases

    out = tmp_path_factory.mktemp("generic") / "model"
    out.mkdir()
    corpus = [c.note + "\n" + prompts.target(c.claim, "generic") for c in generate_cases(60, seed=3)]
    corpus += [" ".join(str(i) for i in range(0, 10000, 7)), CHATML]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=1500, special_tokens=["<unk>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in ("<|im_start|>", "<|im_end|>")])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", unk_token="<unk>", chat_template=CHATML)
    tok.save_pretrained(out)
    torch.manual_seed(0)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                                 bos_token_id=tok.bos_token_id, eos_token_id=eos, pad_token_id=eos,
                                 tie_word_embeddings=True)).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def loaded(generic_dir):
    from tests import infer_api as generate

    loaded = generate.load(generic_dir)
    assert loaded.fmt.name == "generic"  # what the demo model gets
    return loaded


@pytest.fixture(scope="module")
def grammar(loaded, tmp_path_factory):
    from infer import constrain

    lists = constrain.CodeLists(ICD, CPT, sorted(MODIFIERS), {})
    return constrain.for_model(loaded, lists, cache=tmp_path_factory.mktemp("gc"))


def _accepts(grammar, tokenizer, text, stop_id):
    import xgrammar as xgr

    m = xgr.GrammarMatcher(grammar.compiled)
    return all(m.accept_token(t) for t in prompts.encode(tokenizer, text)) and m.accept_token(stop_id) \
        and m.is_terminated()


def test_generic_grammar_compiles_and_admits_only_listed_codes(loaded, grammar):
    tok, stop = loaded.tokenizer, loaded.stop_ids[0]
    assert tok.convert_ids_to_tokens(stop) == "<|im_end|>"  # the chat template's end of turn
    good = prompts.target(CLAIM, loaded.fmt)
    assert good.startswith("ICD-10-CM Diagnoses:\n") and "<|" not in good
    assert _accepts(grammar, tok, good, stop)
    assert _accepts(grammar, tok, prompts.target(Claim(), loaded.fmt), stop)
    assert not _accepts(grammar, tok, good.replace("K80.20", "K80.29"), stop)
    assert not _accepts(grammar, tok, good.replace("47562", "47599"), stop)
    assert not _accepts(grammar, tok, good.replace("Modifiers: 51", "Modifiers: 5Z"), stop)
    assert not _accepts(grammar, tok, "Diagnoses:\n" + good, stop)


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_decoding_with_the_generic_grammar_writes_parseable_claims(loaded, grammar):
    """A random model, held to the grammar, writes claim text the strict claim parser reads back,
    every code from the lists; the row-dropping loop and HF generate() agree."""
    from opclaim.claim import parse_target
    from tests import infer_api as generate

    prompts_text = generate.build_prompts(make_cases(3), "finetuned", loaded)
    out = {d: generate.generate_batch(loaded, prompts_text, max_new_tokens=160, processor_factory=grammar.processor,
                                      decoder=d) for d in ("loop", "generate")}
    assert out["loop"] == out["generate"]
    texts, cut = out["loop"]
    for text, truncated in zip(texts, cut, strict=True):
        assert text.startswith("ICD-10-CM Diagnoses:\n")
        if truncated:
            continue
        claim = parse_target(text)
        assert claim.icd10_set() <= set(ICD) and claim.cpt_set() <= set(CPT)
        assert prompts.target(claim, loaded.fmt) == text  # the text is exactly a claim's rendering
    assert not all(cut), "every row ran out of tokens: the grammar's end was never reached"


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_constrained_cli_run_on_the_generic_model(generic_dir, tmp_path, capsys):
    from opclaim.cli import main

    write_cases(tmp_path / "cases.jsonl", make_cases(2))
    (tmp_path / "icd.txt").write_text("\n".join(ICD) + "\n")
    (tmp_path / "cpt.txt").write_text("\n".join(CPT) + "\n")
    assert main(["infer", "--model", str(generic_dir), "--mode", "finetuned", "--cases", str(tmp_path / "cases.jsonl"),
                 "--out", str(tmp_path / "c.jsonl"), "--constrain", "--icd-ref", str(tmp_path / "icd.txt"),
                 "--cpt-ref", str(tmp_path / "cpt.txt"), "--grammar-cache", str(tmp_path / "gc"),
                 "--max-new-tokens", "96", "--no-progress"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["output"].startswith("ICD-10-CM Diagnoses:\n") for r in rows)
    run = json.loads((tmp_path / "c.jsonl.run.json").read_text())
    assert run["config"]["format"] == "generic" and run["config"]["constrain"]
