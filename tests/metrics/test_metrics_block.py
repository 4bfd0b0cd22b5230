"""eval.metrics, the parts of its contract the mutation run (docs/records/mutation.md) found unprotected:
the exact keys and values of the metrics block, the reader's error fields, reference lists and
their descriptions, top-code tables, bootstrap settings and run labels. Each test states the
value the design fixes, computed here independently, not read back from the module."""

import numpy as np
import pytest

from eval import bootstrap, metrics, textmetrics
from opclaim.claim import Case, Claim, render_target
from opclaim.codes import icd10_description
from opclaim.errors import InputError
from opclaim.synth import catalog


def case(cid, icd, cpts, service="General Surgery", desc=None):
    claim = Claim.from_dict({"icd10": icd, "providers": [
        {"name": "Dr. A", "lines": [{"cpt": c, "modifiers": [], "description": desc or f"proc {c}"} for c in cpts]}]
        if cpts else []})
    return Case(cid, "op note", claim, "2021-01-01", service)


def text(icd, cpts):
    return render_target(case("x", icd, cpts).claim)


def write(tmp_path, *lines):
    p = tmp_path / "p.jsonl"
    p.write_text("".join(line + "\n" for line in lines))
    return p


# ---------------------------------------------------------------- read_predictions
@pytest.mark.parametrize("line,field,message", [
    ('{"id": " ", "output": ""}', "id", "missing or not a string"),
    ('{"id": 1.5, "output": ""}', "id", "missing or not a string"),
    ('{"id": "a"}', "output", "missing"),
    ('{"id": "a", "output": 3}', "output", "must be a string"),
    ('{"id": "a", "output": "", "latency_s": -0.5}', "latency_s", "must be a non-negative number"),
    ('{"id": "a", "output": "", "config": 5}', "config", "must be a non-empty string"),
    ('{"id": "a", "output": "", "config": " "}', "config", "must be a non-empty string"),
    ('{"id": "zz", "output": ""}', "id", "prediction id is not in the gold file"),
])
def test_bad_prediction_rows_name_file_line_field_and_reason(tmp_path, line, field, message):
    p = write(tmp_path, '{"id": "b", "output": ""}', line)
    with pytest.raises(InputError) as e:
        metrics.read_predictions(p, {"a", "b"})
    assert (e.value.file, e.value.line, e.value.field, e.value.reason) == (p, 2, field, message)


def test_duplicate_names_the_first_line_and_empty_file_names_the_file(tmp_path):
    p = write(tmp_path, '{"id": "a", "output": ""}', '{"id": "b", "output": ""}', '{"id": "a", "output": "x"}')
    with pytest.raises(InputError, match=r"duplicate id \(first on line 1\)"):
        metrics.read_predictions(p, {"a", "b"})
    empty = write(tmp_path)
    with pytest.raises(InputError) as e:
        metrics.read_predictions(empty, {"a"})
    assert (e.value.file, e.value.reason) == (empty, "no predictions")


def test_prediction_records_keep_every_field(tmp_path):
    p = write(tmp_path, '{"id": "a", "output": "A", "config": "ft", "latency_s": 0}',
              '{"id": 7, "output": "B", "latency_s": 2}')
    got = metrics.read_predictions(p, {"a", "7"})
    assert got == {"ft": {"a": metrics.Prediction("a", "A", "ft", 0.0, 1)},
                   "model": {"7": metrics.Prediction("7", "B", "model", 2.0, 2)}}
    assert isinstance(got["model"]["7"].latency_s, float)  # 0 is a valid latency, ints become floats


# ---------------------------------------------------------------- references
def test_references_without_a_cpt_list_are_catalog_plus_gold_with_descriptions():
    gold = [case("a", ["K80.20"], ["99999"], desc="gold-only procedure")]
    refs = metrics.load_references(gold)
    some = sorted(catalog.all_cpt_codes())[0]
    assert refs.cpt == frozenset(catalog.all_cpt_codes()) | {"99999"}
    assert refs.cpt_name == "synthetic catalog (opclaim.synth.catalog.all_cpt_codes()) plus CPT codes in the gold file"
    assert refs.cpt_descriptions[some] == catalog.BY_CPT[some].desc != ""
    assert refs.cpt_descriptions["99999"] == "gold-only procedure"
    assert refs.describe() == {"icd10": {"source": refs.icd10_name, "n_codes": len(refs.icd10)},
                               "cpt": {"source": refs.cpt_name, "n_codes": len(refs.cpt)}}


