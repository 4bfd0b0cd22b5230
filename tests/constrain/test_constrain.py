"""Constrained decoding: the claim grammar admits real claims, rejects unlisted codes, and a
constrained run has zero fabricated codes as counted by `opclaim eval`."""

import json

import pytest

import prompts
from opclaim.claim import Claim
from opclaim.codes import MODIFIERS
from opclaim.io import write_cases
from tests.test_infer import make_cases

COHORT_ICD = ["K80.20", "K80.10", "K35.80", "R10.11", "K40.90", "E66.01"]
CPT = ["47562", "47563", "44970", "49505"]
CLAIM = Claim.from_dict({"icd10": ["K80.20", "R10.11"], "providers": [
    {"name": "Dr. A. Rivera", "role": "surgeon",
     "lines": [{"cpt": "47562", "modifiers": [], "description": "Laparoscopic cholecystectomy"},
               {"cpt": "44970", "modifiers": ["51", "59"], "description": "Lap appendectomy"}]},
    {"name": "Dr. B. Chen", "role": "assistant",
     "lines": [{"cpt": "47562", "modifiers": ["80"], "description": "Laparoscopic cholecystectomy"}]}]})


@pytest.fixture(scope="module")
def lists():
    from infer.constrain import CodeLists

    return CodeLists(COHORT_ICD, CPT, sorted(MODIFIERS), {"icd10": "test cohort", "cpt": "test", "modifiers": "table"})


def _accepts(grammar, tokenizer, text, stop_id):
    import xgrammar as xgr

    m = xgr.GrammarMatcher(grammar.compiled)
    for t in prompts.encode(tokenizer, text):
        if not m.accept_token(t):
            return False
    return m.accept_token(stop_id) and m.is_terminated()


@pytest.mark.parametrize("model", ["tiny_phi3_dir"])
def test_grammar_admits_real_claims_and_rejects_unlisted_codes(request, model, lists, tmp_path):
    from infer import constrain, loading

    loaded = loading.load(request.getfixturevalue(model))
    g = constrain.for_model(loaded, lists, cache=tmp_path)
    tok, stop = loaded.tokenizer, loaded.stop_ids[0]
    good = prompts.target(CLAIM, loaded.fmt)
    assert good.startswith("<|placeholder2|>")
    assert _accepts(g, tok, good, stop)
    assert _accepts(g, tok, prompts.target(Claim.from_dict({"icd10": [], "providers": []}), loaded.fmt), stop)
    assert not _accepts(g, tok, good.replace("K80.20", "K80.29"), stop)   # not in the cohort
    assert not _accepts(g, tok, good.replace("47562", "47599"), stop)     # not in the CPT list
    assert not _accepts(g, tok, good.replace("51, 59", "51, 5Z"), stop)   # not a modifier
    # The section markers only as their special tokens, never spelled out piece by piece.
    spelled = good.replace("<|placeholder2|>", "<|place" + "holder2|>")
    ids = [i for ch in ("<", "|", "place") for i in prompts.encode(tok, ch)]
    import xgrammar as xgr

    m = xgr.GrammarMatcher(g.compiled)
    assert not m.accept_token(ids[0])
    assert spelled == good  # (same text: only the tokenisation differs)


def test_generic_format_grammar(tmp_path, lists):
    """SmolLM2-style models (no special markers): plain headers, the chat template's stop."""
    from infer import constrain

    cases_text = constrain.claim_ebnf(prompts.get_format("generic"), lists)
    assert "\ue002" not in cases_text and '"ICD-10-CM Diagnoses:\\n"' in cases_text
    phi3_text = constrain.claim_ebnf(prompts.get_format("phi3"), lists, private_markers=False)
    assert "<|placeholder2|>ICD-10-CM Diagnoses:" in phi3_text  # what vllm's own xgrammar gets


