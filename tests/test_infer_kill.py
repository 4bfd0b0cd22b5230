"""`opclaim infer` killed with SIGKILL mid-run, its partial file ending in half a row (what a kill
during a write leaves), then re-run: it resumes, keeps the rows written before the kill, and the
result equals an uninterrupted run. The torn-tail handling itself is issue 16's (house: infer
output files); this is the test of it through the CLI."""

import json
import os
import signal
import subprocess
import time

import pytest

from opclaim.io import write_cases
from tests.conftest import opclaim_exe
from tests.test_infer import make_cases


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "latency_s"} for r in rows]


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_sigkill_mid_run_with_a_torn_row_resumes_to_the_uninterrupted_result(tiny_phi3_dir, tmp_path, cli_env):
    cases = make_cases(12)
    write_cases(tmp_path / "cases.jsonl", cases)

    def args(out):
        return [opclaim_exe(), "infer", "--model", str(tiny_phi3_dir), "--mode", "finetuned", "--cases",
                str(tmp_path / "cases.jsonl"), "--out", str(out), "--batch-size", "1", "--max-new-tokens", "48",
                "--no-progress"]

    fresh = tmp_path / "fresh.jsonl"
    r = subprocess.run(args(fresh), env=cli_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]

    out = tmp_path / "out.jsonl"
    part = out.with_name(out.name + ".partial")
    proc = subprocess.Popen(args(out), env=cli_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        t0 = time.time()
        while not (part.is_file() and part.read_text().count("\n") >= 2):
            assert proc.poll() is None, "run ended before two rows were written"
            assert time.time() - t0 < 300
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert not out.exists(), "killed too late: the run had finished"
    before = _rows(part)
    assert 2 <= len(before) < len(cases)
    with open(part, "a", encoding="utf-8") as fh:  # a write cut off by the kill: no newline, half a row
        fh.write('{"id": "c011", "config": "finetuned", "output": "<|placeholder2|>ICD-10-CM Diag')

    r = subprocess.run(args(out), env=cli_env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    final = _rows(out)
    assert _strip(final) == _strip(_rows(fresh))
    by_id = {row["id"]: row for row in final}
    assert all(by_id[row["id"]] == row for row in before)  # rows from before the kill kept as written
    assert not part.exists()
