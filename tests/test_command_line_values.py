"""Values the user typed (a model name, a flag value, a LABEL=FILE argument) are echoed in error
messages (InputError(from_command_line=True)); the redaction net still hides values read from
files (opclaim/errors.py, docs/limits.md)."""

from opclaim.errors import InputError
from opclaim.exits import call


def test_unknown_model_name_is_shown_as_typed(tmp_path, capsys):
    from opclaim.cli import main

    assert main(["models", "pull", "my-own-llama", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'my-own-llama'" in err and "<text of" not in err


def test_memory_estimate_and_eval_labels_show_what_was_typed(capsys):
    from eval.cli import _split_label
    from train.memory import resolve_shape

    assert call("opclaim", resolve_shape, "no-such-model-x") == 2
    assert "'no-such-model-x'" in capsys.readouterr().err
    assert call("opclaim", _split_label, "=nolabel.jsonl") == 2
    assert "got '=nolabel.jsonl'" in capsys.readouterr().err


def test_values_from_files_are_still_redacted():
    e = InputError("unexpected value 'Jane Roe, 52 y/o'", file="cases.jsonl", line=3, field="note")
    assert "Jane" not in str(e) and "<text of 16 characters>" in str(e)
