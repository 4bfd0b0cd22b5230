"""Retrieval-tuned training (prompt_mode rag/mixed) and the infer checks that go with it: real
MiniLM + FAISS index, the tiny Phi-3, the real `opclaim train` and `opclaim infer`."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest

import prompts
from opclaim.claim import Case, Claim
from tests.conftest import ROOT
from tests.test_rag import make_cases as family_cases

RECIPE = "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml"


def unique_cases(n: int, services=("General Surgery", "Orthopedics")) -> list[Case]:
    """The test_rag families, each claim made unique by its surgeon, so a prompt that showed a case its
    own claim would be visible as that claim's text."""
    out = []
    for i, c in enumerate(family_cases(n, seed=7)):
        d = c.claim.to_dict()
        d["providers"][0]["name"] = f"Dr. Unique{i:03d}"
        out.append(Case(id=c.id, note=c.note, claim=Claim.from_dict(d), service=services[i % len(services)],
                        date="2024-01-01"))
    return out


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    from opclaim.io import write_cases
    from rag.index import build_index

    d = tmp_path_factory.mktemp("ragtrain")
    cases = unique_cases(24)
    train = d / "train.jsonl"
    write_cases(train, cases)
    val = d / "val.jsonl"
    write_cases(val, unique_cases(4)[:2])
    build_index(cases, d / "index", train_file=train, progress=False)
    return SimpleNamespace(dir=d / "index", train=train, val=val, cases=cases)


def _dargs(index, **kw):
    from train.config import DataArgs

    kw = {"prompt_mode": kw.pop("mode", "rag"), "rag_index": str(index.dir), **kw}
    return DataArgs(train_file=str(index.train), eval_file=str(index.val), **kw)


def _build(index, tiny_tokenizer, **kw):
    from train import data

    dargs = _dargs(index, **kw)
    splits = data.load_splits(dargs)
    fmt = prompts.get_format("phi3")
    return splits, data.build(splits, dargs, fmt, tiny_tokenizer, seed=0), fmt


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_rag_training_prompts_never_show_their_own_claim(index, tiny_tokenizer):
    splits, (train_ds, val_ds, facts), fmt = _build(index, tiny_tokenizer, rag_distractor_share=0.0)
    assert len(train_ds) == len(splits["train"]) == 24
    for row, case in zip(train_ds, splits["train"], strict=True):
        own = prompts.target(case.claim, fmt)
        assert own not in row["prompt"]  # its own claim never appears
        assert row["prompt"].count("Relevant Example Claim") == 2
        assert row["completion"].startswith(own)
        # the examples are other training claims, from the same procedure family (nearest)
        others = [c for c in splits["train"] if c.id != case.id and prompts.target(c.claim, fmt) in row["prompt"]]
        assert len(others) == 2
        assert all(o.claim.providers[0].lines[0].cpt == case.claim.providers[0].lines[0].cpt for o in others)
    assert len(val_ds) == 2 and all("Relevant Example Claim" in r["prompt"] for r in val_ds)
    assert facts["k"] == 2 and facts["distractor_share_actual"] == 0.0 and facts["index_fingerprint"]


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
@pytest.mark.parametrize("share,kind", [(0.25, "other-service"), (0.5, "random"), (1.0, "other-service")])
def test_distractor_share_is_honoured(index, share, kind):
    from rag.retrieve import Retriever
    from train import rag_data

    r = Retriever.load(index.dir, train_file=index.train)
    cases = index.cases
    plan = rag_data.plan(cases, r, k=2, share=share, kind=kind, seed=3)
    assert sum(plan.distractor) == round(share * len(cases))
    near = r.neighbours(r.embed([c.note for c in cases]), 2, [c.id for c in cases])
    service = {c.id: c.service for c in cases}
    for case, ids, dis, hits in zip(cases, plan.example_ids, plan.distractor, near, strict=True):
        assert case.id not in ids and len(set(ids)) == 2
        nearest = [r.ids[j] for j, _ in hits]
        if dis:
            assert not set(ids) & set(nearest)
            if kind == "other-service":
                assert all(service[i] != case.service for i in ids)
        else:
            assert ids == nearest
    again = rag_data.plan(cases, r, k=2, share=share, kind=kind, seed=3)
    assert again.example_ids == plan.example_ids  # seeded


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_mixed_mode_gives_both_forms(index, tiny_tokenizer):
    splits, (train_ds, _, _), _ = _build(index, tiny_tokenizer, mode="mixed")
    n = len(splits["train"])
    assert len(train_ds) == 2 * n
    assert sum("Relevant Example Claim" in r["prompt"] for r in train_ds) == n


