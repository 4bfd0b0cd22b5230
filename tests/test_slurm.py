"""slurm/*.sbatch and slurm/pipeline.sh on a real one-node SLURM cluster (tests/slurm_cluster.sh).

One pipeline run (train -> 2-rank infer -> eval, `sbatch --wait`) serves every test here: its training
job is preempted mid-run (USR1 to the batch script, as `--signal=B:USR1@120` does before the time
limit), requeues itself and resumes from its complete checkpoint; then inference and evaluation
run on the finished adapter. The notes carry a PHI canary that must not reach any job log.
"""

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_offline_phi import CANARY, assert_phi_contained, write_canary_data

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "tests" / "slurm_cluster.sh"
MAX_STEPS = 24


@pytest.fixture(scope="module")
def slurm_env(cli_env_module, tmp_path_factory):
    """Bring the cluster up (idempotent) and return an environment whose clients find it."""
    env = dict(cli_env_module)
    env["OPCLAIM_SLURM_DIR"] = env.get("OPCLAIM_SLURM_DIR", "/tmp/opclaim-slurm")
    was_up = subprocess.run([str(CLUSTER), "status"], env=env, capture_output=True).returncode == 0
    r = subprocess.run([str(CLUSTER), "up"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    env["SLURM_CONF"] = re.search(r"SLURM_CONF=(\S+)", r.stdout).group(1)
    yield env
    if not was_up:  # leave a cluster someone else started alone
        subprocess.run([str(CLUSTER), "down"], env=env, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def cli_env_module():
    from tests.conftest import make_cli_env

    return make_cli_env()


def _jobs(env) -> set[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True).stdout
    return set(out.split())


def _job_field(env, job: str, field: str) -> str:
    out = subprocess.run(["scontrol", "show", "job", job], env=env, capture_output=True, text=True).stdout
    m = re.search(rf"\b{field}=(\S+)", out)
    return m.group(1) if m else ""


@pytest.fixture(scope="module")
def pipeline_run(slurm_env, tiny_phi3_dir, tmp_path_factory):
    """Run slurm/pipeline.sh --wait; preempt its training job once while it trains."""
    base = tmp_path_factory.mktemp("slurm-pipeline")
    train, test = write_canary_data(base, n_train=24, n_test=6)
    out = base / "run"
    env = dict(slurm_env, INFER_ARGS="--max-new-tokens 48 --batch-size 3", INFER_PROCS="2")
    cmd = [str(ROOT / "slurm" / "pipeline.sh"), "--model", str(tiny_phi3_dir), "--train", str(train),
           "--test", str(test), "--out", str(out), "--bootstrap", "50", "--wait", "--",
           "--max_steps", str(MAX_STEPS), "--logging_steps", "1", "--save_steps", "1000",
           "--eval_strategy", "no", "--val_fraction", "0"]
    t0 = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=base)

    # Wait for the training job to log a step, then preempt it.
    train_job, signalled_at_step = None, None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        logs = sorted((out / "logs").glob("train-*.out")) if (out / "logs").is_dir() else []
        if logs:
            train_job = logs[0].name.split("-")[1].split(".")[0]
            steps = re.findall(r"'loss'", logs[0].read_text(errors="replace"))
            if steps:
                signalled_at_step = len(steps)
                r = subprocess.run(["scancel", "--batch", "--signal=USR1", train_job], env=env,
                                   capture_output=True, text=True)
                assert r.returncode == 0, r.stderr
                break
        time.sleep(0.5)
    # SLURM holds a requeued job for ~2 minutes (Reason=BeginTime); an operator may release it
    # early, and so does the test, to keep CI fast. The requeue itself is SLURM's own.
    released = False
    while signalled_at_step is not None and not released and proc.poll() is None and time.time() < deadline + 300:
        if _job_field(env, train_job, "JobState") == "PENDING" and int(_job_field(env, train_job, "Restarts") or 0):
            subprocess.run(["scontrol", "update", f"JobId={train_job}", "StartTime=now"], env=env,
                           capture_output=True)
            released = True
        time.sleep(0.5)
    stdout, stderr = proc.communicate(timeout=900)
    return {"rc": proc.returncode, "stdout": stdout, "stderr": stderr, "out": out, "env": env,
            "train_job": train_job, "signalled_at_step": signalled_at_step, "base": base,
            "seconds": time.time() - t0}


def test_pipeline_ends_with_metrics(pipeline_run):
    r = pipeline_run
    assert r["rc"] == 0, f"{r['stdout']}\n{r['stderr']}\n" + "\n".join(
        p.read_text(errors="replace")[-3000:] for p in sorted((r["out"] / "logs").glob("*.out")))
    ids = dict(kv.split("=") for kv in r["stdout"].split())
    assert set(ids) == {"train", "infer", "eval"}
    metrics = json.loads((r["out"] / "eval" / "metrics.json").read_text())
    numbers = re.findall(r'"(?:precision|recall)[^"]*":\s*([0-9.]+)', json.dumps(metrics))
    assert numbers and all(0.0 <= float(x) <= 1.0 for x in numbers)
    preds = [json.loads(x) for x in (r["out"] / "preds.jsonl").read_text().splitlines() if x.strip()]
    assert len(preds) == 6 and all(p["config"] == "finetuned" for p in preds)
    for job in ids.values():
        assert _job_field(r["env"], job, "JobState") == "COMPLETED"


def test_preempted_training_requeued_and_resumed(pipeline_run):
    r = pipeline_run
    assert r["signalled_at_step"] is not None, "training never logged a step before the deadline"
    env, job, adapter = r["env"], r["train_job"], r["out"] / "adapter"
    assert int(_job_field(env, job, "Restarts") or 0) >= 1, "the training job was not requeued"
    log = (r["out"] / "logs" / f"train-{job}.out").read_text(errors="replace")
    assert "requeueing job" in log and "(restart 1)" in log
    assert re.search(r"resuming from \S*checkpoint-\d+", log)
    ckpts = [p for p in adapter.glob("checkpoint-*") if (p / "opclaim_complete.json").is_file()]
    assert ckpts, "no complete checkpoint was saved on the signal"
    saved_at = min(int(p.name.split("-")[1]) for p in ckpts)  # the signal's; the finished run may add its own
    assert 1 <= saved_at < MAX_STEPS
    run = json.loads((adapter / "opclaim_run.json").read_text())
    assert run["global_step"] == MAX_STEPS
    assert (adapter / "adapter_model.safetensors").stat().st_size > 0
    assert json.loads((adapter / "adapter_config.json").read_text())["r"] == 64


def test_model_card_written_with_metrics(pipeline_run):
    card = (pipeline_run["out"] / "adapter" / "README.md").read_text()
    assert "## Evaluation" in card and "95% CI" in card and "## Intended use" in card
    assert "cases" in card and "max_steps" in card


def test_no_phi_in_job_logs_metrics_or_checkpoints(pipeline_run):
    r = pipeline_run
    assert CANARY not in r["stdout"] + r["stderr"]
    assert_phi_contained(r["out"], expect_scanned=("logs/train-", "logs/infer-", "logs/eval-"))


def test_inputs_checked_before_anything_is_submitted(slurm_env, tiny_phi3_dir, tmp_path):
    before = _jobs(slurm_env)
    missing = tmp_path / "missing.jsonl"
    runs = [
        [str(ROOT / "slurm" / "pipeline.sh"), "--model", str(tiny_phi3_dir), "--train", str(missing),
         "--test", str(missing), "--out", str(tmp_path / "o")],
        ["bash", str(ROOT / "slurm" / "train.sbatch"), "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml",
         "--model_name_or_path", str(tiny_phi3_dir), "--train_file", str(missing), "--output_dir", "x"],
        ["bash", str(ROOT / "slurm" / "train.sbatch"), "train/recipes/nope.yaml"],
        ["bash", str(ROOT / "slurm" / "infer.sbatch"), "--model", str(tmp_path / "nomodel"),
         "--cases", str(missing), "--out", "p.jsonl"],
        ["bash", str(ROOT / "slurm" / "eval.sbatch"), "--predictions", str(missing), "--gold", str(missing),
         "--out", "e"],
    ]
    for cmd in runs:
        p = subprocess.run(cmd, env=slurm_env, capture_output=True, text=True, cwd=tmp_path)
        assert p.returncode == 2, (cmd, p.stderr)
        assert "not found" in p.stderr
    assert _jobs(slurm_env) == before


def test_failed_training_cancels_the_rest_of_the_pipeline(slurm_env, tiny_phi3_dir, tmp_path):
    """afterok + --kill-on-invalid-dep: a stage that fails cancels its dependants; --wait exits non-zero."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "x1", "note": "n", "claim": {"icd10": ["not a code"]}}) + "\n")
    r = subprocess.run([str(ROOT / "slurm" / "pipeline.sh"), "--model", str(tiny_phi3_dir), "--train", str(bad),
                        "--test", str(bad), "--out", str(tmp_path / "run"), "--wait"],
                       env=slurm_env, capture_output=True, text=True, timeout=600)
    assert r.returncode != 0
    assert "pipeline failed" in r.stderr
    ids = dict(kv.split("=") for kv in r.stdout.split())
    assert _job_field(slurm_env, ids["train"], "JobState") == "FAILED"
    assert _job_field(slurm_env, ids["infer"], "JobState") == "CANCELLED"
    assert _job_field(slurm_env, ids["eval"], "JobState") == "CANCELLED"
    log = (tmp_path / "run" / "logs" / f"train-{ids['train']}.out").read_text()
    assert "claim.icd10[0]" in log  # the bad field is named in the job log
    assert not (tmp_path / "run" / "eval" / "metrics.json").exists()


@pytest.mark.parametrize("spelling", ["--eval_file", "--eval-file"])
def test_train_sbatch_checks_the_validation_file_before_queueing(tmp_path, spelling):
    """Run with bash (not sbatch): the inputs are checked before anything is submitted, so a
    missing validation file fails in a second, not after waiting for nodes. No cluster needed."""
    from tests.conftest import make_cli_env

    train, model = tmp_path / "train.jsonl", tmp_path / "model"
    train.write_text("{}\n")
    model.mkdir()
    (model / "config.json").write_text("{}")  # the script checks the folder's shape only
    env = {k: v for k, v in make_cli_env().items() if not k.startswith("SLURM_")}
    args = ["bash", str(ROOT / "slurm" / "train.sbatch"), "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml",
            "--model_name_or_path", str(model), "--train_file", str(train),
            "--output_dir", str(tmp_path / "out")]
    r = subprocess.run([*args, spelling, str(tmp_path / "missing.jsonl")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    assert "validation data (--eval_file) not found" in r.stderr and "missing.jsonl" in r.stderr
    assert "submitting" not in r.stderr
    # with the validation file present the check passes and the next step (the environment) speaks
    val = tmp_path / "val.jsonl"
    val.write_text("{}\n")
    r = subprocess.run([*args, spelling, str(val)], env={**env, "OPCLAIM_VENV": str(tmp_path / "no-venv")},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "no Python environment" in r.stderr, r.stderr
