"""The README's demo table is the demo's own table.md spliced between markers, never hand-copied."""

import pytest

from opclaim.demo import TABLE_END, TABLE_START, Demo, splice_table
from opclaim.errors import InputError

CFG = {"data": {"cross_style": "dictation", "test_eval": 16, "cross_eval": 16, "val_eval": 8}}


def _table(tmp_path, skipped=True):
    demo = Demo({**CFG, "out": str(tmp_path / "demo")}, config_name="demo.yaml")
    demo.timings = [("fine-tune", 400.0, False), ("pull", 0.0 if skipped else 5.0, skipped)]
    demo.planned = {"train": ("fine-tune", 300.0, "changed"), "model": ("pull", 5.0, None if skipped else "new")}
    return demo.write_table("set  config  CPT F1\ntest knn     89.0", 612.0)


def test_table_md_says_when_from_what_and_how(tmp_path):
    text = _table(tmp_path).read_text()
    assert text.startswith("Measured 20") and "(commit " in text
    assert ("`python -m opclaim.demo --config demo.yaml`: 10.2 min for 1 of 2 stages (not a full run: "
            "the others were up to date)") in text
    assert "a full run" not in text
    assert "test and dictation 16 and 16 cases, val 8" in text
    assert "```\nset  config  CPT F1\ntest knn     89.0\n```" in text


def test_table_md_names_a_full_run_only_when_every_stage_ran(tmp_path):
    text = _table(tmp_path, skipped=False).read_text()
    assert "`python -m opclaim.demo --config demo.yaml`: a full run, all 2 stages, 10.2 min wall" in text


def test_splice_replaces_only_the_block(tmp_path):
    table = _table(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"# top\n{TABLE_START}\nold hand-copied table\n{TABLE_END}\ntail\n")
    splice_table(readme, table)
    text = readme.read_text()
    assert "old hand-copied" not in text and "test knn     89.0" in text
    assert text.startswith(f"# top\n{TABLE_START}\nMeasured ") and text.endswith(f"```\n{TABLE_END}\ntail\n")
    splice_table(readme, table)  # idempotent
    assert readme.read_text() == text


def test_splice_refuses_a_readme_without_markers_or_a_missing_table(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    with pytest.raises(InputError, match="demo-table"):
        splice_table(readme, _table(tmp_path))
    readme.write_text(f"{TABLE_START}\n{TABLE_END}\n")
    with pytest.raises(InputError, match="run the demo first"):
        splice_table(readme, tmp_path / "absent.md")
