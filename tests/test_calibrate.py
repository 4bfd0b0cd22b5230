"""Calibration (eval/calibrate.py) and routing (eval/auto_review.py), through `opclaim calibrate` and
`opclaim route`: monotone maps fitted on validation only, thresholds chosen on validation and never
on test, routing flags per code and per case."""

import json
import random

import numpy as np
import pytest

from opclaim.claim import PHI3_MARKERS, Case, Claim, render_target
from opclaim.io import write_cases

ICD = ["K80.20", "K40.90", "E11.9", "I10", "K35.80", "N20.0"]
CPT = ["47562", "49505", "44970", "52353"]


def _world(n: int, seed: int, prefix: str):
    """Gold cases and prediction rows: each case predicts its gold codes plus a wrong one; a right
    code's raw score runs high, a wrong one's low, both overconfident (so calibration has work)."""
    rng = random.Random(seed)
    cases, rows = [], []
    for i in range(n):
        icd = rng.sample(ICD, 2)
        cpt = rng.choice(CPT)
        gold = Claim.from_dict({"icd10": icd, "providers": [{"name": "Dr A", "lines": [{"cpt": cpt, "modifiers": []}]}]})
        wrong = next(c for c in ICD if c not in icd)
        pred = Claim.from_dict({"icd10": [*icd, wrong], "providers": [
            {"name": "Dr A", "lines": [{"cpt": cpt, "modifiers": ["80"] if i % 3 == 0 else []}]}]})
        cid = f"{prefix}{i:03d}"
        cases.append(Case(id=cid, note=f"Note {i}.", claim=gold))
        codes = [{"system": "icd10", "code": c, "line": None,
                  "p": min(1.0, 0.75 + 0.25 * rng.random()) if c in icd else 0.3 + 0.6 * rng.random()}
                 for c in pred.icd10]
        codes.append({"system": "cpt", "code": cpt, "line": 0, "p": 0.9 + 0.1 * rng.random()})
        if i % 3 == 0:
            codes.append({"system": "modifiers", "code": f"{cpt}-80", "line": 0, "p": 0.6})
        rows.append({"id": cid, "config": "m", "output": render_target(pred, PHI3_MARKERS), "latency_s": 0.1,
                     "confidence": {"method": "token_prob", "masked": True, "codes": codes}})
    return cases, rows


