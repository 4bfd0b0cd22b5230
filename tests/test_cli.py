"""The CLI contract: every verb has --help with an example; exit codes 0 / 2 / 1."""

import argparse
import subprocess
import sys

import pytest

from opclaim.cli import build_parser
from tests.conftest import opclaim_exe


def _leaf_verbs(parser, prefix=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                has_children = any(isinstance(a, argparse._SubParsersAction) for a in sub._actions)
                if has_children:
                    yield from _leaf_verbs(sub, prefix + (name,))
                else:
                    yield prefix + (name,), sub


def test_every_verb_has_help_with_examples():
    verbs = list(_leaf_verbs(build_parser()))
    assert len(verbs) >= 3
    for path, sub in verbs:
        text = sub.format_help()
        assert "examples:" in text and "opclaim" in text.split("examples:", 1)[1], path


def test_help_is_fast_and_imports_no_torch():
    code = "import sys; from opclaim.cli import build_parser; build_parser(); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "False", r.stderr


@pytest.mark.parametrize("argv,code", [([], 2), (["no-such-verb"], 2), (["models", "pull"], 2),
                                       (["--version"], 0), (["models", "list"], 0)])
def test_exit_codes(argv, code, cli_env):
    r = subprocess.run([opclaim_exe(), *argv], capture_output=True, text=True, env=cli_env)
    assert r.returncode == code, r.stderr


def test_internal_failure_exits_1(cli_env, tmp_path):
    # A tiny-phi3 build into a path that is a file: an OS error, not bad user input.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = subprocess.run([opclaim_exe(), "models", "tiny-phi3", "--out", str(blocker / "sub")],
                       capture_output=True, text=True, env=cli_env)
    assert r.returncode == 1 and "internal error" in r.stderr
