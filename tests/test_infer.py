"""opclaim infer on the tiny Phi-3: batched == one at a time, resume, refusals, over-long prompts."""

import json
import shutil
import stat
import subprocess

import pytest

from opclaim.claim import Case, Claim
from opclaim.io import write_cases
from tests.conftest import opclaim_exe

SENTENCES = ["The patient was prepped and draped in the usual sterile fashion.",
             "Trocars were placed under direct vision.", "The gallbladder was dissected from the liver bed.",
             "Hemostasis was obtained.", "The fascia was closed with absorbable suture."]


def make_cases(n, start=0):
    """Notes of different lengths, so batches need padding and length buckets matter."""
    out = []
    for i in range(start, start + n):
        note = f"PREOPERATIVE DIAGNOSIS: cholelithiasis case {i}.\n" + " ".join(SENTENCES[: 1 + i % 5] * (1 + i % 3))
        claim = Claim.from_dict({"icd10": ["K80.20"], "providers": [
            {"name": "Dr. A. Rivera", "role": "surgeon", "lines": [{"cpt": "47562", "modifiers": []}]}]})
        out.append(Case(id=f"c{i:03d}", note=note, claim=claim))
    return out


def rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def loaded(tiny_phi3_dir):
    from infer.loading import load

    return load(tiny_phi3_dir)


def _config(loaded, **kw):
    return {"mode": "finetuned", "format": loaded.fmt.name, **loaded.info, "max_new_tokens": 16, **kw}


def _run(loaded, cases, out, batch_size, **kw):
    from infer.engines import HFEngine
    from infer.render import build_prompts
    from infer.run import run

    prompts_text = build_prompts(cases, "finetuned", loaded)
    engine = HFEngine(loaded)
    return run(cases, prompts_text, engine, out, _config(loaded), batch_size=batch_size,
                        max_new_tokens=16, progress=False, **kw)


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_batched_equals_sequential(loaded, tmp_path):
    cases = make_cases(7)
    _run(loaded, cases, tmp_path / "seq.jsonl", 1)
    _run(loaded, cases, tmp_path / "bat.jsonl", 4)
    seq, bat = rows(tmp_path / "seq.jsonl"), rows(tmp_path / "bat.jsonl")
    assert [r["id"] for r in seq] == [c.id for c in cases] == [r["id"] for r in bat]  # input order
    assert [r["output"] for r in seq] == [r["output"] for r in bat]
    assert len({r["output"] for r in seq}) > 1  # different notes, different outputs: not a constant
    assert all(r["output"] and r["latency_s"] > 0 for r in bat)
    assert stat.S_IMODE((tmp_path / "bat.jsonl").stat().st_mode) == 0o600