def _write(tmp_path, name, n, seed, prefix):
    cases, rows = _world(n, seed, prefix)
    write_cases(tmp_path / f"{name}_gold.jsonl", cases)
    (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path / f"{name}.jsonl", tmp_path / f"{name}_gold.jsonl"


def test_isotonic_and_platt_are_monotone_and_reduce_ece():
    from eval import calibrate

    rng = np.random.default_rng(0)
    x = rng.random(400)
    y = (rng.random(400) < x ** 3).astype(float)  # overconfident scores
    for method in ("isotonic", "platt"):
        px, py = calibrate.fit_points(x, y, method)
        assert all(b >= a for a, b in zip(py, py[1:], strict=False))
        grid = np.linspace(0, 1, 101)
        mapped = [calibrate.apply_points({"x": px, "y": py}, float(g)) for g in grid]
        assert all(b >= a - 1e-12 for a, b in zip(mapped, mapped[1:], strict=False))
        after = [calibrate.apply_points({"x": px, "y": py}, float(v)) for v in x]
        assert calibrate.ece(after, y) < calibrate.ece(x, y)


def test_threshold_meets_the_bound_and_nothing_passes_on_noise():
    from eval import auto_review

    rng = np.random.default_rng(1)
    s = rng.random(2000)
    ok = rng.random(2000) < s  # calibrated scores
    t = auto_review.choose_threshold(s, ok, target=0.9)
    assert t["threshold"] is not None and t["val_lower"] >= 0.9
    assert ok[s >= t["threshold"]].mean() >= 0.9
    assert auto_review.choose_threshold(s, rng.random(2000) < 0.5, target=0.95)["threshold"] is None
    assert auto_review.clopper_pearson_lower(10, 10) == pytest.approx(0.05 ** (1 / 10))


def test_route_flags_codes_and_cases():
    from eval import auto_review

    scored = {"a": {"icd10": {"K80.20": {"score": 0.99, "correct": True}}, "cpt": {"47562": {"score": 0.97, "correct": True}},
                    "modifiers": {}},
              "b": {"icd10": {"K80.20": {"score": 0.99, "correct": True}, "I10": {"score": 0.4, "correct": False}},
                    "cpt": {"47562": {"score": None, "correct": True}}, "modifiers": {}}}
    th = {"icd10": {"threshold": 0.9}, "cpt": {"threshold": 0.95}, "modifiers": {"threshold": None}}
    r = auto_review.route(scored, th)
    assert r["a"]["route"] == "auto" and r["b"]["route"] == "review"
    assert r["b"]["codes"]["icd10"] == {"K80.20": "auto", "I10": "review"}
    assert r["b"]["codes"]["cpt"] == {"47562": "review"}  # no score: a coder looks


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_calibrate_then_route_cli(tmp_path, capsys):
    from eval.calibrate import Calibration
    from opclaim import artifacts
    from opclaim.cli import main

    val, val_gold = _write(tmp_path, "val", 300, 0, "v")
    test, test_gold = _write(tmp_path, "test", 200, 1, "t")
    cal_path = tmp_path / "cal.json"
    assert main(["calibrate", "--predictions", str(val), "--gold", str(val_gold), "--out", str(cal_path),
                 "--target-precision", "0.9"]) == 0
    cal = artifacts.load(Calibration, cal_path)
    assert (tmp_path / "cal.png").stat().st_size > 1000
    icd = cal.systems["icd10"]
    assert all(b >= a for a, b in zip(icd["y"], icd["y"][1:], strict=False))
    assert icd["ece_after"] < icd["ece_before"]
    assert cal.fitted_on["n_cases"] == 300
    th = cal.routing["icd10"]
    assert th["threshold"] is not None and th["val_lower"] >= 0.9

    # the threshold comes from validation alone: changing test's labels does not move it
    out = tmp_path / "routing"
    assert main(["route", "--predictions", str(test), "--gold", str(test_gold), "--calibration", str(cal_path),
                 "--out", str(out), "--bootstrap", "200", "--train", str(val_gold)]) == 0
    res = json.loads((out / "routing.json").read_text())
    s = res["systems"]["icd10"]
    assert s["threshold"] == th["threshold"]
    assert s["precision"] >= 0.85 and 0 < s["coverage"] <= 1
    assert s["precision_ci"][0] <= s["precision"] <= s["precision_ci"][1]
    assert s["recall_lost"] >= 0 and set(s["by_frequency"]) == {"common", "rare"}
    assert 0 <= res["automation_rate"] <= 1
    assert (out / "precision_coverage.png").stat().st_size > 1000
    assert (out / "routes.jsonl").stat().st_mode & 0o077 == 0
    routes = [json.loads(x) for x in (out / "routes.jsonl").read_text().splitlines()]
    for r in routes:
        flat = [v["route"] for d in r["codes"].values() for v in d.values()]
        assert r["route"] == ("auto" if all(x == "auto" for x in flat) else "review")

    # applying the calibration to its own validation cases is refused
    capsys.readouterr()
    assert main(["route", "--predictions", str(val), "--gold", str(val_gold), "--calibration", str(cal_path),
                 "--out", str(tmp_path / "leak")]) == 2
    assert "fitted on 300 of these cases" in capsys.readouterr().err


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_eval_applies_calibration_and_writes_routing(tmp_path, capsys):
    """`opclaim eval --calibration`: thresholds from validation (cal.json) applied to test, routing
    per configuration and system in metrics.json; a configuration without confidence gets none."""
    from eval.calibrate import Calibration
    from opclaim import artifacts
    from opclaim.artifacts import EvalMetrics
    from opclaim.cli import main

    val, val_gold = _write(tmp_path, "val", 300, 0, "v")
    test, test_gold = _write(tmp_path, "test", 120, 1, "t")
    bare = tmp_path / "bare.jsonl"  # the same outputs without confidence
    bare.write_text("".join(json.dumps({k: v for k, v in json.loads(x).items() if k != "confidence"}) + "\n"
                            for x in test.read_text().splitlines()))
    cal_path = tmp_path / "cal.json"
    assert main(["calibrate", "--predictions", str(val), "--gold", str(val_gold), "--out", str(cal_path),
                 "--target-precision", "0.9"]) == 0
    cal = artifacts.load(Calibration, cal_path)
    out = tmp_path / "eval"
    argv = ["eval", "--predictions", f"m={test}", "--predictions", f"bare={bare}", "--gold", str(test_gold),
            "--out", str(out), "--bootstrap", "100", "--calibration", str(cal_path)]
    capsys.readouterr()
    # the cal.json's thresholds were chosen for 0.9: the default target 0.95 is refused, not refitted
    assert main(argv) == 2
    assert "target precision 0.9" in capsys.readouterr().err
    assert main([*argv, "--target-precision", "0.9", "--train", str(val_gold)]) == 0
    m = artifacts.load(EvalMetrics, out)
    assert json.loads((out / "metrics.json").read_text())["schema"] == "opclaim.eval/2"
    assert "routing" not in m.configs["bare"] and "routing_skipped" not in m.configs["bare"]
    rt = m.configs["m"]["routing"]
    assert rt["target_precision"] == 0.9 and rt["calibration"]["file"] == "cal.json"
    assert rt["frequency"]["basis"] == "training set" and rt["frequency"]["file"] == "val_gold.jsonl"
    for s in ("icd10", "cpt", "modifiers"):
        d = rt["systems"][s]
        assert d["threshold"] == cal.routing[s]["threshold"]  # from validation, unchanged
        assert set(d["by_frequency"]) == {"common", "rare"} and d["curve"]
        assert {"precision", "coverage", "recall_lost", "ece_before", "ece_after"} <= set(d)
    icd = rt["systems"]["icd10"]
    assert icd["precision"] >= 0.85 and icd["precision_ci"][0] <= icd["precision"] <= icd["precision_ci"][1]
    assert 0 < icd["coverage"] <= 1 and icd["recall_lost"] >= 0
    assert 0 <= rt["automation_rate"] <= 1
    # the worklist carries each code's calibrated confidence and route; bare rows have none
    import csv

    rows = list(csv.DictReader((out / "cases.csv").open(newline="")))
    by = {(r["config"], r["id"]): r for r in rows}
    routed = [r for r in rows if r["config"] == "m"]
    assert all(r["route"] in ("auto", "review") and r["confidence_calibrated"] == "1" for r in routed)
    assert sum(r["route"] == "auto" for r in routed) == rt["cases_auto"]
    assert all(by[("bare", r["id"])]["route"] == "" for r in routed)
    # gold frequency when no training file is given, and said so
    out2 = tmp_path / "eval2"
    assert main(["eval", "--predictions", f"m={test}", "--gold", str(test_gold), "--out", str(out2), "--bootstrap",
                 "0", "--calibration", f"m={cal_path}", "--target-precision", "0.9"]) == 0
    m2 = json.loads((out2 / "metrics.json").read_text())
    assert m2["configs"]["m"]["routing"]["frequency"]["basis"] == "this gold set"
    # applied to its own validation cases: no routing numbers, and the block says why
    out3 = tmp_path / "eval3"
    assert main(["eval", "--predictions", f"m={val}", "--gold", str(val_gold), "--out", str(out3), "--bootstrap",
                 "0", "--calibration", str(cal_path), "--target-precision", "0.9"]) == 0
    b = json.loads((out3 / "metrics.json").read_text())["configs"]["m"]
    assert "routing" not in b and "fitted on 300 of these cases" in b["routing_skipped"]
    # a calibration for a configuration that is not evaluated is a usage error
    assert main(["eval", "--predictions", f"m={test}", "--gold", str(test_gold), "--out", str(tmp_path / "x"),
                 "--calibration", f"nosuch={cal_path}", "--target-precision", "0.9"]) == 2


def test_eval_reads_version_1_metrics():
    from opclaim import artifacts

    m = artifacts.parse(artifacts.EvalMetrics, {"schema": "opclaim.eval/1", "gold_sets": {"t": {}},
                                                "configs": {"m": {"n_cases": 1}}})
    assert m.configs["m"] == {"n_cases": 1}


def test_annotate_maps_through_the_fitted_points_and_routes_at_the_threshold():
    from eval.calibrate import Calibration, annotate

    pts = {"x": [0.0, 0.5, 1.0], "y": [0.0, 0.2, 1.0], "n": 3, "ece_before": None, "ece_after": None}
    cal = Calibration(method="isotonic", key="p", systems={"icd10": pts, "cpt": pts, "modifiers": pts},
                      fitted_on={"n_cases": 3, "id_digests": [], "predictions_sha256": ""},
                      routing={"icd10": {"threshold": 0.6}, "cpt": {"threshold": None}})
    conf = {"codes": [{"system": "icd10", "code": "A", "p": 0.75}, {"system": "icd10", "code": "B", "p": 0.5},
                      {"system": "cpt", "code": "C", "p": 1.0}, {"system": "modifiers", "code": "C-RT", "p": None}]}
    got = [(c["p_cal"], c["route"]) for c in annotate(conf, cal)["codes"]]
    assert got == [(0.6, "auto"), (0.2, "review"), (1.0, "review"), (None, "review")]
