"""eval.metrics / bootstrap / textmetrics against independent computations of docs/design.md's
definitions, and every input edge case (empty sets, missing predictions, duplicates, malformed
lines, non-UTF-8, unknown ids)."""

import json
import subprocess
import sys

import numpy as np
import pytest

from eval import bootstrap, metrics, textmetrics
from opclaim.claim import Case, Claim, render_target, strip_special_tokens
from opclaim.errors import InputError
from opclaim.io import write_cases


def case(cid, icd, lines, service="General Surgery", note="op note"):
    """lines: [(cpt, [mods])] for one surgeon."""
    claim = Claim.from_dict({"icd10": icd, "providers": [
        {"name": "Dr. A", "lines": [{"cpt": c, "modifiers": m, "description": f"proc {c}"} for c, m in lines]}]
        if lines else []})
    return Case(cid, note, claim, "2021-01-01", service)


def out(icd, lines):
    return render_target(Claim.from_dict({"icd10": icd, "providers": [
        {"name": "Dr. A", "lines": [{"cpt": c, "modifiers": m, "description": "x"} for c, m in lines]}]
        if lines else []}))


def pred(cid, text, cfg="ft", lat=None):
    return metrics.Prediction(cid, text, cfg, lat)


@pytest.mark.parametrize("m,p,want", [
    (set(), set(), (1.0, 1.0)),               # both empty
    (set(), {"A"}, (0.0, 0.0)),               # empty model, non-empty gold
    ({"A"}, set(), (0.0, 0.0)),               # non-empty model, empty gold
    ({"A", "B"}, {"A"}, (0.5, 1.0)),
    ({"A"}, {"A", "B", "C"}, (1.0, 1 / 3)),
    ({"A", "B"}, {"C"}, (0.0, 0.0)),
])
def test_precision_recall_conventions(m, p, want):
    assert metrics.precision_recall(m, p) == pytest.approx(want)


# Gold and outputs chosen so that F1-of-means differs from mean-of-F1, modifiers sit on the
# wrong code once, one code is fabricated, one case has no prediction and one is unextractable.
GOLD = [
    case("a", ["K80.20", "R10.11"], [("47562", []), ("49585", ["51"])]),
    case("b", ["K42.9"], [("49585", [])]),
    case("c", ["M17.11"], [("27447", ["RT"])], service="Orthopedics"),
    case("d", ["H25.11"], [("66984", ["RT"])], service="Ophthalmology"),
    case("e", [], [], service="Ophthalmology"),
]
PREDS = {
    "a": pred("a", out(["K80.20"], [("47562", ["51"]), ("49585", [])]), lat=1.0),  # modifier on wrong code
    "b": pred("b", out(["K42.9", "K80.2", "Q99.99"], [("49585", []), ("99999", [])]), lat=3.0),  # fabricated
    "c": pred("c", "I cannot determine the codes.", lat=2.0),                        # unextractable
    # "d": no prediction
    "e": pred("e", out([], []), lat=2.0),
}


def independent(gold, preds, comp):
    """docs/design.md's definitions written out plainly, without eval's helpers."""
    from eval.extract import extract_codes

    ps, rs, full = [], [], []
    for c in gold:
        g = {"icd10": set(c.claim.icd10), "cpt": {ln.cpt for p in c.claim.providers for ln in p.lines},
             "modifier": {f"{ln.cpt}-{m}" for p in c.claim.providers for ln in p.lines for m in ln.modifiers}}[comp]
        x = extract_codes(preds[c.id].output if c.id in preds else "")
        m = set({"icd10": x["icd10"], "cpt": x["cpt"], "modifier": x["modifiers"]}[comp])
        if not m and not g:
            p = r = 1.0
        elif not m or not g:
            p = r = 0.0
        else:
            p, r = len(m & g) / len(m), len(m & g) / len(g)
        ps.append(p)
        rs.append(r)
        full.append(m == g)
    P, R = sum(ps) / len(ps), sum(rs) / len(rs)
    return P, R, 2 * P * R / (P + R) if P + R else 0.0, sum(full) / len(full)


