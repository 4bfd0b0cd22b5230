"""One inference path: the service's answer for a note equals `opclaim infer`'s row for the same note
and settings, field by field (output, claim codes, flags, confidence, route, evidence), with the
claim grammar and a calibration file. A real `opclaim serve` on loopback, the tiny Phi-3."""

import json
import subprocess
import sys

import httpx
import pytest

from tests.serve_helpers import Server, add_user, serve_env

pytestmark = pytest.mark.slow  # a model run and a real server: outside the make test-fast tier

NOTES = ["Laparoscopic cholecystectomy for symptomatic cholelithiasis.",
         "Open repair of a reducible inguinal hernia with mesh. Findings: indirect sac. " * 2,
         "Diagnostic laparoscopy."]


@pytest.fixture(scope="module")
def coding_model(tmp_path_factory):
    """A tiny random Phi-3 whose seed makes the grammar-constrained output name a code (seed 0's
    writes None), so confidence, route and evidence have something to compare."""
    from opclaim.registry import build_tiny_phi3

    return build_tiny_phi3(tmp_path_factory.mktemp("tiny-phi3-s1") / "model", seed=1)


def _calibration(path):
    """Identity points, threshold 0.1 for both systems: codes route auto or review by their score."""
    from eval.calibrate import Calibration
    from opclaim import artifacts

    pts = {"x": [0.0, 1.0], "y": [0.0, 1.0], "n": 2, "ece_before": 0.0, "ece_after": 0.0}
    cal = Calibration(method="isotonic", key="p", systems={"icd10": dict(pts), "cpt": dict(pts)},
                      fitted_on={"n_cases": 2, "id_digests": [], "predictions_sha256": ""},
                      routing={"icd10": {"threshold": 0.1, "target": 0.9}, "cpt": {"threshold": 0.1, "target": 0.9}})
    artifacts.save(cal, path)
    return path


def _expected(note: str, row: dict) -> list[dict]:
    """The service's code rows as `opclaim infer`'s row determines them: each code's decoding score
    (best line), its calibrated route, its evidence spans (eval/evidence.py on infer's claim)."""
    from eval import evidence
    from eval.confidence import code_scores
    from opclaim.serve.engine import claim_from_output

    claim, _ = claim_from_output(row["output"])  # codes only: no confidence passed in
    conf = row.get("confidence") or {}
    scores = code_scores(conf)
    routes = {}
    for c in conf.get("codes", []):
        routes.setdefault((c["system"], c["code"]), set()).add(c.get("route"))
    found = evidence.find(note, claim, "bm25")
    out = []
    codes = [("icd10", c) for c in claim["icd10"]] + [("cpt", ln["cpt"]) for p in claim["providers"]
                                                      for ln in p["lines"]]
    for system, code in codes:
        r = routes.get((system, code), {None})
        ev = found.get((system, code))
        out.append({"system": system, "code": code, "confidence": scores[system].get(code),
                    "route": "review" if "review" in r else next(iter(r)),
                    "evidence": None if ev is None else ([] if ev["no_evidence"] else
                                                         [{"start": s, "end": e} for s, e in ev["spans"]])})
    return out


def test_service_answers_as_opclaim_infer(coding_model, tmp_path):
    from opclaim.claim import Case, Claim
    from opclaim.io import write_cases

    claim = Claim.from_dict({"icd10": ["K80.20"], "providers": [
        {"name": "Dr. A", "role": "surgeon", "lines": [{"cpt": "47562", "modifiers": []}]}]})
    cases = tmp_path / "cases.jsonl"
    write_cases(cases, [Case(id=f"n{i}", note=n, claim=claim) for i, n in enumerate(NOTES)])
    (tmp_path / "icd.txt").write_text("K80.20\nK40.90\nK81.0\n")
    (tmp_path / "cpt.txt").write_text("47562\n49505\n")
    cal = _calibration(tmp_path / "cal.json")
    common = ["--mode", "finetuned", "--max-new-tokens", "60", "--constrain", "--icd-ref", tmp_path / "icd.txt",
              "--cpt-ref", tmp_path / "cpt.txt", "--grammar-cache", tmp_path / "gc", "--calibration", cal]
    preds = tmp_path / "preds.jsonl"
    r = subprocess.run([sys.executable, "-m", "opclaim", "infer", "--model", coding_model, "--cases", cases,
                        "--out", preds, "--batch-size", "1", "--no-progress", *map(str, common)],
                       capture_output=True, text=True, env=serve_env(), timeout=600)
    assert r.returncode == 0, r.stderr
    rows = {x["id"]: x for x in map(json.loads, preds.read_text().splitlines())}

    db = tmp_path / "serve.db"
    token = add_user(db, "carl", "coder")
    srv = Server(["--model", coding_model, "--db", db, "--threads", "1", *common], tmp_path / "server.log").start()
    try:
        n_routed = n_scored = 0
        for i, note in enumerate(NOTES):
            row = rows[f"n{i}"]
            j = httpx.post(srv.url + "/v1/suggest", headers={"Authorization": f"Bearer {token}"}, timeout=300,
                           json={"note": note}).json()
            assert j["output"] == row["output"]
            assert j["flags"] == row.get("flags", [])
            got = [{k: c[k] for k in ("system", "code", "confidence", "route", "evidence")} for c in j["codes"]]
            assert got == _expected(note, row)
            n_routed += sum(c["route"] is not None for c in got)
            n_scored += sum(c["confidence"] is not None for c in got)
        assert n_routed > 0 and n_scored > 0  # the calibration routed codes (the old engine answered route null)
    finally:
        srv.stop()
