"""Offline and PHI guarantees: synth -> train -> infer -> eval with no network, and a canary.

Every step runs in its own network namespace (`unshare -n`) holding only a loopback interface
(the two ZeRO-3 ranks talk over it): nothing can reach another machine, so any step that tried
to download would fail. The notes carry a unique canary string; afterwards it may appear only in
the predictions, report.html and cases.csv (all mode 0600) -- never in logs, stderr,
metrics.json, TensorBoard events, checkpoint JSON or the model card.
"""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from opclaim.io import read_cases, write_cases
from tests.conftest import VENV_BIN

ROOT = Path(__file__).resolve().parent.parent
CANARY = "ZQXCANARY7731PHI"
# The only files allowed to carry note text (docs/design.md, PHI rules).
PHI_ALLOWED = {"report.html", "cases.csv", "preds.jsonl", "predictions.jsonl"}
RECIPE = "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml"
ACCEL = "ds_configs/zero3-cpu2.yaml"


# ---------------------------------------------------------------- shared with test_slurm.py
def write_canary_data(folder: Path, n_train: int, n_test: int, seed: int = 7) -> tuple[Path, Path]:
    """Synthetic cases with the canary planted in every note's first line (a patient name)."""
    from opclaim.synth import generate_cases

    cases = generate_cases(n_train + n_test, seed=seed, style="terse", length="short")
    for c in cases:
        first, _, rest = c.note.partition("\n")
        c.note = f"{first}\nPATIENT: {CANARY} Jr.\n{rest}"
    train, test = folder / "train.jsonl", folder / "test.jsonl"
    write_cases(train, cases[:n_train])
    write_cases(test, cases[n_train:])
    return train, test