@pytest.fixture(scope="module")
def run():
    refs = metrics.load_references(GOLD)
    [r] = metrics.evaluate({"test": GOLD}, [("test", "ft", PREDS)], refs, n_boot=200, seed=3)
    return r


@pytest.mark.parametrize("comp", ["icd10", "cpt", "modifier"])
def test_block_matches_independent_definitions(run, comp):
    P, R, F, full = independent(GOLD, PREDS, comp)
    b = run.block[comp]
    assert b["precision"] == pytest.approx(P, abs=1e-12)
    assert b["recall"] == pytest.approx(R, abs=1e-12)
    assert b["f1"] == pytest.approx(F, abs=1e-12)
    assert b["full_match"] == pytest.approx(full, abs=1e-12)


def test_f1_is_from_means_not_mean_of_f1(run):
    ps = [s.p["icd10"] for s in run.scores]
    rs = [s.r["icd10"] for s in run.scores]
    mean_f1 = np.mean([2 * p * r / (p + r) if p + r else 0 for p, r in zip(ps, rs, strict=False)])
    assert abs(run.block["icd10"]["f1"] - mean_f1) > 1e-3


def test_hand_computed_values(run):
    # ICD per case: a (1, .5), b (1/3, 1), c (0, 0), d (0, 0), e (1, 1)
    assert run.block["icd10"]["precision"] == pytest.approx((1 + 1 / 3 + 0 + 0 + 1) / 5)
    assert run.block["icd10"]["recall"] == pytest.approx((0.5 + 1 + 0 + 0 + 1) / 5)
    # modifiers: a predicted 47562-51 vs gold 49585-51 -> (0, 0); b both empty (1, 1); c, d (0, 0); e (1, 1)
    assert run.block["modifier"]["precision"] == pytest.approx(2 / 5)
    assert run.block["modifier"]["full_match"] == pytest.approx(2 / 5)


def test_valid_fabricated_pooled(run):
    # generated ICD: a {K80.20}, b {K42.9, K80.2 (not billable), Q99.99 (not a code)} -> 2 of 4 valid
    assert run.block["icd10"]["n_generated"] == 4
    assert run.block["icd10"]["valid"] == pytest.approx(0.5)
    assert run.block["icd10"]["fabricated"] == pytest.approx(0.5)
    # generated CPT: a {47562, 49585}, b {49585, 99999}: 99999 is neither in the catalog nor gold
    assert run.block["cpt"]["n_generated"] == 4
    assert run.block["cpt"]["fabricated"] == pytest.approx(0.25)
    fab = {(x["system"], x["code"]) for x in run.block["most_fabricated"]}
    assert fab == {("icd10", "K80.2"), ("icd10", "Q99.99"), ("cpt", "99999")}


def test_missing_prediction_counts_as_empty(run):
    assert run.block["n_cases"] == 5
    assert run.block["n_missing_predictions"] == 1
    assert run.block["missing_prediction_ids"] == ["d"]
    d = next(s for s in run.scores if s.id == "d")
    assert d.missing and d.p == {"icd10": 0.0, "cpt": 0.0, "modifier": 0.0}


