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


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_internal_failure_exits_1(cli_env, tmp_path):
    # A tiny-phi3 build into a path that is a file: an OS error, not bad user input.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = subprocess.run([opclaim_exe(), "models", "tiny-phi3", "--out", str(blocker / "sub")],
                       capture_output=True, text=True, env=cli_env)
    assert r.returncode == 1 and "internal error" in r.stderr


def test_train_verb_help_names_the_recipe_and_both_spellings(cli_env):
    r = subprocess.run([opclaim_exe(), "train", "--help"], capture_output=True, text=True, env=cli_env)
    assert r.returncode == 0, r.stderr
    assert "--config RECIPE" in r.stdout and "--key-name value (or --key_name value)" in r.stdout


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_train_verb_refuses_a_missing_recipe_with_exit_2(cli_env, tmp_path):
    r = subprocess.run([opclaim_exe(), "train", "--config", str(tmp_path / "none.yaml"), "--max-steps", "1"],
                       capture_output=True, text=True, env=cli_env)
    assert r.returncode == 2 and "recipe not found" in r.stderr, r.stderr
    r = subprocess.run([opclaim_exe(), "infer", "--model", "m", "--mode", "base", "--cases", "c", "--out", "o",
                        "--no-such-flag"], capture_output=True, text=True, env=cli_env)
    assert r.returncode == 2 and "unrecognized arguments" in r.stderr  # passthrough is for train only


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
@pytest.mark.parametrize("module", ["train", "infer"])
def test_module_entry_points_share_the_handler(module, cli_env, tmp_path):
    """`python -m train` / `python -m infer` (what every accelerate rank runs): bad input exits 2
    with the file named, as `opclaim` does."""
    args = (["--config", str(tmp_path / "none.yaml")] if module == "train" else
            ["--model", str(tmp_path), "--mode", "base", "--cases", str(tmp_path / "none.jsonl"),
             "--out", str(tmp_path / "p.jsonl")])
    r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=cli_env)
    assert r.returncode == 2 and f"{module}: error:" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_internal_error_withholds_message_and_traceback_unless_debug(capsys, monkeypatch):
    from opclaim.exits import call, take_debug_flag

    def boom():
        raise ValueError("Pt John Smith CANARY-1234")

    monkeypatch.delenv("OPCLAIM_DEBUG", raising=False)
    assert call("x", boom) == 1
    err = capsys.readouterr().err
    assert "internal error: ValueError at tests/test_cli.py:" in err
    assert "CANARY" not in err and "Traceback" not in err and "--debug" in err
    assert call("x", boom, debug=True) == 1
    assert "Traceback" in capsys.readouterr().err
    assert take_debug_flag(["infer", "--debug", "--k", "2"]) == (["infer", "--k", "2"], True)
    monkeypatch.setenv("OPCLAIM_DEBUG", "1")
    assert take_debug_flag(["infer"]) == (["infer"], True)


def test_a_verb_module_that_fails_to_import_is_an_error(monkeypatch, capsys):
    from opclaim import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "opclaim.commands.no_such_verbs"])
    assert cli.main(["models", "list"]) == 1
    err = capsys.readouterr().err
    assert "verb module opclaim.commands.no_such_verbs failed to import" in err and "broken" in err
