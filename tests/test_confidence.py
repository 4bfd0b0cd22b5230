"""Per-code confidence at generation time (eval.confidence, infer.decode/engines) on the tiny Phi-3:
a code's score is the product of its tokens' probabilities computed here independently from the
model's logits (and, constrained, from the grammar's allowed tokens)."""

import math

import pytest

from tests.test_infer import make_cases


@pytest.fixture(scope="module")
def loaded(tiny_phi3_dir):
    """The tiny model, nudged off tokens starting with "N" (the random model would write "None"
    for every section): a hook inside the model, so the independent forward pass sees it too."""
    from infer.loading import load

    loaded = load(tiny_phi3_dir)
    tok = loaded.tokenizer
    bad = [i for i in range(len(tok)) if tok.convert_ids_to_tokens(i).lstrip("\u2581").startswith("N")]

    def hook(module, inputs, out):
        out[..., bad] -= 50.0
        return out

    loaded.model.get_output_embeddings().register_forward_hook(hook)
    return loaded


@pytest.fixture(scope="module")
def grammar(loaded, tmp_path_factory):
    from infer import constrain
    from opclaim.codes import MODIFIERS
    from tests.constrain.test_constrain import COHORT_ICD, CPT

    lists = constrain.CodeLists(COHORT_ICD, CPT, sorted(MODIFIERS), {})
    return constrain.for_model(loaded, lists, cache=tmp_path_factory.mktemp("grammar"))


def _prompts(loaded, n):
    from infer.render import build_prompts

    return build_prompts(make_cases(n), "finetuned", loaded)


def _independent(loaded, grammar, prompt: str, new: list[int]):
    """Per generated token (ids, p under the grammar mask renormalised, p under the raw model), from
    one forward pass over prompt + output and a fresh grammar matcher."""
    import torch
    import xgrammar as xgr

    tok, model = loaded.tokenizer, loaded.model
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([p_ids + new])).logits[0].float()
    steps = logits[len(p_ids) - 1:len(p_ids) - 1 + len(new)]
    matcher = xgr.GrammarMatcher(grammar.compiled)
    vocab = steps.shape[-1]
    mask = xgr.allocate_token_bitmask(1, vocab)
    out = []
    for t, tid in enumerate(new):
        matcher.fill_next_token_bitmask(mask, 0)
        masked = steps[t].clone()[None]
        xgr.apply_token_bitmask_inplace(masked, mask, vocab_size=vocab)
        out.append((tid, torch.softmax(masked[0], -1)[tid].item(), torch.softmax(steps[t], -1)[tid].item()))
        assert matcher.accept_token(tid)
    return out


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
@pytest.mark.parametrize("decoder", ["loop", "generate"])
def test_code_score_is_the_product_of_its_token_probabilities(loaded, grammar, decoder):
    from eval import confidence
    from infer import engines

    prompts_text = _prompts(loaded, 2)
    probs: list = []
    texts, _ = engines.generate_batch(loaded, prompts_text, max_new_tokens=100, repetition_penalty=1.0,
                                      processor_factory=grammar.processor, decoder=decoder, token_probs=probs)
    n_codes = 0
    for prompt, text, tokens in zip(prompts_text, texts, probs, strict=True):
        ref = _independent(loaded, grammar, prompt, [t[4] for t in tokens])
        assert len(ref) == len(tokens)
        for (s, e, p, pm, _), (_, rp, rpm) in zip(tokens, ref, strict=True):
            assert p == pytest.approx(rp, rel=1e-4, abs=1e-6) and pm == pytest.approx(rpm, rel=1e-4, abs=1e-6)
            assert 0 <= s <= e <= len(text)
        conf = confidence.score_output(text, tokens, masked=True)
        assert conf["masked"] is True
        for c in conf["codes"]:
            start, end = c["span"]
            assert text[start:end].replace(".", "") == c["code"].split("-")[-1].replace(".", "")
            # the code's tokens: those whose characters overlap the code's characters
            idx = [i for i, (s, e, *_) in enumerate(tokens) if s < end and e > start]
            assert idx and text[tokens[idx[0]][0]:tokens[idx[-1]][1]].find(text[start:end]) >= 0
            assert c["p"] == pytest.approx(math.prod(ref[i][1] for i in idx), rel=1e-3, abs=1e-6)
            assert c["p_model"] == pytest.approx(math.prod(ref[i][2] for i in idx), rel=1e-3, abs=1e-6)
            assert c["p_model"] <= 1 and c["p"] >= c["p_model"] - 1e-9  # the mask only renormalises up
            n_codes += 1
    assert n_codes >= 4  # the grammar makes the random model write codes