def test_by_service(run):
    bs = run.block["by_service"]
    assert set(bs) == {"General Surgery", "Orthopedics", "Ophthalmology"}
    assert bs["Ophthalmology"]["n_cases"] == 2
    # d (0,0) and e (1,1)
    assert bs["Ophthalmology"]["icd10"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_latency_and_cost():
    refs = metrics.load_references(GOLD)
    [r] = metrics.evaluate({"t": GOLD}, [("t", "ft", PREDS)], refs, n_boot=0, gpu_hour_cost=3.6)
    lat = r.block["latency"]
    assert lat["n"] == 4 and lat["mean_s"] == pytest.approx(2.0)
    assert lat["cost_per_1000_cases"] == pytest.approx(2.0 * 1000 / 3600 * 3.6)
    assert r.block["icd10"]["precision_ci"] is None


def test_structure_equals_library_calls(run):
    from nltk.translate.meteor_score import meteor_score
    from rouge_score.rouge_scorer import RougeScorer

    sc = RougeScorer(["rougeL", "rougeLsum"], use_stemmer=False)
    rl, rls, met = [], [], []
    for c in GOLD:
        g = strip_special_tokens(render_target(c.claim))
        o = strip_special_tokens(PREDS[c.id].output) if c.id in PREDS else ""
        s = sc.score(target=g, prediction=o)
        rl.append(s["rougeL"].fmeasure)
        rls.append(s["rougeLsum"].fmeasure)
        met.append(meteor_score([g.split()], o.split()))
    st = run.block["structure"]
    assert st["rougeL"] == pytest.approx(np.mean(rl), abs=1e-12)
    assert st["rougeLsum"] == pytest.approx(np.mean(rls), abs=1e-12)
    assert st["meteor"] == pytest.approx(np.mean(met), abs=1e-12)
    assert 0 < st["meteor"] < 1


def test_parallel_text_metrics_identical_to_loop():
    golds = [strip_special_tokens(render_target(c.claim)) for c in GOLD] * 12 + ["a b c"] * 3
    outs = [strip_special_tokens(PREDS[c.id].output) if c.id in PREDS else "" for c in GOLD] * 12 + ["a b", "c", "a b"]
    loop = textmetrics.score_loop(golds, outs)
    par = textmetrics.score_all(golds, outs, workers=2, min_parallel=0, chunk=7)
    assert par == loop


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_meteor_unavailable_without_wordnet(tmp_path):
    code = (f"import nltk; nltk.data.path[:] = [{str(tmp_path)!r}]\n"
            "from eval import textmetrics\n"
            "s = textmetrics.score_all(['a b'], ['a b'])\n"
            "import json; print(json.dumps(textmetrics.means(s)))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    d = json.loads(res.stdout.strip().splitlines()[-1])
    assert d["meteor"] is None and "WordNet" in d["meteor_unavailable"]
    assert d["rougeL"] == 1.0


def test_bootstrap_vectorised_equals_loop_and_is_seeded():
    rng = np.random.default_rng(0)
    vals = {"p": rng.random(503), "r": (rng.random(503) > 0.5).astype(float)}
    vec = bootstrap.resampled_means(vals, n_boot=157, seed=11, block_bytes=8 * 503 * 10)  # several blocks
    loop = bootstrap.resampled_means_loop(vals, n_boot=157, seed=11)
    for k in vals:
        assert np.array_equal(vec[k], loop[k])
        assert bootstrap.interval(vec[k]) == list(np.percentile(loop[k], [2.5, 97.5]))
    again = bootstrap.resampled_means(vals, n_boot=157, seed=11)
    assert np.array_equal(again["p"], vec["p"])
    other = bootstrap.resampled_means(vals, n_boot=157, seed=12)
    assert not np.array_equal(other["p"], vec["p"])


def test_bootstrap_interval_brackets_mean(run):
    for comp in ("icd10", "cpt", "modifier"):
        lo, hi = run.block[comp]["precision_ci"]
        assert 0 <= lo <= run.block[comp]["precision"] <= hi <= 1


# ---------------------------------------------------------------- reading inputs
@pytest.fixture
def gold_file(tmp_path):
    p = tmp_path / "gold.jsonl"
    write_cases(p, GOLD)
    return p


def write_lines(path, lines):
    path.write_bytes(b"".join(x if isinstance(x, bytes) else (x + "\n").encode() for x in lines))
    return path


def rec(cid, output="x", **kw):
    return json.dumps({"id": cid, "config": "ft", "output": output, "latency_s": 0.1, **kw})


@pytest.mark.parametrize("lines,line,field,words", [
    ([rec("a"), rec("a")], 2, "id", "duplicate"),
    ([rec("a"), "{not json", rec("b")], 2, None, "malformed JSON"),
    ([rec("a"), b"\xff\xfe{}\n"], 2, None, "UTF-8"),
    ([rec("a"), rec("zzz")], 2, "id", "not in the gold"),
    ([rec("a"), json.dumps({"id": "b"})], 2, "output", "missing"),
    ([json.dumps({"id": "a", "output": None})], 1, "output", "string"),
    ([json.dumps({"output": "x"})], 1, "id", "missing"),
    ([rec("a", latency_s="fast")], 1, "latency_s", "number"),
    ([rec("a", latency_s=-1)], 1, "latency_s", "number"),
    (["[1, 2]"], 1, None, "not a JSON object"),
])
def test_bad_prediction_files_name_the_line(tmp_path, lines, line, field, words):
    p = write_lines(tmp_path / "p.jsonl", lines)
    with pytest.raises(InputError) as e:
        metrics.read_predictions(p, {c.id for c in GOLD})
    assert e.value.line == line and e.value.field == field and str(p) in str(e.value)
    assert words in str(e.value)


def test_empty_prediction_file(tmp_path):
    with pytest.raises(InputError, match="no predictions"):
        metrics.read_predictions(write_lines(tmp_path / "p.jsonl", [""]), {"a"})


def test_predictions_grouped_by_config_unless_named(tmp_path):
    p = write_lines(tmp_path / "p.jsonl", [rec("a"), json.dumps({"id": "a", "config": "rag", "output": "y"}),
                                           json.dumps({"id": "b", "output": "z"})])
    groups = metrics.read_predictions(p, {"a", "b"})
    assert {k: sorted(v) for k, v in groups.items()} == {"ft": ["a"], "rag": ["a"], "model": ["b"]}
    with pytest.raises(InputError, match="duplicate"):
        metrics.read_predictions(p, {"a", "b"}, config="base")


def test_bad_gold_files_name_the_line(tmp_path, gold_file):
    lines = gold_file.read_text().splitlines()
    dup = write_lines(tmp_path / "dup.jsonl", lines + [lines[0]])
    with pytest.raises(InputError) as e:
        metrics.read_gold(dup)
    assert e.value.line == len(lines) + 1 and e.value.field == "id"
    bad = json.loads(lines[1])
    bad["claim"]["icd10"] = ["not-a-code"]
    broken = write_lines(tmp_path / "bad.jsonl", [lines[0], json.dumps(bad)])
    with pytest.raises(InputError) as e:
        metrics.read_gold(broken)
    assert e.value.line == 2 and e.value.field == "claim.icd10[0]"
    assert "op note" not in str(e.value)


def test_user_reference_lists(tmp_path):
    icd = write_lines(tmp_path / "icd.txt", ["# mine", "K80.20\tgallstones", "k429"])
    cpt = write_lines(tmp_path / "cpt.txt", ["47562\tLap chole", "99999"])
    refs = metrics.load_references(GOLD, icd, cpt)
    assert refs.icd10 == {"K80.20", "K42.9"} and refs.cpt == {"47562", "99999"}
    assert "icd.txt" in refs.describe()["icd10"]["source"] and "cpt.txt" in refs.describe()["cpt"]["source"]
    [r] = metrics.evaluate({"t": GOLD}, [("t", "ft", PREDS)], refs, n_boot=0)
    assert r.block["icd10"]["valid"] == pytest.approx(2 / 4)      # K80.20, K42.9 of K80.20, K42.9, K80.2, Q99.99
    assert r.block["cpt"]["valid"] == pytest.approx(2 / 4)        # 47562, 99999 listed; 49585 (twice) not


def test_default_references_name_their_sources():
    refs = metrics.load_references(GOLD)
    d = refs.describe()
    assert "simple-icd-10-cm" in d["icd10"]["source"]
    assert "gold file" in d["cpt"]["source"]
    assert {"47562", "49585", "27447", "66984"} <= refs.cpt
    assert "K80.20" in refs.icd10 and "K80.2" not in refs.icd10