def test_compiled_grammar_is_cached(tiny_phi3_dir, lists, tmp_path):
    from infer import constrain, loading

    loaded = loading.load(tiny_phi3_dir)
    first = constrain.for_model(loaded, lists, cache=tmp_path)
    again = constrain.for_model(loaded, lists, cache=tmp_path)
    assert not first.cached and again.cached and first.key == again.key
    other = constrain.for_model(loaded, constrain.CodeLists(COHORT_ICD[:2], CPT, sorted(MODIFIERS), {}), cache=tmp_path)
    assert other.key != first.key and not other.cached
    assert len(list(tmp_path.glob("*.json"))) == 2


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_constrained_cli_run_scored_by_eval(tiny_phi3_dir, tmp_path, capsys):
    """Batched constrained decoding, scored by `opclaim eval` with the same reference lists."""
    from opclaim.cli import main

    cases = make_cases(4)
    write_cases(tmp_path / "gold.jsonl", cases)
    (tmp_path / "icd.txt").write_text("\n".join(COHORT_ICD) + "\n")
    (tmp_path / "cpt.txt").write_text("\n".join(CPT) + "\n")
    common = ["--model", str(tiny_phi3_dir), "--mode", "finetuned", "--cases", str(tmp_path / "gold.jsonl"),
              "--batch-size", "2", "--max-new-tokens", "60", "--no-progress"]
    assert main(["infer", *common, "--out", str(tmp_path / "c.jsonl"), "--constrain", "--icd-ref",
                 str(tmp_path / "icd.txt"), "--cpt-ref", str(tmp_path / "cpt.txt"),
                 "--grammar-cache", str(tmp_path / "gc"), "--config-name", "constrained"]) == 0
    assert main(["infer", *common, "--out", str(tmp_path / "f.jsonl"), "--config-name", "free"]) == 0
    rows = [json.loads(x) for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert all(r["output"].startswith("<|placeholder2|>ICD-10-CM Diagnoses:\n") for r in rows)
    run = json.loads((tmp_path / "c.jsonl.run.json").read_text())
    assert run["config"]["constrain"] and "icd.txt" in run["config"]["code_lists"]["icd10"]
    capsys.readouterr()
    assert main(["eval", "--predictions", f"constrained={tmp_path / 'c.jsonl'}", "--predictions",
                 f"free={tmp_path / 'f.jsonl'}", "--gold", str(tmp_path / "gold.jsonl"),
                 "--icd-ref", str(tmp_path / "icd.txt"), "--cpt-ref", str(tmp_path / "cpt.txt"),
                 "--bootstrap", "0", "--out", str(tmp_path / "ev"), "--workers", "1"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())["configs"]
    for comp in ("icd10", "cpt"):
        assert metrics["constrained"][comp]["fabricated"] in (0.0, None)  # None: no codes written


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_constrained_codes_are_never_fabricated(tiny_phi3_dir, tmp_path, capsys):
    """The random model likes 'None'; with that word banned it must write codes, and the grammar
    decides which. `opclaim eval` then counts 0% fabricated ICD-10-CM and CPT codes."""
    import torch

    from infer import constrain, loading
    from infer.engines import HFEngine
    from infer.render import build_prompts
    from infer.run import run
    from opclaim.cli import main

    cases = make_cases(4)
    write_cases(tmp_path / "gold.jsonl", cases)
    (tmp_path / "icd.txt").write_text("\n".join(COHORT_ICD) + "\n")
    (tmp_path / "cpt.txt").write_text("\n".join(CPT) + "\n")
    loaded = loading.load(tiny_phi3_dir)
    lists = constrain.code_lists(tmp_path / "icd.txt", tmp_path / "cpt.txt")
    grammar = constrain.for_model(loaded, lists, cache=tmp_path / "gc")
    banned = sorted({generate_ids[0] for generate_ids in (prompts.encode(loaded.tokenizer, w) for w in ("None", "N"))})

    class NoNone:  # the test's nudge, applied before the grammar's mask
        def __init__(self, n):
            self.inner = grammar.processor(n)

        def __call__(self, input_ids, scores):
            scores[:, banned] = -torch.inf
            return self.inner(input_ids, scores)

    nudged = type("G", (), {"processor": staticmethod(NoNone)})()
    engine = HFEngine(loaded, grammar=nudged)
    config = {"mode": "finetuned", "constrain": grammar.key, "config_name": "constrained"}
    run(cases, build_prompts(cases, "finetuned", loaded), engine, tmp_path / "c.jsonl", config,
        batch_size=2, max_new_tokens=80, progress=False)
    outs = [json.loads(x)["output"] for x in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert all(o.startswith("<|placeholder2|>ICD-10-CM Diagnoses:\n") for o in outs)
    assert main(["eval", "--predictions", str(tmp_path / "c.jsonl"), "--gold", str(tmp_path / "gold.jsonl"),
                 "--icd-ref", str(tmp_path / "icd.txt"), "--cpt-ref", str(tmp_path / "cpt.txt"),
                 "--bootstrap", "0", "--out", str(tmp_path / "ev"), "--workers", "1"]) == 0
    icd = json.loads((tmp_path / "ev" / "metrics.json").read_text())["configs"]["constrained"]["icd10"]
    assert icd["n_generated"] >= len(cases) and icd["fabricated"] == 0.0 and icd["valid"] == 1.0


@pytest.mark.slow
def test_full_icd10_grammar_compiles(tiny_phi3_dir, tmp_path):
    """All 74,736 billable ICD-10-CM codes in one grammar: compiles, then loads from the cache."""
    from infer import constrain, loading
    from opclaim.codes import icd10_billable

    loaded = loading.load(tiny_phi3_dir)
    lists = constrain.CodeLists(sorted(icd10_billable()), CPT, sorted(MODIFIERS), {})
    assert len(lists.icd10) == len(icd10_billable()) > 70_000  # 74,719 in simple-icd-10-cm 1.5
    g = constrain.for_model(loaded, lists, cache=tmp_path)
    assert not g.cached  # how long it takes is bench/bench_constrain.py's "grammar compile (first)"
    again = constrain.for_model(loaded, lists, cache=tmp_path)
    assert again.cached
    good = prompts.target(CLAIM, loaded.fmt).replace("K80.20", "S52.521A")
    assert _accepts(again, loaded.tokenizer, good, loaded.stop_ids[0])
    assert not _accepts(again, loaded.tokenizer, good.replace("S52.521A", "S52.52"), loaded.stop_ids[0])