@pytest.mark.parametrize("kw,field", [({"rag_index": None}, "rag_index"), ({"rag_k": 0}, "rag_k"),
                                      ({"rag_distractor_share": 1.5}, "rag_distractor_share"),
                                      ({"rag_distractors": "nearest"}, "rag_distractors"),
                                      ({"mode": "retrieval"}, "prompt_mode")])
@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_bad_rag_settings_are_refused(index, tiny_tokenizer, kw, field):
    from opclaim.errors import InputError

    with pytest.raises(InputError) as e:
        _build(index, tiny_tokenizer, **kw)
    assert e.value.field == field


def _train(tmp, model, index, mode, cli_env, steps=2):
    out = tmp / f"adapter-{mode}"
    cmd = [sys.executable, "-m", "train", "--config", RECIPE, "--model_name_or_path", str(model),
           "--train_file", str(index.train), "--output_dir", str(out), "--max_steps", str(steps),
           "--save_steps", "100", "--eval_strategy", "no", "--logging_steps", "1", "--val_fraction", "0", "--max_length", "2048", "--prompt_mode", mode]
    if mode != "finetuned":
        cmd += ["--rag_index", str(index.dir), "--rag_distractor_share", "0.25"]
    r = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def _infer(cli_env, *args):
    return subprocess.run([sys.executable, "-m", "opclaim", "infer", *map(str, args), "--no-progress",
                           "--max-new-tokens", "24"], cwd=ROOT, env=cli_env, capture_output=True, text=True,
                          timeout=900)