def test_describe_codes():
    refs = metrics.References(frozenset(), "", frozenset({"47562"}), "", {"47562": "Lap chole"})
    assert metrics.describe("icd10", "K80.20", refs) == icd10_description("K80.20") != ""
    assert metrics.describe("icd10", "K80.2Z", refs) == ""
    assert metrics.describe("cpt", "47562", refs) == "Lap chole"
    assert metrics.describe("cpt", "00000", refs) == ""


# ---------------------------------------------------------------- per case
def test_case_score_fields():
    c = case("a", ["K80.20"], ["47562"], service=None)
    s = metrics.score_case(c, None)
    assert (s.id, s.service, s.missing, s.latency_s) == ("a", "unknown", True, None)
    assert s.extraction.icd10 == [] and s.worst_key() == 2.0  # only the empty modifier sets match (1, 1)
    hit = metrics.score_case(c, metrics.Prediction("a", text(["K80.20"], ["47562"]), "ft", 1.5))
    assert (hit.missing, hit.latency_s, hit.extraction.cpt) == (False, 1.5, ["47562"])
    assert hit.worst_key() == 6.0  # p + r over three components, all perfect (no modifiers: 1, 1)
    half = metrics.score_case(c, metrics.Prediction("a", text(["K80.20", "R10.11"], []), "ft"))
    assert half.worst_key() == pytest.approx(0.5 + 1.0 + 0 + 0 + 1 + 1)
    assert metrics.score_case(case("b", [], [], service="Urology"), None).service == "Urology"


def test_output_text_and_f1_edges():
    assert metrics.output_text(None) == ""
    assert metrics.output_text(metrics.Prediction("a", "<|placeholder2|>X", "ft")) == "X"
    assert metrics._f1(0.0, 0.0) == 0.0


# ---------------------------------------------------------------- aggregation
def _scores():
    golds = [case("a", ["K80.20"], ["47562"]), case("b", ["K35.80"], ["44970"], service="Urology")]
    preds = [metrics.Prediction("a", text(["K80.20", "K80.2Z"], ["47562", "00001"]), "ft", 1.0),
             metrics.Prediction("b", text(["K80.20"], ["00001"]), "ft", 3.0)]
    return golds, [metrics.score_case(g, p) for g, p in zip(golds, preds, strict=True)]


def test_validity_counts_codes_in_and_out_of_the_list():
    _, scores = _scores()
    got = metrics._validity(scores, "cpt", frozenset({"47562", "44970"}))
    assert got == {"valid": 1 / 3, "fabricated": 2 / 3, "n_generated": 3}  # 47562; 00001 twice
    none = metrics._validity([metrics.score_case(case("a", [], []), None)], "cpt", frozenset())
    assert none == {"valid": None, "fabricated": None, "n_generated": 0}


def test_latency_summary_values():
    empty = metrics.latency_summary([metrics.score_case(case("a", [], []), None)], 2.0)
    assert empty == {"n": 0, "mean_s": None, "median_s": None, "p95_s": None, "cost_per_1000_cases": None,
                     "gpu_hour_cost": 2.0}
    c = case("a", [], [])
    scores = [metrics.score_case(c, metrics.Prediction("a", "", "ft", float(x))) for x in range(21)]
    got = metrics.latency_summary(scores, 3.6)
    assert got == {"n": 21, "mean_s": 10.0, "median_s": 10.0, "p95_s": 19.0, "gpu_hour_cost": 3.6,
                   "cost_per_1000_cases": pytest.approx(10.0 * 1000 / 3600 * 3.6)}


