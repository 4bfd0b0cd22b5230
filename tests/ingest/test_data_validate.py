"""`opclaim data validate`: every defect class in tests/data yields exactly the expected rejects
(file, line, field), clean-up rules are counted, note text never appears in messages."""

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from opclaim import ingest
from opclaim.io import read_cases
from tests.conftest import opclaim_exe

DATA = Path(__file__).resolve().parents[1] / "data"
SECRET = "SECRET-NOTE-TEXT"  # every fixture note carries this marker

# file -> [(line, field, defect, action)]
EXPECTED = {
    "missing_id.jsonl": [(2, "id", "missing_id", "rejected"), (3, "id", "missing_id", "rejected")],
    "missing_note.jsonl": [(2, "note", "missing_note", "rejected"), (3, "note", "missing_note", "rejected")],
    "missing_claim.jsonl": [(2, "claim", "missing_claim", "rejected"), (3, "claim", "missing_claim", "rejected")],
    "duplicate_id.jsonl": [(3, "id", "duplicate_id", "rejected")],
    "non_utf8.jsonl": [(2, "note", "non_utf8", "rejected")],
    "bad_date.jsonl": [(2, "date", "bad_date", "rejected"), (3, "date", "bad_date", "rejected")],
    "malformed_icd.jsonl": [(2, "claim.icd10[1]", "malformed_code", "rejected")],
    "malformed_cpt.jsonl": [(3, "claim.providers[0].lines[0].cpt", "malformed_code", "rejected")],
    "unknown_modifier.jsonl": [(2, "claim.providers[0].lines[0].modifiers[0]", "unknown_modifier", "rejected")],
    "malformed_json.jsonl": [(2, None, "malformed_record", "rejected")],
    "long_note.jsonl": [(2, "note", "over_token_limit", "flagged")],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_defect_class_yields_exactly_the_expected_rejects(name):
    report = ingest.validate(DATA / name, max_tokens=100)
    got = [(r["line"], r["field"], r["defect"], r["action"]) for r in ingest.reject_rows(report)]
    assert got == EXPECTED[name]
    n_rejected = sum(1 for x in EXPECTED[name] if x[3] == "rejected")
    assert report.read == len(report.kept) + n_rejected  # nothing dropped silently
    for p, _ in report.rejected + report.flagged:
        assert SECRET not in p.reason


def test_csv_export_with_yaml_mapping_rows_and_cleanup():
    mapping = ingest.load_mapping(DATA / "columns.yaml")
    report = ingest.validate(DATA / "export.csv", mapping=mapping)
    got = [(r["line"], r["field"], r["defect"]) for r in ingest.reject_rows(report)]
    # line 3: undecodable byte in the note column; line 6 (after a quoted two-line cell): bad CPT
    assert got == [(3, "op_note_text", "non_utf8"), (6, "claim.providers[0].lines[0].cpt", "malformed_code")]
    kept = {c.id: c for c in report.kept}
    assert set(kept) == {"e1", "e3"}
    assert kept["e3"].date == "2020-05-03" and kept["e3"].claim.icd10 == ["H25.11"]
    assert kept["e3"].claim.modifier_set() == {"66984-RT"}
    assert kept["e1"].claim.modifier_set() == {"49591-51"} and kept["e1"].claim.providers[0].name == "Dr. A. Rivera"
    assert report.changes["icd_dot"] == 1 and report.changes["cpt_modifier_split"] == 2
    assert report.changes["claim_from_columns"] == 2 and report.changes["date_format"] == 1


def test_map_flags_equal_yaml_and_unknown_field_is_input_error():
    flags = ["id=encounter_id", "date=surgery_date", "note=op_note_text", "icd10=dx_codes", "cpt=cpt_codes", "provider=surgeon"]
    assert ingest.load_mapping(pairs=flags) == ingest.load_mapping(DATA / "columns.yaml")
    with pytest.raises(ingest.InputError):
        ingest.load_mapping(pairs=["diagnosis=dx"])
    with pytest.raises(ingest.InputError):
        ingest.load_mapping(pairs=["no-equals-sign"])


def test_cleanup_rules_are_counted_per_rule():
    report = ingest.validate(DATA / "messy_labels.jsonl")
    (case,) = report.kept
    assert case.claim.icd10 == ["K80.20", "E11.9"]
    assert case.claim.providers[0].lines[0].cpt == "47562"
    assert case.claim.providers[0].lines[0].modifiers == ["RT", "80"]
    assert case.date == "2021-03-14"
    assert dict(report.changes) == {"icd_dot": 2, "whitespace": 1, "case": 3, "duplicate_code": 1,
                                    "cpt_prefix": 1, "cpt_modifier_split": 1, "date_format": 1}


def test_parquet_rows_and_binary_cells(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "id": ["p1", "p2", "p3", "p1"],
        "note": [b"Synthetic note.", b"Bad \xff bytes", b"Another note.", b"Dup id."],
        "icd10": ["K80.20", "K35.80", "k8020", "K80.20"],
        "cpt": ["47562", "44970", "47562-80", "47562"],
        "date": ["2022-01-02", "2022-01-03", "not a date", "2022-01-05"],
    })
    path = tmp_path / "export.parquet"
    pq.write_table(table, path)
    report = ingest.validate(path)
    got = [(r["line"], r["field"], r["defect"]) for r in ingest.reject_rows(report)]
    assert got == [(2, "note", "non_utf8"), (3, "date", "bad_date"), (4, "id", "duplicate_id")]
    assert [c.id for c in report.kept] == ["p1"]


