"""Shared fixtures. Real parts only: the tiny Phi-3 is a real Phi3ForCausalLM and tokenizer."""

import os
import shutil
import socket
import sys
from pathlib import Path

import pytest

import opclaim  # noqa: F401  (offline environment before any HF import)

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


def _hypothesis_profiles() -> None:
    """CI (CI=true, as GitHub Actions and most runners set it): derandomized, no example database,
    so a red CI run is reproducible and a green one is not luck. Locally: hypothesis' defaults."""
    try:
        from hypothesis import settings
    except ImportError:
        return
    settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
    if os.environ.get("CI", "").lower() in ("true", "1"):
        settings.load_profile("ci")


_hypothesis_profiles()


def free_port() -> int:
    """A TCP port nobody listens on right now (the OS picks it), for rendezvous and daemons:
    fixed ports collide when two test runs share a host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture(scope="session", autouse=True)
def _slurm_state_in_tmp(tmp_path_factory):
    """The test SLURM cluster (tests/slurm_cluster.sh) keeps its state, sockets and logs under this
    run's tmp dir and listens on free ports, unless OPCLAIM_SLURM_DIR says where a running one is."""
    if os.environ.get("OPCLAIM_SLURM_DIR"):
        yield
        return
    names = ("OPCLAIM_SLURM_DIR", "OPCLAIM_SLURMCTLD_PORT", "OPCLAIM_SLURMD_PORT")
    os.environ.update(zip(names, (str(tmp_path_factory.mktemp("slurm")), str(free_port()), str(free_port())),
                          strict=True))
    yield
    for n in names:
        os.environ.pop(n, None)


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


@pytest.fixture(scope="session")
def keys(tmp_path_factory):
    """(private, public) signing key pair from `opclaim bundle keygen`, shared by the bundle and
    serve tests (read-only: no test changes a key file)."""
    from opclaim import bundle

    return bundle.keygen(tmp_path_factory.mktemp("keys"))
