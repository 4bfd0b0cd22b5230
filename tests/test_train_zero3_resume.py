"""ZeRO-3 on two CPU ranks: a killed run, and a run stopped by SIGTERM, each resumed to the end,
give the adapter of an uninterrupted run, tensor by tensor (not only global_step and a log line).

- SIGKILL of both ranks and the launcher once a complete checkpoint exists (no chance to clean up);
- SIGTERM to rank 1 only: StopOnSignal agrees across ranks, both save one complete checkpoint at
  the same step and stop without presenting the run as finished.

Tolerance 1e-5, as tests/test_train_resume.py (one process): Trainer and DeepSpeed restore the
partitioned optimizer state, scheduler, per-rank RNG and data order, so only float reduction
order may differ. Kept tiny (12 steps of 4 cases per rank); three runs of two ranks.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT, free_port
from tests.train_helpers import make_cases

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
RECIPE = "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml"
STEPS, SAVE = 12, 3  # 2 steps per epoch (16 cases, 4 per rank): step 3 is mid-epoch, so resume must skip data
ATOL = 1e-5


def _cmd(model, train, out):
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "ds_configs/zero3-cpu2.yaml",
            "--main_process_port", str(free_port()), "-m", "train", "--config", RECIPE,
            "--model_name_or_path", str(model), "--train_file", str(train), "--output_dir", str(out),
            "--max_steps", str(STEPS), "--save_steps", str(SAVE), "--eval_strategy", "no", "--logging_steps", "2"]


def _run(cmd, env):
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res


@pytest.fixture
def launch():
    """Start a 2-rank run; whatever of it is still alive when the test ends (a failed assert, a
    hang) is SIGKILLed, ranks included, so a failing test does not leave ranks training."""
    import psutil

    started = []

    def start(cmd, env, log):
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=log,
                                start_new_session=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
                try:
                    p.kill()
                except psutil.NoSuchProcess:
                    pass
            proc.wait(timeout=60)


def _wait_for(path, proc, timeout=400):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"run ended (rc {proc.returncode}) before {path}"
        assert time.time() - t0 < timeout, f"no {path} after {timeout} s"
        time.sleep(0.05)


def _ranks(proc) -> dict[int, int]:
    """{RANK: pid} of the training processes under the launcher."""
    import psutil

    found = {}
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            env = child.environ()
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if "RANK" in env and "-m" in child.cmdline():
            found[int(env["RANK"])] = child.pid
    return found


def _kill_all(proc):
    """SIGKILL the ranks and the launcher at once. Not killpg of the launcher: torch's elastic
    agent starts each rank in a session of its own, so the ranks would survive it and go on."""
    import psutil

    ranks = [psutil.Process(pid) for pid in _ranks(proc).values()]
    assert len(ranks) == 2
    for p in [*ranks, psutil.Process(proc.pid)]:
        p.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    _, alive = psutil.wait_procs(ranks, timeout=60)
    assert not alive


def _adapter(out):
    from safetensors.torch import load_file

    return load_file(out / "adapter_model.safetensors")


def _assert_same_adapter(ref, out):
    a, b = _adapter(ref), _adapter(out)
    assert a.keys() == b.keys() and a
    diffs = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a}
    worst = max(diffs.values())
    assert worst <= ATOL, f"max |ref - resumed| = {worst}; {sorted(diffs.items(), key=lambda x: -x[1])[:3]}"
    assert any((a[k] != 0).any() for k in a if "lora_B" in k)  # trained, not two untouched inits


def _resume_and_check(model, train, out, ref, env, expect_from):
    res = _run(_cmd(model, train, out), env)
    resumed = [ln for ln in res.stderr.splitlines() if "resuming from" in ln]
    assert resumed and resumed[0].endswith(expect_from), resumed
    run = json.loads((out / "opclaim_run.json").read_text())
    assert run["global_step"] == STEPS and run["world_size"] == 2 and run["zero_stage"] == 3
    _assert_same_adapter(ref, out)


@pytest.fixture(scope="module")
def setup(tiny_phi3_dir, tmp_path_factory):
    from opclaim.io import write_cases
    from tests.conftest import make_cli_env

    tmp = tmp_path_factory.mktemp("z3resume")
    write_cases(tmp / "train.jsonl", make_cases(20, seed=0))
    env = make_cli_env()
    ref = tmp / "ref"
    _run(_cmd(tiny_phi3_dir, tmp / "train.jsonl", ref), env)
    return tiny_phi3_dir, tmp / "train.jsonl", ref, env


def test_zero3_sigkill_then_resume_equals_uninterrupted(setup, tmp_path, launch):
    model, train, ref, env = setup
    out = tmp_path / "out"
    with open(tmp_path / "killed.log", "w") as log:
        proc = launch(_cmd(model, train, out), env, log)
        _wait_for(out / f"checkpoint-{SAVE}" / "opclaim_complete.json", proc)
        _kill_all(proc)
    assert not (out / "opclaim_run.json").exists(), "killed too late: the run had finished"
    done = sorted(int(p.parent.name.split("-")[1]) for p in out.glob("checkpoint-*/opclaim_complete.json"))
    _resume_and_check(model, train, out, ref, env, f"checkpoint-{done[-1]}")


def test_zero3_sigterm_on_one_rank_stops_both_at_one_checkpoint_then_resumes(setup, tmp_path, launch):
    from train.checkpoint import newest_complete

    model, train, ref, env = setup
    out = tmp_path / "out"
    with open(tmp_path / "stopped.log", "w") as log:
        proc = launch(_cmd(model, train, out), env, log)
        _wait_for(out / f"checkpoint-{SAVE}" / "opclaim_complete.json", proc)
        ranks = _ranks(proc)
        assert sorted(ranks) == [0, 1], ranks
        os.kill(ranks[1], signal.SIGTERM)
        rc = proc.wait(timeout=300)
    stderr = (tmp_path / "stopped.log").read_text()
    assert rc != 0, "a stopped run must not exit as finished"
    assert stderr.count("stopped on signal after a complete checkpoint") == 2, stderr[-3000:]  # both ranks
    assert not (out / "opclaim_run.json").exists()
    last = newest_complete(out)
    step = int(last.name.split("-")[1])
    assert SAVE <= step < STEPS
    state = json.loads((last / "trainer_state.json").read_text())
    assert state["global_step"] == step
    shards = {p.name for p in (last / f"global_step{step}").iterdir()}
    assert any("rank_0" in n for n in shards) and any("rank_1" in n for n in shards), shards  # both ranks saved
    _resume_and_check(model, train, out, ref, env, last.name)