def test_real_tokenizer_counts(tiny_tokenizer):
    notes = [json.loads(x)["note"] for x in (DATA / "long_note.jsonl").read_text().splitlines()]
    counts = [ingest.count_tokens(n, tiny_tokenizer) for n in notes]
    assert counts[0] != ingest.count_tokens(notes[0])  # the tokenizer path, not the regex estimate
    limit = max(counts[0], counts[2])
    assert counts[1] > limit
    report = ingest.validate(DATA / "long_note.jsonl", max_tokens=limit, tokenizer=tiny_tokenizer)
    assert [p.where for p, _ in report.flagged] == [2]


def _run(args, cli_env, cwd):
    return subprocess.run([opclaim_exe(), "data", "validate", *args], cwd=cwd, env=cli_env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_cli_exit_codes_rejects_file_and_out(tmp_path, cli_env):
    src = tmp_path / "in.jsonl"
    lines = []
    for name in ("duplicate_id.jsonl", "malformed_icd.jsonl"):
        lines += (DATA / name).read_text(encoding="utf-8").splitlines()
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    rej, out = tmp_path / "rej.jsonl", tmp_path / "clean.jsonl"
    r = _run([str(src), "--rejects", str(rej), "--out", str(out)], cli_env, tmp_path)
    assert r.returncode == 2, r.stderr
    assert "in.jsonl:3, field 'id': duplicate id" in r.stderr
    assert "in.jsonl:5, field 'claim.icd10[1]'" in r.stderr
    assert SECRET not in r.stderr + r.stdout
    assert "rejected: 3" in r.stdout  # line 3 dup x1, line 4 dup x1, line 5 bad ICD; x3 on line 6 is new
    rows = [json.loads(x) for x in rej.read_text().splitlines()]
    assert [x["line"] for x in rows] == [3, 4, 5]
    assert all(x["action"] == "rejected" and x["record"]["id"] for x in rows)
    assert stat.S_IMODE(os.stat(rej).st_mode) == 0o600 and stat.S_IMODE(os.stat(out).st_mode) == 0o600
    assert [c.id for c in read_cases(out)] == ["x1", "x2", "x3"]

    r = _run([str(src), "--rejects", str(rej), "--allow-rejects", "--summary", str(tmp_path / "s.json")], cli_env, tmp_path)
    assert r.returncode == 0, r.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["defects"] == {"duplicate_id": 2, "malformed_code": 1} and summary["valid"] == 3

    r = _run([str(tmp_path / "missing.jsonl")], cli_env, tmp_path)
    assert r.returncode == 2 and "file not found" in r.stderr


def test_mis_mapped_note_column_never_leaks_into_messages(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("id,text,dx\nr1,Synthetic SECRET-NOTE-TEXT here,K80.20\n", encoding="utf-8")
    # note and icd10 swapped by mistake: the "code" is note text
    report = ingest.validate(src, mapping=ingest.load_mapping(pairs=["note=dx", "icd10=text"]))
    ((problem, _),) = report.rejected
    assert problem.field == "claim.icd10[0]" and problem.kind == "malformed_code"
    assert "SECRET" not in problem.reason and "characters>" in problem.reason


def test_patient_columns_unknown_fields_and_unknown_icd(tmp_path):
    src = tmp_path / "x.csv"
    src.write_text("id,note,icd10,cpt,patient_age,gender,mrn\n"
                   "r1,Note one.,K80.20,47562,67,Female,111\n"
                   "r2,Note two.,K35.80,44970,,unknown,222\n"
                   "r3,Note three.,Z99.99,44970,40,M,333\n"
                   "r4,Note four.,K80.20,47562,abc,F,444\n"
                   "r5,Note five.,K80.20,47562,50,SECRET-NOTE-TEXT,555\n", encoding="utf-8")
    report = ingest.validate(src)
    got = [(r["line"], r["field"], r["defect"]) for r in ingest.reject_rows(report)]
    assert got == [(4, "claim.icd10[0]", "unknown_code"), (5, "patient.age", "wrong_type"),
                   (6, "patient.sex", "invalid_value")]
    kept = {c.id: c for c in report.kept}
    assert kept["r1"].patient == {"age": 67, "sex": "F"} and kept["r2"].patient == {"sex": "U"}
    assert kept["r1"].extra == {"mrn": "111"} and report.summary()["unknown_fields"] == {"mrn": 2}
    assert report.changes["patient_from_columns"] == 2 and report.changes["sex_code"] == 2
    assert all(SECRET not in p.reason for p, _ in report.rejected)
    report = ingest.validate(src, allow_unknown_icd=True)
    assert "r3" in {c.id for c in report.kept}


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_cli_allow_unknown_icd_and_bom(tmp_path, cli_env):
    line = json.loads((DATA / "bad_date.jsonl").read_text().splitlines()[0])
    line["claim"]["icd10"] = ["Z99.99"]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\xef\xbb\xbf" + json.dumps(line).encode() + b"\n")
    r = _run([str(src)], cli_env, tmp_path)
    assert r.returncode == 2 and "'Z99.99' is not in the shipped release" in r.stderr, r.stderr
    r = _run([str(src), "--allow-unknown-icd"], cli_env, tmp_path)
    assert r.returncode == 0 and "valid: 1" in r.stdout, r.stderr