def test_code_spans_on_a_rendered_claim():
    from eval.confidence import code_scores, code_spans, score_output
    from opclaim.claim import PHI3_MARKERS, Claim, render_target

    claim = Claim.from_dict({"icd10": ["K80.20", "E11.9"], "providers": [
        {"name": "Dr A", "lines": [{"cpt": "47562", "modifiers": ["80", "51"], "description": "Lap chole"}]},
        {"name": "Dr B", "lines": [{"cpt": "47562", "modifiers": [], "description": "Lap chole"}]}]})
    text = render_target(claim, PHI3_MARKERS)
    spans = code_spans(text)
    got = [(c["system"], c["code"], c["line"]) for c in spans]
    assert got == [("icd10", "K80.20", None), ("icd10", "E11.9", None), ("cpt", "47562", 0),
                   ("modifiers", "47562-80", 0), ("modifiers", "47562-51", 0), ("cpt", "47562", 1)]
    for c in spans:
        s, e = c["span"]
        assert text[s:e] == c["code"].split("-")[-1]
    # one token per character, each with p = 0.9: a code's score is 0.9 ** its length
    tokens = [(i, i + 1, 0.9, 0.5, 0) for i in range(len(text))]
    conf = score_output(text, tokens, masked=False)
    assert conf["codes"][0]["p"] == pytest.approx(0.9 ** 6, rel=1e-5)
    assert code_scores(conf)["cpt"] == {"47562": pytest.approx(0.9 ** 5, rel=1e-5)}


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_infer_rows_carry_confidence_and_old_rows_still_read(tiny_phi3_dir, tmp_path):
    import json

    from opclaim import artifacts
    from opclaim.cli import main
    from opclaim.io import write_cases

    write_cases(tmp_path / "cases.jsonl", make_cases(2))
    assert main(["infer", "--model", str(tiny_phi3_dir), "--mode", "finetuned", "--cases",
                 str(tmp_path / "cases.jsonl"), "--max-new-tokens", "8", "--no-progress",
                 "--out", str(tmp_path / "p.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert all(r["confidence"]["method"] == "token_prob" and r["confidence"]["masked"] is False for r in rows)
    # a version-2 run record (rows without confidence) is still read
    run = json.loads((tmp_path / "p.jsonl.run.json").read_text())
    run["schema"] = "opclaim.infer-run/2"
    assert artifacts.parse(artifacts.InferRun, run).complete
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"id": "a", "config": "x", "output": "", "latency_s": 0.1}) + "\n")
    assert artifacts.read_prediction_rows(old)["a"].get("confidence") is None


def test_knn_vote_shares_and_serve_rows():
    from opclaim.claim import PHI3_MARKERS, Claim, render_target
    from opclaim.serve.engine import claim_from_output
    from rag.knn import vote_scored

    def claim(icd, cpt, mods=()):
        return Claim.from_dict({"icd10": icd, "providers": [{"name": "A", "lines": [{"cpt": cpt, "modifiers": list(mods)}]}]})

    voted, conf = vote_scored([(claim(["K80.20"], "47562", ["80"]), 1.0), (claim(["K80.20", "I10"], "47562"), 1.0),
                               (claim(["I10"], "49505"), 2.0)], 0.4)
    shares = {(c["system"], c["code"]): c["p"] for c in conf["codes"]}
    assert shares[("icd10", "K80.20")] == 0.5 and shares[("icd10", "I10")] == 0.75
    assert shares[("cpt", "49505")] == 0.5 and shares[("cpt", "47562")] == 0.5
    assert conf["method"] == "knn_vote"
    _, rows = claim_from_output(render_target(voted, PHI3_MARKERS), conf)
    assert {r["code"]: r["confidence"] for r in rows} == {"K80.20": 0.5, "I10": 0.75, "49505": 0.5, "47562": 0.5}


def test_neighbours_agreement_is_the_share_of_examples_with_the_code():
    from eval.confidence import add_agreement
    from opclaim.claim import Claim

    def claim(icd, cpt, mods=()):
        return Claim.from_dict({"icd10": icd, "providers": [{"name": "Dr. A", "role": "surgeon", "lines": [
            {"cpt": cpt, "modifiers": list(mods), "description": "x"}]}]})

    examples = [claim(["K80.20"], "47562", ["80"]), claim(["K80.20", "K81.1"], "47563")]
    conf = {"codes": [{"system": "icd10", "code": "K80.20"}, {"system": "icd10", "code": "K81.1"},
                      {"system": "icd10", "code": "E11.9"}, {"system": "cpt", "code": "47562"},
                      {"system": "modifiers", "code": "47562-80"}, {"system": "modifiers", "code": "47563-80"}]}
    got = [c["agree"] for c in add_agreement(conf, examples)["codes"]]
    assert got == [1.0, 0.5, 0.0, 0.5, 0.5, 0.0]
