"""report.html's coder section with routing: each code's evidence sentence highlighted in the
note (escaped), confidence and route beside each code, riskiest cases first; Table 2 one block
per test set with configurations as rows; the precision–coverage plot."""

import json
import re

from eval.calibrate import Calibration
from opclaim import artifacts
from opclaim.claim import PHI3_MARKERS, Case, Claim, render_target
from opclaim.cli import main
from opclaim.io import write_cases

SYSTEMS = ("icd10", "cpt", "modifiers")
EVIL = "<script>alert(1)</script>"


def fixed_calibration(path, threshold=0.9, target=0.95):
    """Identity map, fixed thresholds, fitted on no case (a stand-in for `opclaim calibrate`)."""
    cal = Calibration(method="isotonic", key="p",
                      systems={s: {"x": [0.0, 1.0], "y": [0.0, 1.0], "n": 0, "ece_before": None, "ece_after": None}
                               for s in SYSTEMS},
                      fitted_on={"n_cases": 0, "id_digests": [], "predictions_sha256": ""},
                      routing={s: {"threshold": threshold, "target": target, "alpha": 0.05} for s in SYSTEMS})
    artifacts.save(cal, path)
    return path


def test_coder_section_highlights_escaped_evidence_and_orders_by_risk(tmp_path):
    claim = Claim.from_dict({"icd10": ["K80.20"], "providers": [{"name": "Dr A", "lines": [
        {"cpt": "47562", "modifiers": [], "description": "Laparoscopic cholecystectomy"}]}]})
    note = (f"Indication: right upper quadrant pain.\nLaparoscopic cholecystectomy {EVIL} was performed.\n"
            "Calculus of gallbladder without cholecystitis was found.")
    cases = [Case(id="safe", note=note, claim=claim), Case(id="risky", note=note, claim=claim)]
    write_cases(tmp_path / "gold.jsonl", cases)
    rows = []
    for c, p in (("safe", 0.99), ("risky", 0.5)):
        codes = [{"system": "icd10", "code": "K80.20", "line": None, "p": p},
                 {"system": "cpt", "code": "47562", "line": 0, "p": 0.99}]
        rows.append({"id": c, "config": "m", "output": render_target(claim, PHI3_MARKERS), "latency_s": 0.1,
                     "confidence": {"method": "token_prob", "masked": True, "codes": codes}})
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cal = fixed_calibration(tmp_path / "cal.json")
    out = tmp_path / "out"
    assert main(["eval", "--predictions", str(tmp_path / "p.jsonl"), "--gold", str(tmp_path / "gold.jsonl"),
                 "--out", str(out), "--bootstrap", "50", "--calibration", str(cal)]) == 0
    html = (out / "report.html").read_text()
    # the evidence sentence is marked, and its markup is text
    assert ('<mark title="evidence for 47562">Laparoscopic cholecystectomy &lt;script&gt;alert(1)&lt;/script&gt; '
            "was performed.</mark>") in html
    assert "<script" not in html
    assert '<mark title="evidence for K80.20">Calculus of gallbladder without cholecystitis was found.</mark>' in html
    # riskiest first: the case with a code to review comes before the fully automated one
    assert html.index('id="case-gold-risky"') < html.index('id="case-gold-safe"')
    risky = html[html.index('id="case-gold-risky"'):html.index('id="case-gold-safe"')]
    assert "case review" in risky and "conf 0.50" in risky and '<span class="review">review</span>' in risky
    assert "1 of 2 cases fully automated" in html
    # the routing table and the precision–coverage plot
    assert 'class="routing-table"' in html and 'class="curve"' in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 2  # box plot + curve


def test_table2_is_one_block_per_test_set_with_configurations_as_rows(tmp_path):
    from opclaim.synth import generate_cases

    a, b = generate_cases(6, seed=1), generate_cases(5, seed=2, style="terse", id_prefix="t")
    write_cases(tmp_path / "a.jsonl", a)
    write_cases(tmp_path / "b.jsonl", b)
    argv = ["eval", "--gold", f"same={tmp_path / 'a.jsonl'}", "--gold", f"cross={tmp_path / 'b.jsonl'}",
            "--out", str(tmp_path / "out"), "--bootstrap", "20"]
    for gold, cases in (("same", a), ("cross", b)):
        for cfg in ("base", "finetuned"):
            f = tmp_path / f"{gold}_{cfg}.jsonl"
            f.write_text("".join(json.dumps({"id": c.id, "output": render_target(c.claim)}) + "\n" for c in cases))
            argv += ["--predictions", f"{gold}/{cfg}={f}"]
    assert main(argv) == 0
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count('<h3 class="table2-block">') == 2
    first = html[html.index('<h3 class="table2-block">Test set same'):html.index('<h3 class="table2-block">Test set cross')]
    assert first.count('<table class="table2-group">') == 4  # ICD-10-CM, CPT, modifiers, structure
    assert first.count("<tr><th>base</th>") == 4 and first.count("<tr><th>finetuned</th>") == 4
    assert 'id="boxplot"' in html and 'id="boxplot-2"' in html  # one figure per test set
