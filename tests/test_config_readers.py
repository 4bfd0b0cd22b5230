"""Files a user hands to opclaim - a bundle manifest, demo.yaml, a training recipe - go through
the hardened readers (opclaim/io.py): a duplicate key, deep nesting or a huge integer is exit 2
naming the file, never a traceback."""

import pytest

from opclaim import bundle
from opclaim.exits import call

JSON_BAD = {"duplicate key": '{"files": {}, "files": {}}',
            "deep nesting": '{"files": ' + "[" * 200 + "]" * 200 + "}",
            "huge integer": '{"files": {}, "n": 1' + "0" * 400 + "}"}
YAML_BAD = {"duplicate key": "out: a\nout: b\n",
            "deep nesting": "out: " + "[" * 200 + "]" * 200 + "\n",
            "huge integer": "out: a\nseed: 1" + "0" * 400 + "\n"}


def _exit_2_naming(capsys, rc: int, path) -> None:
    err = capsys.readouterr().err
    assert rc == 2, err
    assert str(path) in err and "Traceback" not in err


@pytest.mark.parametrize("kind", JSON_BAD)
def test_malformed_bundle_manifest(kind, tmp_path, capsys):
    _, pub = bundle.keygen(tmp_path / "keys")
    b = tmp_path / "bundle"
    b.mkdir()
    (b / bundle.MANIFEST).write_text(JSON_BAD[kind])
    (b / bundle.SIGNATURE).write_text("{}")
    _exit_2_naming(capsys, call("opclaim", bundle.verify, b, pub), b / bundle.MANIFEST)


@pytest.mark.parametrize("kind", YAML_BAD)
def test_malformed_demo_yaml(kind, tmp_path, capsys):
    from opclaim import demo

    cfg = tmp_path / "demo.yaml"
    cfg.write_text(YAML_BAD[kind])
    _exit_2_naming(capsys, call("demo", demo.main, ["--config", str(cfg)]), cfg)
    assert not (tmp_path / "a").exists()  # refused before anything was written


@pytest.mark.parametrize("kind", YAML_BAD)
def test_malformed_recipe(kind, tmp_path, capsys):
    from train.run import parse

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(YAML_BAD[kind].replace("out:", "output_dir:"))
    _exit_2_naming(capsys, call("train", parse, ["--config", str(recipe)]), recipe)
