"""The README's demo table is the demo's own table.md spliced between markers, never hand-copied."""

import pytest

from pathlib import Path

from opclaim.demo import TABLE_END, TABLE_START, Demo, splice_table
from opclaim.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
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
    assert "a full run," not in text
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


def _plan_cfg(tmp_path, **configs):
    import yaml

    cfg = yaml.safe_load(open(ROOT / "demo.yaml"))
    cfg["out"] = str(tmp_path / "demo")
    cfg["golden"]["files"] = [str(ROOT / f) for f in cfg["golden"]["files"]]
    if configs:
        cfg["configs"] = configs
    return cfg


def test_plan_lists_every_stage_with_an_estimate_and_runs_nothing(tmp_path, capsys):
    demo = Demo(_plan_cfg(tmp_path), config_name="demo.yaml")
    demo.plan()
    out = capsys.readouterr().out
    assert not (tmp_path / "demo" / "data").exists() and not (tmp_path / "demo" / "stages").exists()
    names = [v[0] for v in demo.planned.values()]
    assert names[:5] == ["synthesize + split", "golden test set", "pull smollm2-135m", "RAG index (MiniLM + FAISS)",
                         "fine-tune (LoRA/QLoRA, CPU recipe)"]
    assert "infer finetuned+constrained on golden" in names and names[-2:] == ["evaluate + report", "model card"]
    assert all(why == "no record of a previous run" for _, _, why in demo.planned.values())  # a fresh folder
    assert f"[demo] plan: {len(names)} stages, {len(names)} to run, about " in out
    # the fine-tune's estimate comes from the recipe: 600 cached steps cost more than nothing, less than every layer
    est = demo.planned["train"][1]
    assert 600 * 0.5 < est < 600 * 3.2
    # a stage finished: the ETA counts what is left, rescaled by how the run compares with the estimates
    demo.timings, demo.ran = [("synthesize + split", 30.0, False)], ["data"]
    left = sum(e for k, (_, e, _) in demo.planned.items() if k != "data")
    scale = min(3.0, 30.0 / demo.planned["data"][1])
    assert demo.eta("data", 30.0) == f"; ETA ~{left * scale / 60:.1f} min left"


def test_sets_key_scores_a_configuration_only_where_asked(tmp_path):
    cfg = _plan_cfg(tmp_path, base={"weights": "base", "mode": "base", "cases": 4, "sets": ["test"]},
                    rag={"weights": "base", "mode": "rag", "cases": 4})
    cfg["golden"]["configs"] = ["rag"]
    cfg.pop("routing")
    demo = Demo(cfg, config_name="demo.yaml")
    demo.plan()
    runs = [k for k in demo.planned if k.startswith("infer/")]
    assert runs == ["infer/test-4/base", "infer/test-4/rag", "infer/dictation-4/rag", "infer/golden-4/rag"]


@pytest.mark.parametrize("sets", ["test", [1], None])
def test_sets_key_must_be_a_list_of_names(tmp_path, sets):
    demo = Demo(_plan_cfg(tmp_path, base={"weights": "base", "mode": "base", "sets": sets}), config_name="x")
    if sets is None:  # an explicit null is not "every set"
        demo.cfg["configs"]["base"]["sets"] = None
    with pytest.raises(InputError, match="list of set names") as e:
        demo.configs()
    assert e.value.field == "configs.base.sets"
