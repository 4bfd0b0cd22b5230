"""CPT fabrication, actually exercised: a model nudged to write a CPT code that is in the synthetic
catalog but not in --cpt-ref. Without the grammar it writes that code (fabricated > 0, as
`opclaim eval` counts against --cpt-ref); with the grammar of `constrain.code_lists(icd_ref,
cpt_ref)` it cannot, and writes a listed code instead (fabricated == 0.0, n_generated > 0).

The nudge is a logits processor placed before the grammar's mask (the grammar still decides
what is allowed): it adds a large bonus to the next token of a few target claim texts, the
fabricated one first. A random tiny model otherwise writes no CPT code at all (n_generated 0),
which is why tests/constrain/test_constrain.py cannot see CPT fabrication.
"""

import json

import pytest

import prompts
from opclaim.claim import Claim
from opclaim.io import write_cases
from tests.test_infer import make_cases

ICD = ["K80.20", "R10.11", "K35.80"]
CPT_REF = ["47562", "47563", "44970"]
FABRICATED = "19301"  # in the synthetic catalog, not in CPT_REF: the grammar must refuse it


def _claim(cpt: str) -> Claim:
    return Claim.from_dict({"icd10": ["K80.20"], "providers": [
        {"name": "Dr. A. Rivera", "role": "surgeon",
         "lines": [{"cpt": cpt, "modifiers": [], "description": "Procedure"}]}]})


class Nudge:
    """Pushes each row along the first target whose tokens it has written so far; the first
    target (the fabricated code) gets the biggest bonus, so it wins wherever it is allowed."""

    def __init__(self, targets: list[list[int]], inner=None):
        self.targets, self.inner, self.start = targets, inner, None

    def __call__(self, input_ids, scores):
        if self.start is None:
            self.start = input_ids.shape[1]  # the prompts' (left-padded) width: new tokens follow
        for row in range(input_ids.shape[0]):
            done = input_ids[row, self.start:].tolist()
            bonus = {}  # next token -> bonus of the best target wanting it (targets share prefixes)
            for rank, ids in enumerate(self.targets):
                if len(done) < len(ids) and ids[:len(done)] == done:
                    bonus.setdefault(ids[len(done)], 1000.0 - 100.0 * rank)
            for tok, b in bonus.items():
                scores[row, tok] += b
        return self.inner(input_ids, scores) if self.inner is not None else scores


class NudgedGrammar:
    """Stands where a Grammar stands for HFEngine: `processor(batch_size)` per batch."""

    def __init__(self, targets, grammar=None):
        self.targets, self.grammar = targets, grammar

    def processor(self, n):
        return Nudge(self.targets, self.grammar.processor(n) if self.grammar is not None else None)


@pytest.fixture(scope="module")
def setup(tiny_phi3_dir, tmp_path_factory):
    from tests import infer_api as generate

    tmp = tmp_path_factory.mktemp("cpt")
    cases = make_cases(4)
    write_cases(tmp / "gold.jsonl", cases)
    (tmp / "icd.txt").write_text("\n".join(ICD) + "\n")
    (tmp / "cpt.txt").write_text("\n".join(CPT_REF) + "\n")
    loaded = generate.load(tiny_phi3_dir)
    stop = loaded.stop_ids[0]
    targets = [prompts.encode(loaded.tokenizer, prompts.target(_claim(c), loaded.fmt)) + [stop]
               for c in [FABRICATED, *CPT_REF]]
    return tmp, cases, loaded, targets


def _run_and_score(setup, name, grammar):
    from opclaim.cli import main
    from tests import infer_api as generate

    tmp, cases, loaded, targets = setup
    engine = generate.HFEngine(loaded, grammar=NudgedGrammar(targets, grammar))
    out = tmp / f"{name}.jsonl"
    config = {"mode": "finetuned", "constrain": grammar.key if grammar else None, "config_name": name}
    generate.run(cases, generate.build_prompts(cases, "finetuned", loaded), engine, out, config,
                 batch_size=2, max_new_tokens=120, progress=False)
    assert main(["eval", "--predictions", f"{name}={out}", "--gold", str(tmp / "gold.jsonl"),
                 "--icd-ref", str(tmp / "icd.txt"), "--cpt-ref", str(tmp / "cpt.txt"),
                 "--bootstrap", "0", "--out", str(tmp / f"ev-{name}"), "--workers", "1"]) == 0
    metrics = json.loads((tmp / f"ev-{name}" / "metrics.json").read_text())["configs"][name]
    outputs = [json.loads(x)["output"] for x in out.read_text().splitlines()]
    return metrics, outputs


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_unconstrained_nudged_model_fabricates_cpt(setup, capsys):
    """The nudge works: free decoding writes the catalog code the reference list leaves out."""
    metrics, outputs = _run_and_score(setup, "free", None)
    assert all(f"CPT 1: {FABRICATED} |" in o for o in outputs)
    assert metrics["cpt"]["n_generated"] >= len(outputs)
    assert metrics["cpt"]["fabricated"] > 0


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_constrained_cpt_is_never_fabricated(setup, tmp_path, capsys):
    """The grammar built from --icd-ref/--cpt-ref as `opclaim infer --constrain` builds it: the
    fabricated code cannot be written, a listed one is, and eval counts 0.0 fabricated CPT."""
    from infer import constrain

    tmp, _, loaded, _ = setup
    lists = constrain.code_lists(tmp / "icd.txt", tmp / "cpt.txt")
    assert FABRICATED not in lists.cpt  # what `code_lists` must honour: --cpt-ref alone
    grammar = constrain.for_model(loaded, lists, cache=tmp_path / "gc")
    metrics, outputs = _run_and_score(setup, "constrained", grammar)
    assert not any(FABRICATED in o for o in outputs)
    assert metrics["cpt"]["n_generated"] >= len(outputs) > 0
    assert metrics["cpt"]["fabricated"] == 0.0 and metrics["cpt"]["valid"] == 1.0
    assert metrics["icd10"]["fabricated"] == 0.0