def assert_phi_contained(root: Path, expect_scanned=()) -> dict:
    """Scan every file under `root`; the canary may only be in PHI_ALLOWED files, which are 0600."""
    hits, scanned = [], []
    for p in sorted(root.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        rel = p.relative_to(root).as_posix()
        scanned.append(rel)
        if CANARY.encode() in p.read_bytes():
            hits.append(rel)
    leaked = [h for h in hits if Path(h).name not in PHI_ALLOWED]
    assert not leaked, f"PHI canary leaked into {leaked}"
    assert any(Path(h).name in ("report.html", "cases.csv") for h in hits), \
        f"canary not found in report.html/cases.csv: the check itself is broken (hits {hits})"
    for p in root.rglob("*"):
        if p.is_file() and p.name in PHI_ALLOWED:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, f"{p} is not 0600"
    # The scan must have covered every kind of output the rule names.
    kinds = {"metrics.json": "metrics.json", "events.out.tfevents": "TensorBoard events",
             "README.md": "model card", "trainer_state.json": "checkpoint JSON"}
    for needle, what in kinds.items():
        assert any(needle in s for s in scanned), f"no {what} was scanned under {root}"
    for prefix in expect_scanned:
        assert any(s.startswith(prefix) for s in scanned), f"nothing matching {prefix} was scanned"
    return {"scanned": len(scanned), "hits": hits}


# ---------------------------------------------------------------- the offline run
def _offline(cmd, cwd, env, timeout=600):
    """Run `cmd` in a new network namespace with only loopback up."""
    wrapped = ["unshare", "-n", "bash", "-c", 'ip link set lo up && exec "$@"', "offline", *cmd]
    r = subprocess.run(wrapped, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return r


@pytest.fixture(scope="module")
def offline_run(tiny_phi3_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("offline")
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", "1")
    for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        env.pop(k, None)  # opclaim itself must make everything offline, not the test
    steps, outputs = {}, base / "out"
    outputs.mkdir()

    def step(name, cmd, cwd=base):
        r = _offline(cmd, cwd, env)
        steps[name] = r
        (outputs / "logs").mkdir(exist_ok=True)
        (outputs / "logs" / f"{name}.log").write_text(r.stdout + r.stderr)
        assert r.returncode == 0, f"{name} failed offline:\n{r.stderr[-4000:]}"
        return r

    probe = ("import socket\n"
             "for host in ('8.8.8.8', '1.1.1.1'):\n"
             "    try:\n"
             "        socket.create_connection((host, 443), timeout=3); print('REACHED', host)\n"
             "    except OSError as e:\n"
             "        print('blocked', host, e.errno)\n")
    step("probe", ["python", "-c", probe])
    step("links", ["ip", "-o", "link", "show"])
    step("synth", ["opclaim", "data", "synth", "--n", "30", "--seed", "5", "--style", "terse",
                   "--out", str(base / "synth.jsonl")])
    # Plant the canary in the synthetic notes, then split them offline too.
    cases = read_cases(base / "synth.jsonl")
    for c in cases:
        first, _, rest = c.note.partition("\n")
        c.note = f"{first}\nPATIENT: {CANARY} Jr.\n{rest}"
    write_cases(base / "canary.jsonl", cases)
    step("split", ["opclaim", "data", "split", str(base / "canary.jsonl"), "--out", str(base / "split")])
    adapter = outputs / "adapter"
    step("train", ["accelerate", "launch", "--config_file", ACCEL, "-m", "train", "--config", RECIPE,
                   "--model_name_or_path", str(tiny_phi3_dir), "--train_file", str(base / "split/train.jsonl"),
                   "--output_dir", str(adapter), "--max_steps", "6", "--save_steps", "3",
                   "--eval_steps", "3", "--logging_steps", "1"], cwd=ROOT)
    preds = outputs / "preds.jsonl"
    step("infer", ["opclaim", "infer", "--model", str(tiny_phi3_dir), "--adapter", str(adapter),
                   "--mode", "finetuned", "--cases", str(base / "split/test.jsonl"), "--out", str(preds),
                   "--max-new-tokens", "48"])
    step("eval", ["opclaim", "eval", "--predictions", str(preds), "--gold", str(base / "split/test.jsonl"),
                  "--out", str(outputs / "eval"), "--bootstrap", "50"])
    step("card", ["opclaim", "card", "--model", str(adapter), "--metrics", str(outputs / "eval/metrics.json")])
    return {"base": base, "out": outputs, "steps": steps, "adapter": adapter}


@pytest.mark.slow
@pytest.mark.distributed
def test_network_is_really_unreachable(offline_run):
    probe = offline_run["steps"]["probe"].stdout
    assert "REACHED" not in probe and probe.count("blocked") == 2
    links = offline_run["steps"]["links"].stdout.strip().splitlines()
    assert len(links) == 1 and ": lo:" in links[0]


@pytest.mark.slow
@pytest.mark.distributed
def test_pipeline_completes_offline(offline_run):
    out = offline_run["out"]
    run = json.loads((offline_run["adapter"] / "opclaim_run.json").read_text())
    assert run["global_step"] == 6
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    n_test = len(read_cases(offline_run["base"] / "split/test.jsonl"))
    (block,) = metrics["configs"].values()
    assert block["n_cases"] == n_test and block["n_missing_predictions"] == 0
    assert all(0.0 <= block[c]["f1"] <= 1.0 for c in ("icd10", "cpt", "modifier"))
    assert len((out / "preds.jsonl").read_text().splitlines()) == n_test
    assert (out / "eval" / "report.html").is_file() and (out / "eval" / "cases.csv").is_file()


@pytest.mark.slow
@pytest.mark.distributed
def test_phi_canary_only_in_allowed_files(offline_run):
    for name, r in offline_run["steps"].items():
        assert CANARY not in r.stdout and CANARY not in r.stderr, f"canary in the output of {name}"
    result = assert_phi_contained(offline_run["out"], expect_scanned=("logs/train", "logs/eval"))
    assert result["scanned"] > 10
    card = (offline_run["adapter"] / "README.md").read_text()
    assert "## Training data" in card and "95% CI" in card
