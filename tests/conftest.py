"""Shared fixtures. Real parts only: the tiny Phi-3 is a real Phi3ForCausalLM and tokenizer."""

import os
import shutil
import sys
from pathlib import Path

import pytest

import opclaim  # noqa: F401  (offline environment before any HF import)

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except Exception:  # noqa: BLE001
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs a CUDA GPU")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_phi3_dir(tmp_path_factory) -> Path:
    """A random tiny Phi-3 folder (model + tokenizer), built once per session."""
    from opclaim.registry import build_tiny_phi3

    return build_tiny_phi3(tmp_path_factory.mktemp("tiny-phi3") / "model", seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_phi3_dir):
    from opclaim.registry import load_tokenizer

    return load_tokenizer(tiny_phi3_dir)


def make_cli_env() -> dict:
    """Environment for subprocess calls of `opclaim` / `accelerate launch` in tests."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


@pytest.fixture
def cli_env():
    return make_cli_env()


def opclaim_exe() -> str:
    return shutil.which("opclaim", path=str(VENV_BIN)) or "opclaim"
