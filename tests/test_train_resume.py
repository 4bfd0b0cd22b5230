"""Safe resume: kill the process group after a checkpoint, resume, and match an uninterrupted run.

Tolerance: adapters agree to atol 1e-5 (Trainer restores optimizer, scheduler, RNG and data
order, so the only differences are float reduction order; observed max difference is reported
by the assertion). A checkpoint without its completion marker must be skipped.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT
from tests.train_helpers import make_cases

pytestmark = pytest.mark.slow
RECIPE = "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml"
STEPS = 40


def _cmd(model, train, out):
    # One process (python -m train) keeps this test fast; the 2-rank path is test_train_distributed.
    return [sys.executable, "-m", "train", "--config", RECIPE, "--model_name_or_path", str(model),
            "--train_file", str(train), "--output_dir", str(out), "--max_steps", str(STEPS),
            "--save_steps", "10", "--eval_strategy", "no", "--logging_steps", "5"]


def _start(cmd, env):
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, f"run ended before {path.name}: {proc.stderr.read()[-2000:]}"
        assert time.time() - t0 < timeout
        time.sleep(0.02)


def _adapter(out):
    from safetensors.torch import load_file

    return load_file(out / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    from opclaim.io import write_cases

    p = tmp_path_factory.mktemp("resume") / "train.jsonl"
    write_cases(p, make_cases(16, seed=5))
    return p


def test_kill_resume_matches_uninterrupted(tmp_path, tiny_phi3_dir, train_file, cli_env):
    ref = tmp_path / "ref"
    res = subprocess.run(_cmd(tiny_phi3_dir, train_file, ref), cwd=ROOT, env=cli_env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]

    out = tmp_path / "out"
    proc = _start(_cmd(tiny_phi3_dir, train_file, out), cli_env)
    _wait_for(out / "checkpoint-10" / "opclaim_complete.json", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "opclaim_run.json").exists(), "killed too late: the run had finished"
    # A half-written newer checkpoint (no marker) - plain Trainer would resume from it.
    for ck in sorted(out.glob("checkpoint-*")):
        if not (ck / "opclaim_complete.json").exists():
            shutil.rmtree(ck)
    shutil.copytree(out / "checkpoint-10", out / "checkpoint-30")
    (out / "checkpoint-30" / "opclaim_complete.json").unlink()
    (out / "checkpoint-30" / "optimizer.pt").write_bytes(b"truncated")

    res = subprocess.run(_cmd(tiny_phi3_dir, train_file, out), cwd=ROOT, env=cli_env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    resumed = [ln for ln in res.stderr.splitlines() if "resuming from" in ln]
    assert resumed and resumed[0].endswith("checkpoint-10"), resumed
    assert list(out.glob("incomplete-checkpoint-30-*")), "marker-less checkpoint was not set aside"
    assert json.loads((out / "opclaim_run.json").read_text())["global_step"] == STEPS

    a, b = _adapter(ref), _adapter(out)
    assert a.keys() == b.keys()
    diffs = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a}
    worst = max(diffs.values())
    assert worst <= 1e-5, f"max |ref - resumed| = {worst}; {sorted(diffs.items(), key=lambda x: -x[1])[:3]}"
    assert any((a[k] != 0).any() for k in a if "lora_B" in k)  # trained, not two untouched inits


def test_signal_saves_complete_checkpoint_and_exits_75(tmp_path, tiny_phi3_dir, train_file, cli_env):
    from train.checkpoint import EXIT_REQUEUE, newest_complete

    out = tmp_path / "out"
    proc = _start(_cmd(tiny_phi3_dir, train_file, out), cli_env)
    _wait_for(out / "checkpoint-10" / "opclaim_complete.json", proc)
    os.kill(proc.pid, signal.SIGUSR1)
    proc.wait(timeout=120)
    assert proc.returncode == EXIT_REQUEUE, proc.stderr.read()[-2000:]
    last = newest_complete(out)
    step = int(last.name.split("-")[1])
    assert 10 < step < STEPS  # saved at the step where the signal arrived, not a scheduled save
    assert (last / "adapter_model.safetensors").is_file() and (last / "trainer_state.json").is_file()
    assert not (out / "opclaim_run.json").exists()  # the run is not presented as finished


def test_corrupt_marked_checkpoints_fall_back_to_the_newest_that_verifies(tmp_path, tiny_phi3_dir, train_file,
                                                                          cli_env):
    """A checkpoint that carries its marker but whose files were truncated afterwards (disk full, a
    bad copy) is skipped with its reason; resume takes the newest one that still verifies."""
    out = tmp_path / "out"
    cmd = _cmd(tiny_phi3_dir, train_file, out)
    cmd[cmd.index("--max_steps") + 1] = "30"
    res = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for step in (10, 20, 30):
        files = json.loads((out / f"checkpoint-{step}" / "opclaim_complete.json").read_text())["files"]
        assert {"optimizer.pt", "adapter_model.safetensors", "trainer_state.json"} <= set(files)
    (out / "opclaim_run.json").unlink()  # as if the run had died after its last checkpoint
    for step, name in ((30, "optimizer.pt"), (20, "adapter_model.safetensors")):
        p = out / f"checkpoint-{step}" / name
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])

    res = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    err = res.stderr
    assert "skipping checkpoint-30: optimizer.pt is" in err and "the marker says" in err
    assert "skipping checkpoint-20: adapter_model.safetensors is" in err
    resumed = [ln for ln in err.splitlines() if "resuming from" in ln]
    assert resumed and resumed[0].endswith("checkpoint-10"), resumed
    assert len(list(out.glob("corrupt-checkpoint-*"))) == 2
    assert json.loads((out / "opclaim_run.json").read_text())["global_step"] == 30
    from train.checkpoint import verify

    assert verify(out / "checkpoint-30") is None  # saved again, with a marker that matches