def test_top_codes_counts_order_and_descriptions():
    _, scores = _scores()
    refs = metrics.References(frozenset({"K80.20", "K35.80"}), "", frozenset({"47562", "44970"}), "",
                              {"44970": "Lap appendectomy"})
    got = metrics.top_codes(scores, refs)
    assert got["most_missed"] == [
        {"system": "cpt", "code": "44970", "count": 1, "description": "Lap appendectomy"},
        {"system": "icd10", "code": "K35.80", "count": 1, "description": icd10_description("K35.80")}]
    assert got["most_fabricated"] == [
        {"system": "cpt", "code": "00001", "count": 2, "description": ""},
        {"system": "icd10", "code": "K80.2Z", "count": 1, "description": ""}]
    assert metrics.top_codes(scores, refs, k=1)["most_fabricated"][0]["code"] == "00001"


def test_summarize_block_keys_bootstrap_and_services():
    golds, scores = _scores()
    refs = metrics.load_references(golds)
    ts = textmetrics.score_loop([metrics.gold_text(g) for g in golds], [text(["K80.20"], ["47562"])] * 2)
    block, boot = metrics.summarize(scores, ts, refs, n_boot=40)
    assert (block["n_cases"], block["n_missing_predictions"], block["missing_prediction_ids"]) == (2, 0, [])
    arrays = {f"{c}.{k}": np.array([getattr(s, k)[c] for s in scores]) for c in metrics.COMPONENTS for k in "pr"}
    want = bootstrap.resampled_means(arrays, 40, 0)  # seed 0 is the default
    assert block["icd10"]["precision_ci"] == bootstrap.interval(want["icd10.p"])
    assert block["cpt"]["recall_ci"] == bootstrap.interval(want["cpt.r"])
    assert set(boot) == set(arrays) and all(np.array_equal(boot[k], want[k]) for k in want)
    assert block["structure"] == textmetrics.means(ts) and block["structure"]["rougeL"] is not None
    assert block["by_service"]["Urology"]["n_cases"] == 1
    assert block["by_service"]["Urology"]["cpt"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    one, _ = metrics.summarize(scores, ts, refs, n_boot=1)
    assert one["icd10"]["precision_ci"] is not None  # one resample still gives an interval
    off, boot_off = metrics.summarize(scores, ts, refs, n_boot=0)
    assert off["icd10"]["precision_ci"] is None and off["cpt"]["recall_ci"] is None and boot_off == {}


def test_evaluate_labels_runs_and_text_metrics(tmp_path):
    golds, _ = _scores()
    perfect = {g.id: metrics.Prediction(g.id, render_target(g.claim), "perfect") for g in golds}
    empty = {g.id: metrics.Prediction(g.id, "", "empty") for g in golds}
    refs = metrics.load_references(golds)
    runs = metrics.evaluate({"test": golds}, [("test", "perfect", perfect), ("test", "empty", empty)], refs,
                            n_boot=20, workers=1)
    assert [r.label for r in runs] == ["perfect", "empty"]  # one gold set: plain config names
    good, bad = runs
    assert (good.config, good.gold, good.cases, good.block["config"], good.block["gold"]) == (
        "perfect", "test", golds, "perfect", "test")
    assert len(good.scores) == len(good.text_scores) == 2 and set(good.boot) >= {"icd10.p", "cpt.r"}
    assert good.block["structure"]["rougeL"] == pytest.approx(1.0)  # each run gets its own text scores
    assert bad.block["structure"]["rougeL"] == pytest.approx(0.0)
    again = metrics.evaluate({"test": golds}, [("test", "perfect", perfect)], refs, n_boot=20, workers=1)
    assert again[0].block["icd10"]["precision_ci"] == good.block["icd10"]["precision_ci"]  # seeded
    two = metrics.evaluate({"test": golds, "golden": golds[:1]}, [("test", "perfect", perfect)], refs,
                           n_boot=0, workers=1)
    assert [r.label for r in two] == ["test/perfect"]  # several gold sets: labels name the set


def test_evaluate_defaults_are_the_designs_1000_resamples_seed_0():
    golds, _ = _scores()
    preds = {g.id: metrics.Prediction(g.id, render_target(g.claim), "ft") for g in golds[:1]}
    refs = metrics.load_references(golds)
    (run,) = metrics.evaluate({"t": golds[:1]}, [("t", "ft", preds)], refs, workers=1)
    assert {k: len(v) for k, v in run.boot.items()} == {k: 1000 for k in run.boot}
    (explicit,) = metrics.evaluate({"t": golds[:1]}, [("t", "ft", preds)], refs, n_boot=1000, seed=0, workers=1)
    assert all(np.array_equal(run.boot[k], explicit.boot[k]) for k in run.boot)


def test_top_codes_add_up_across_cases_sort_by_count_and_keep_15():
    golds = [case(f"c{i}", ["K80.20"], ["47562"]) for i in range(3)]
    outs = [text(["K80.2Z"], ["47562", "00001"]), text(["K80.2Z"], []), text([], [])]
    scores = [metrics.score_case(g, metrics.Prediction(g.id, o, "ft")) for g, o in zip(golds, outs, strict=True)]
    refs = metrics.References(frozenset({"K80.20"}), "", frozenset({"47562"}), "", {})
    got = metrics.top_codes(scores, refs)
    # icd K80.20 missed 3 times, cpt 47562 twice; K80.2Z fabricated twice, 00001 once: the higher
    # count first even where the system/code order would put it second.
    assert [(r["system"], r["code"], r["count"]) for r in got["most_missed"]] == [
        ("icd10", "K80.20", 3), ("cpt", "47562", 2)]
    assert [(r["system"], r["code"], r["count"]) for r in got["most_fabricated"]] == [
        ("icd10", "K80.2Z", 2), ("cpt", "00001", 1)]
    many = [metrics.score_case(case("m", [], []), metrics.Prediction("m", text([], [f"{i:05d}" for i in range(20)]),
                                                                      "ft"))]
    assert len(metrics.top_codes(many, refs)["most_fabricated"]) == 15  # the default table length


def _mixed():
    golds = [case("a", ["K80.20"], ["47562"]), case("b", ["K35.80"], ["44970"]), case("c", ["R10.11"], [])]
    outs = {"a": text(["K80.20"], ["47562"]), "b": text(["K80.20"], []), "c": text(["R10.11", "K80.20"], [])}
    return golds, {g.id: metrics.Prediction(g.id, outs[g.id], "ft") for g in golds}


def test_summarize_default_1000_resamples_and_its_seed_is_used():
    golds, preds = _mixed()
    scores = [metrics.score_case(g, preds[g.id]) for g in golds]
    refs = metrics.load_references(golds)
    ts = [(0.5, 0.5, 0.5)] * len(scores)
    _, boot = metrics.summarize(scores, ts, refs)
    assert {len(v) for v in boot.values()} == {1000}
    arrays = {f"{c}.{k}": np.array([getattr(s, k)[c] for s in scores]) for c in metrics.COMPONENTS for k in "pr"}
    _, boot3 = metrics.summarize(scores, ts, refs, n_boot=50, seed=3)
    want = bootstrap.resampled_means(arrays, 50, 3)
    assert all(np.array_equal(boot3[k], want[k]) for k in want)
    assert not np.array_equal(want["icd10.p"], bootstrap.resampled_means(arrays, 50, 0)["icd10.p"])


def test_evaluate_passes_its_seed_default_0_to_every_run():
    golds, preds = _mixed()
    refs = metrics.load_references(golds)
    arrays_run = metrics.evaluate({"t": golds}, [("t", "ft", preds)], refs, n_boot=50, workers=1)[0]
    assert np.array_equal(arrays_run.boot["icd10.p"], metrics.evaluate(
        {"t": golds}, [("t", "ft", preds)], refs, n_boot=50, seed=0, workers=1)[0].boot["icd10.p"])
    seeded = metrics.evaluate({"t": golds}, [("t", "ft", preds)], refs, n_boot=50, seed=5, workers=1)[0]
    arrays = {f"{c}.{k}": np.array([getattr(s, k)[c] for s in seeded.scores]) for c in metrics.COMPONENTS
              for k in "pr"}
    assert np.array_equal(seeded.boot["icd10.p"], bootstrap.resampled_means(arrays, 50, 5)["icd10.p"])
    assert not np.array_equal(seeded.boot["icd10.p"], arrays_run.boot["icd10.p"])