def test_padding_aware_repetition_penalty_ignores_pads():
    import torch
    from transformers import RepetitionPenaltyLogitsProcessor

    from infer.engines import PaddingAwareRepetitionPenalty

    ids = torch.tensor([[0, 0, 5, 6], [4, 5, 6, 7]])  # row 0 left-padded with pad id 0
    scores = torch.randn(2, 10)
    ours = PaddingAwareRepetitionPenalty(1.1, [2, 0])(ids, scores.clone())
    hf_row0 = RepetitionPenaltyLogitsProcessor(1.1)(ids[:1, 2:], scores[:1].clone())
    hf_row1 = RepetitionPenaltyLogitsProcessor(1.1)(ids[1:], scores[1:].clone())
    assert torch.equal(ours[0], hf_row0[0]) and torch.equal(ours[1], hf_row1[0])
    assert ours[0, 0] == scores[0, 0]  # the pad id is not penalised


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_resume_after_kill_skips_done_ids(loaded, tmp_path):
    from infer import output

    cases, out = make_cases(6), tmp_path / "p.jsonl"

    def die(n_done):
        raise KeyboardInterrupt  # killed after the first batch

    with pytest.raises(KeyboardInterrupt):
        _run(loaded, cases, out, 2, on_batch=die)
    assert not out.exists()  # a partial run never looks complete
    part = rows(output.partial(out))
    assert len(part) == 2
    assert json.loads(output.run_record(out).read_text())["complete"] is False
    stats = _run(loaded, cases, out, 2)
    assert stats["skipped"] == 2 and stats["generated"] == 4
    final = {r["id"]: r for r in rows(out)}
    for r in part:  # rows written before the kill are kept as they were
        assert final[r["id"]] == r
    _run(loaded, cases, tmp_path / "fresh.jsonl", 2)
    assert [r["output"] for r in rows(out)] == [r["output"] for r in rows(tmp_path / "fresh.jsonl")]
    assert json.loads(output.run_record(out).read_text())["complete"] is True
    assert not output.partial(out).exists()


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_over_long_prompt_is_flagged_not_dropped(loaded, tmp_path):
    from infer.output import FLAG_TOO_LONG

    cases = make_cases(3)
    cases[1].note = " ".join(f"w{i}x{i * 7919 % 997}" for i in range(6000))  # far beyond 4096 tokens
    _run(loaded, cases, tmp_path / "p.jsonl", 2)
    got = rows(tmp_path / "p.jsonl")
    assert [r["id"] for r in got] == [c.id for c in cases]
    assert got[1]["output"] == "" and got[1]["flags"] == [FLAG_TOO_LONG]
    assert got[0]["output"] and FLAG_TOO_LONG not in got[0].get("flags", [])


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_cli_end_to_end_and_refuses_other_config(tiny_phi3_dir, tmp_path, cli_env, capsys):
    cases_file, out = tmp_path / "cases.jsonl", tmp_path / "preds.jsonl"
    write_cases(cases_file, make_cases(4))
    cmd = [opclaim_exe(), "infer", "--model", str(tiny_phi3_dir), "--mode", "finetuned", "--cases",
           str(cases_file), "--out", str(out), "--batch-size", "3", "--max-new-tokens", "16", "--no-progress"]
    res = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    got = rows(out)
    assert [set(r) >= {"id", "config", "output", "latency_s"} for r in got] == [True] * 4
    assert {r["config"] for r in got} == {"finetuned"}
    # Same configuration: nothing left to do. Different configuration: refused, file untouched.
    # (in-process from here: the same CLI code without another interpreter start-up)
    assert _cli(cmd[1:]) == 0
    assert "4 already done" in capsys.readouterr().out
    before = out.read_bytes()
    assert _cli(cmd[1:-2] + ["20", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "different run configuration" in err and "max_new_tokens" in err
    assert out.read_bytes() == before


def _cli(argv):
    from opclaim.cli import main

    return main(argv)


def test_bad_inputs_exit_2(tiny_phi3_dir, tmp_path, capsys):
    from opclaim.registry import build_tiny_phi3

    cases_file = tmp_path / "cases.jsonl"
    write_cases(cases_file, make_cases(2))
    base = ["infer", "--mode", "finetuned", "--cases", str(cases_file), "--out", str(tmp_path / "o.jsonl")]

    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_phi3_dir, no_weights)
    for f in no_weights.glob("*.safetensors"):
        f.unlink()
    assert _cli(base + ["--model", str(no_weights)]) == 2
    assert "safetensors" in capsys.readouterr().err

    no_tok = tmp_path / "no_tok"
    shutil.copytree(tiny_phi3_dir, no_tok)
    for f in list(no_tok.glob("tokenizer*")) + list(no_tok.glob("chat_template*")):
        f.unlink()
    assert _cli(base + ["--model", str(no_tok)]) == 2
    assert "tokenizer" in capsys.readouterr().err

    # An adapter made for a narrower model does not fit this base.
    other = build_tiny_phi3(tmp_path / "other", hidden=32)
    adapter = _make_adapter(other, tmp_path / "adapter32")
    assert _cli(base + ["--model", str(tiny_phi3_dir), "--adapter", str(adapter)]) == 2
    err = capsys.readouterr().err
    assert "another base" in err and ".lora_A.weight'" in err  # the tensor it stopped at, by name

    rag = ["infer", "--mode", "rag", "--cases", str(cases_file), "--out", str(tmp_path / "r.jsonl")]
    assert _cli(rag + ["--model", str(tiny_phi3_dir)]) == 2
    assert "--rag-index" in capsys.readouterr().err

    bad = tmp_path / "bad.jsonl"
    lines = cases_file.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["claim"]["icd10"] = ["not a code"]
    bad.write_text(lines[0] + "\n" + json.dumps(broken) + "\n")
    assert _cli(["infer", "--model", str(tiny_phi3_dir), "--mode", "finetuned", "--cases", str(bad),
                 "--out", str(tmp_path / "b.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:2" in err and "claim.icd10[0]" in err
    assert "cholelithiasis" not in err  # never note text


def _make_adapter(model_dir, out):
    from peft import LoraConfig, get_peft_model

    from opclaim.registry import load_model

    model = load_model(model_dir)
    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["qkv_proj", "o_proj"], init_lora_weights=False))
    peft.save_pretrained(out, safe_serialization=True)
    return out


def test_vllm_engine_unavailable_is_a_clear_error(tiny_phi3_dir, tmp_path, capsys):
    pytest.importorskip("torch")
    import torch

    try:
        import vllm  # noqa: F401
        has_vllm = True
    except ImportError:
        has_vllm = False
    if has_vllm and torch.cuda.is_available():
        pytest.skip("vllm and a GPU are present: the engine is usable here")
    cases_file = tmp_path / "cases.jsonl"
    write_cases(cases_file, make_cases(1))
    assert _cli(["infer", "--model", str(tiny_phi3_dir), "--mode", "finetuned", "--cases", str(cases_file),
                 "--out", str(tmp_path / "v.jsonl"), "--engine", "vllm"]) == 2
    err = capsys.readouterr().err
    assert "--engine vllm needs" in err


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_rag_mode_uses_retrieved_example_claims(loaded, tiny_phi3_dir, tmp_path):
    """Real MiniLM + FAISS index from rag/; each prompt carries the two nearest training claims."""
    from infer.render import build_prompts
    from opclaim.cli import main
    from rag.index import build_index
    from rag.retrieve import Retriever

    train = make_cases(4, start=100)
    train[0].claim = Claim.from_dict({"icd10": ["K35.80"], "providers": [
        {"name": "Dr. Q. Example", "lines": [{"cpt": "44970", "modifiers": ["80"]}]}]})
    build_index(train, tmp_path / "index", progress=False)
    test = make_cases(2)
    prompts_text = build_prompts(test, "rag", loaded, Retriever.load(tmp_path / "index"), k=2)
    assert all(p.count("Relevant Example Claim") == 2 for p in prompts_text)
    write_cases(tmp_path / "test.jsonl", test)
    assert main(["infer", "--model", str(tiny_phi3_dir), "--mode", "rag", "--rag-index", str(tmp_path / "index"),
                 "--cases", str(tmp_path / "test.jsonl"), "--out", str(tmp_path / "rag.jsonl"),
                 "--max-new-tokens", "8", "--no-progress"]) == 0
    assert [r["config"] for r in rows(tmp_path / "rag.jsonl")] == ["rag", "rag"]
    cfg = json.loads((tmp_path / "rag.jsonl.run.json").read_text())["config"]
    assert cfg["k"] == 2 and cfg["rag_index"].endswith("index")


# ---------------------------------------------------------------- resume safety (issue 16, item 5)
def _infer_cmd(model, cases_file, out, *extra):
    return [opclaim_exe(), "infer", "--model", str(model), "--mode", "finetuned", "--cases", str(cases_file),
            "--out", str(out), "--max-new-tokens", "16", "--no-progress", *extra]


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_other_cases_file_is_refused_unless_force_new(tiny_phi3_dir, tmp_path, capsys):
    from opclaim.cli import main

    out = tmp_path / "preds.jsonl"
    write_cases(tmp_path / "a.jsonl", make_cases(3))
    write_cases(tmp_path / "subset.jsonl", make_cases(2))
    edited = make_cases(3)
    edited[2].note += " Edited."
    write_cases(tmp_path / "edited.jsonl", edited)
    assert main(_infer_cmd(tiny_phi3_dir, tmp_path / "a.jsonl", out)[1:]) == 0
    run = json.loads((tmp_path / "preds.jsonl.run.json").read_text())
    assert run["schema"] == "opclaim.infer-run/3" and run["cases"]["n"] == 3
    before = out.read_bytes()
    capsys.readouterr()
    for other, what in (("subset.jsonl", "a different number of cases"), ("edited.jsonl", "the same ids")):
        assert main(_infer_cmd(tiny_phi3_dir, tmp_path / other, out)[1:]) == 2
        err = capsys.readouterr().err
        assert "another cases file" in err and what in err and "--force-new" in err
        assert out.read_bytes() == before  # refused: nothing touched
    assert main(_infer_cmd(tiny_phi3_dir, tmp_path / "subset.jsonl", out, "--force-new")[1:]) == 0
    assert [r["id"] for r in rows(out)] == [c.id for c in make_cases(2)]  # no stale rows kept


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_second_run_on_the_same_out_exits_2_at_once(tiny_phi3_dir, tmp_path, cli_env):
    """Another process holds the output's lock (flock), as a running `opclaim infer` does."""
    import time

    from infer.output import locked

    write_cases(tmp_path / "cases.jsonl", make_cases(2))
    out = tmp_path / "preds.jsonl"
    with locked(out):
        t0 = time.time()
        res = subprocess.run(_infer_cmd(tiny_phi3_dir, tmp_path / "cases.jsonl", out), env=cli_env,
                             capture_output=True, text=True, timeout=120)
        took = time.time() - t0
    assert res.returncode == 2 and "another run is writing" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and not out.exists()
    assert took < 60  # refused before any model loads
    res = subprocess.run(_infer_cmd(tiny_phi3_dir, tmp_path / "cases.jsonl", out), env=cli_env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr  # released: the next run goes ahead


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_kill9_mid_run_then_torn_last_line_is_regenerated(tiny_phi3_dir, tmp_path, cli_env, loaded):
    """A real run is SIGKILLed mid-way; its partial file is then given the torn last line a kill
    inside write() leaves. The rerun drops it, regenerates that case, and matches a fresh run."""
    import signal
    import time

    cases = make_cases(60)
    write_cases(tmp_path / "cases.jsonl", cases)
    out = tmp_path / "preds.jsonl"
    part = tmp_path / "preds.jsonl.partial"
    cmd = _infer_cmd(tiny_phi3_dir, tmp_path / "cases.jsonl", out, "--batch-size", "1")
    first = subprocess.Popen(cmd, env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and not (part.is_file() and part.read_bytes().count(b"\n") >= 3):
            assert first.poll() is None, first.communicate()[1]
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    assert not out.exists(), "killed too late: the run had finished"
    lines = part.read_bytes().splitlines(keepends=True)
    if not lines[-1].endswith(b"\n"):  # the kill itself tore the last line
        lines = lines[:-1]
    kept = len(lines) - 1
    assert kept >= 2
    torn_id = json.loads(lines[-1])["id"]
    part.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # half a row, no newline
    res = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    assert f"{len(cases) - kept} generated, {kept} already done" in res.stdout
    got = rows(out)
    assert [r["id"] for r in got] == [c.id for c in cases] and torn_id in {r["id"] for r in got}
    _run(loaded, cases, tmp_path / "fresh.jsonl", 1)
    assert [r["output"] for r in got] == [r["output"] for r in rows(tmp_path / "fresh.jsonl")]
    assert not part.exists() and not (tmp_path / "preds.jsonl.lock").exists()