@pytest.mark.slow
def test_rag_trained_adapter_record_and_infer_mode_checks(tmp_path, tiny_phi3_dir, index, cli_env):
    rag = _train(tmp_path, tiny_phi3_dir, index, "rag", cli_env)
    run = json.loads((rag / "opclaim_run.json").read_text())
    assert run["prompt_mode"] == "rag"
    assert run["rag"]["k"] == 2 and run["rag"]["distractor_share"] == 0.25
    assert run["rag"]["distractor_share_actual"] == 0.25 and run["rag"]["index_fingerprint"]
    common = ["--model", tiny_phi3_dir, "--adapter", rag, "--cases", index.val]

    # a retrieval-tuned model without its examples: refused, and the reason says why
    r = _infer(cli_env, *common, "--mode", "finetuned", "--out", tmp_path / "a.jsonl")
    assert r.returncode == 2 and "prompt mode rag and run in --mode rag, not --mode finetuned" in r.stderr and "--allow-mode-mismatch" in r.stderr
    assert not (tmp_path / "a.jsonl").exists()
    r = _infer(cli_env, *common, "--mode", "rag", "--rag-index", index.dir, "--k", "3", "--out", tmp_path / "k.jsonl")
    assert r.returncode == 2 and "--k 3" in r.stderr
    r = _infer(cli_env, *common, "--mode", "finetuned", "--allow-mode-mismatch", "--out", tmp_path / "a.jsonl")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "a.jsonl.run.json").read_text())["config"]["mode_mismatch_allowed"] is True

    # rag mode, batched, equals one case at a time (prompt-inclusive and generated-only penalty)
    for scope in ("prompt", "generated"):
        outs = {}
        for bs in (1, 2):
            out = tmp_path / f"rag-{scope}-{bs}.jsonl"
            r = _infer(cli_env, *common, "--mode", "rag", "--rag-index", index.dir, "--batch-size", bs,
                       "--repetition-scope", scope, "--out", out)
            assert r.returncode == 0, r.stderr[-2000:]
            outs[bs] = [json.loads(x)["output"] for x in out.read_text().splitlines()]
        assert outs[1] == outs[2] and len(outs[1]) == 2
        cfg = json.loads((tmp_path / f"rag-{scope}-2.jsonl.run.json").read_text())["config"]
        assert cfg.get("repetition_scope", "prompt") == scope

    # --calibration: every code gets p_cal and route; a file that is not a calibration is refused
    from eval.calibrate import Calibration
    from opclaim import artifacts

    pts = {"x": [0.0, 1.0], "y": [0.0, 1.0], "n": 2, "ece_before": None, "ece_after": None}
    cal = tmp_path / "cal.json"
    artifacts.save(Calibration(method="isotonic", key="p", systems=dict.fromkeys(("icd10", "cpt", "modifiers"), pts),
                               fitted_on={"n_cases": 0, "id_digests": [], "predictions_sha256": ""},
                               routing={"cpt": {"threshold": 0.0}}), cal)
    out = tmp_path / "cal.jsonl"
    r = _infer(cli_env, *common, "--mode", "rag", "--rag-index", index.dir, "--calibration", cal, "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "cal.jsonl.run.json").read_text())["config"]["calibration"]
    for row in map(json.loads, out.read_text().splitlines()):
        for c in row["confidence"]["codes"]:
            assert "p_cal" in c and c["route"] == ("auto" if c["system"] == "cpt" else "review")
            assert "agree" in c  # rag rows: the neighbours' agreement
    r = _infer(cli_env, *common, "--mode", "rag", "--rag-index", index.dir, "--calibration", index.train,
               "--out", tmp_path / "bad.jsonl")
    assert r.returncode == 2 and not (tmp_path / "bad.jsonl").exists()


@pytest.mark.slow
def test_plain_finetune_refused_in_rag_mode_and_mixed_runs_both(tmp_path, tiny_phi3_dir, index, cli_env):
    plain = _train(tmp_path, tiny_phi3_dir, index, "finetuned", cli_env, steps=1)
    r = _infer(cli_env, "--model", tiny_phi3_dir, "--adapter", plain, "--cases", index.val, "--mode", "rag",
               "--rag-index", index.dir, "--out", tmp_path / "p.jsonl")
    assert r.returncode == 2 and "prompt mode finetuned and" in r.stderr
    mixed = _train(tmp_path, tiny_phi3_dir, index, "mixed", cli_env, steps=1)
    for mode in ("finetuned", "rag"):
        extra = ["--rag-index", index.dir] if mode == "rag" else []
        r = _infer(cli_env, "--model", tiny_phi3_dir, "--adapter", mixed, "--cases", index.val, "--mode", mode,
                   *extra, "--out", tmp_path / f"m-{mode}.jsonl")
        assert r.returncode == 0, r.stderr[-2000:]
    # the merged model carries the record: the check holds after `opclaim merge`
    merged = tmp_path / "merged"
    m = subprocess.run([sys.executable, "-m", "opclaim", "merge", "--model", str(tiny_phi3_dir), "--adapter",
                        str(plain), "--out", str(merged)], cwd=ROOT, env=cli_env, capture_output=True, text=True)
    assert m.returncode == 0, m.stderr[-2000:]
    r = _infer(cli_env, "--model", merged, "--cases", index.val, "--mode", "rag", "--rag-index", index.dir,
               "--out", tmp_path / "mm.jsonl")
    assert r.returncode == 2 and "prompt mode finetuned and" in r.stderr
