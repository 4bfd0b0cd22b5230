"""2 CPU ranks through `accelerate launch -m infer` give exactly the one-process output."""

import json
import subprocess
import sys

import pytest

from opclaim.io import write_cases
from tests.conftest import ROOT, free_port
from tests.test_infer import make_cases


def _rows(path):
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.mark.distributed
def test_two_ranks_equal_one_process(tiny_phi3_dir, tmp_path, cli_env):
    from opclaim.cli import main

    cases = make_cases(5)  # odd: accelerate pads rank 1 with a duplicate, which the merge drops
    write_cases(tmp_path / "cases.jsonl", cases)
    args = ["--model", str(tiny_phi3_dir), "--mode", "finetuned", "--cases", str(tmp_path / "cases.jsonl"),
            "--batch-size", "2", "--max-new-tokens", "16", "--no-progress"]
    assert main(["infer", *args, "--out", str(tmp_path / "one.jsonl")]) == 0
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", "ds_configs/ddp-cpu2.yaml",
           "--main_process_port", str(free_port()), "-m", "infer", *args, "--out", str(tmp_path / "two.jsonl")]
    res = subprocess.run(cmd, cwd=ROOT, env=cli_env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    one, two = _rows(tmp_path / "one.jsonl"), _rows(tmp_path / "two.jsonl")
    strip = [{k: v for k, v in r.items() if k != "latency_s"} for r in one]
    assert [{k: v for k, v in r.items() if k != "latency_s"} for r in two] == strip
    assert [r["id"] for r in two] == [c.id for c in cases]
    run = json.loads((tmp_path / "two.jsonl.run.json").read_text())
    assert run["ranks"] == 2 and run["complete"] and run["rows"] == 5
    one_cfg = json.loads((tmp_path / "one.jsonl.run.json").read_text())["config"]
    assert run["config"] == one_cfg  # so either file can be resumed by either kind of run
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["cases.jsonl", "one.jsonl", "one.jsonl.run.json", "two.jsonl", "two.jsonl.run.json"])  # shards cleaned
