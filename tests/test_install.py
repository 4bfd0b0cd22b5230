"""A non-editable `pip install .` runs the README's commands from another directory.

A fresh venv gets opclaim from a wheel built out of this checkout (`pip install --no-deps .`, not
editable). Its dependencies are the tested ones of the project venv, seen through a .pth file that
lists that venv's site-packages as a plain path: a plain path is added to sys.path but the .pth
files inside it are not run, so the editable opclaim finder installed there is never loaded (and
no dependency is downloaded or copied). Then, from an empty temporary directory, the README's CLI
commands run with the shipped recipe, and each run proves which opclaim it imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = "train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml"

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, timeout=600):
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{cmd}: exit {res.returncode}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv, env): a venv with opclaim installed from a wheel of this checkout."""
    base = tmp_path_factory.mktemp("install")
    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    deps = Path(sysconfig.get_paths()["purelib"])  # this (project) venv's packages, pip included
    (site / "opclaim_test_deps.pth").write_text(f"{deps}\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}", HF_HUB_OFFLINE="1",
               PYTHONDONTWRITEBYTECODE="1")
    # Build from a copy of the tracked files, so that the checkout's build/ and egg-info stay as they are.
    src = base / "src"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, check=True).stdout
    for rel in filter(None, files.decode().split("\0")):
        if (ROOT / rel).is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, src / rel)
    # --no-build-isolation: the build uses the setuptools already here (no index is needed);
    # --ignore-installed: pip must not treat the project venv's editable opclaim as this install.
    _run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--ignore-installed",
          "--no-index", str(src)], cwd=base, env=env)
    shutil.rmtree(src)
    return venv, env, site


def test_wheel_carries_the_shipped_files(installed):
    venv, env, site = installed
    assert not (site / "__editable___opclaim_0_1_0_finder.py").exists()
    data = site / "opclaim" / "_data"
    for rel in (RECIPE, "ds_configs/zero3-cpu2.yaml", "ds_configs/zero3-cpu.json", "demo.yaml"):
        assert (data / rel).read_bytes() == (ROOT / rel).read_bytes(), rel
    for pkg in ("opclaim", "train", "infer", "rag", "eval", "prompts"):
        assert (site / pkg / "__init__.py").is_file(), pkg
    assert (site / "prompts" / "templates" / "phi3.j2").is_file()
    assert (site / "eval" / "templates" / "report.html.j2").is_file()


def test_readme_commands_run_from_another_directory(installed, tmp_path):
    venv, env, site = installed
    work = tmp_path / "work"
    work.mkdir()
    exe = venv / "bin" / "opclaim"
    py = venv / "bin" / "python"

    # the installed package is the one imported, not the checkout
    where = _run([py, "-c", "import opclaim, train, infer, eval, rag, prompts, json; print(json.dumps("
                  "[m.__file__ for m in (opclaim, train, infer, eval, rag, prompts)]))"], work, env)
    for f in json.loads(where.stdout):
        assert Path(f).is_relative_to(site), f

    assert "opclaim" in _run([exe, "--help"], work, env).stdout
    assert "tiny-phi3" in _run([exe, "models", "list"], work, env).stdout
    _run([exe, "models", "tiny-phi3", "--out", "models/tiny"], work, env)
    _run([exe, "data", "synth", "--n", "30", "--seed", "0", "--style", "terse", "--out", "cases.jsonl"], work, env)
    _run([exe, "data", "split", "cases.jsonl", "--out", "split"], work, env)
    assert not (work / "train").exists()  # the recipe below is the shipped copy
    listed = _run([exe, "recipes", "list"], work, env).stdout
    assert f"{RECIPE}\t{site / 'opclaim' / '_data' / RECIPE}" in listed
    _run([exe, "train", "--config", RECIPE, "--model-name-or-path", "models/tiny",
          "--train-file", "split/train.jsonl", "--output-dir", "runs/tiny", "--max-steps", "2",
          "--eval-strategy", "no", "--save-steps", "2", "--report-to", "none"], work, env, timeout=900)
    run = json.loads((work / "runs" / "tiny" / "opclaim_run.json").read_text())
    assert run["global_step"] == 2
    assert run["config"]["training"]["max_steps"] == 2

    # `opclaim recipes copy` makes `accelerate launch --config_file ds_configs/...` paths real here
    _run([exe, "recipes", "copy", "--out", "."], work, env)
    assert (work / "ds_configs" / "zero3-cpu2.yaml").read_bytes() == (ROOT / "ds_configs" / "zero3-cpu2.yaml").read_bytes()
    assert (work / RECIPE).is_file() and (work / "demo.yaml").is_file()
    (work / RECIPE).write_text("# edited\n")
    r = subprocess.run([exe, "recipes", "copy", "--out", "."], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "--force" in r.stderr  # an edited copy is not overwritten silently
