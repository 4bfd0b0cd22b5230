"""Completion markers list each file's size and sha256; resume takes the newest checkpoint that
still matches its marker and says which it skipped and why. (Real training: test_train_resume.)"""

import json
import logging

import pytest

from opclaim.errors import InputError
from train import checkpoint as ck


def _ckpt(root, step, files=None):
    d = root / f"checkpoint-{step}"
    (d / "global_step").mkdir(parents=True)
    for name, data in (files or {"adapter_model.safetensors": b"A" * 64, "optimizer.pt": b"O" * 128,
                                 "trainer_state.json": b"{}", "global_step/shard.pt": b"S" * 32}).items():
        (d / name).write_bytes(data)
    ck.write_marker(d, step)
    return d


@pytest.fixture(autouse=True)
def _fresh_cache():
    ck._verified.clear()
    yield
    ck._verified.clear()


def test_marker_lists_sizes_and_digests(tmp_path):
    d = _ckpt(tmp_path, 10)
    body = json.loads((d / ck.MARKER).read_text())
    assert body["step"] == 10
    assert set(body["files"]) == {"adapter_model.safetensors", "optimizer.pt", "trainer_state.json",
                                  "global_step/shard.pt"}
    assert body["files"]["optimizer.pt"]["size"] == 128 and len(body["files"]["optimizer.pt"]["sha256"]) == 64
    assert ck.verify(d) is None


@pytest.mark.parametrize("damage,reason", [
    (lambda d: (d / "optimizer.pt").write_bytes(b"O" * 10), "optimizer.pt is 10 bytes, the marker says 128"),
    (lambda d: (d / "adapter_model.safetensors").write_bytes(b"B" * 64), "adapter_model.safetensors does not match"),
    (lambda d: (d / "global_step" / "shard.pt").unlink(), "global_step/shard.pt is missing"),
    (lambda d: (d / ck.MARKER).write_text("{trunc"), "completion marker is unreadable"),
])
def test_damaged_checkpoint_is_skipped_with_its_reason(tmp_path, damage, reason, caplog):
    _ckpt(tmp_path, 10)
    bad = _ckpt(tmp_path, 20)
    damage(bad)
    with caplog.at_level(logging.WARNING, logger="train"):
        got = ck.resolve_resume("auto", tmp_path)
    assert got.name == "checkpoint-10"
    assert any("skipping checkpoint-20" in r.message and reason in r.message for r in caplog.records), caplog.text
    moved = ck.set_aside_incomplete(tmp_path)
    assert [p.name.split("-")[0] for p in moved] == ["corrupt"]
    assert [p.name for p in ck.checkpoints(tmp_path)] == ["checkpoint-10"]


def test_all_damaged_means_fresh_start_and_explicit_path_is_exit_2(tmp_path):
    d = _ckpt(tmp_path, 10)
    (d / "optimizer.pt").write_bytes(b"")
    assert ck.resolve_resume(None, tmp_path) is None
    with pytest.raises(InputError) as e:
        ck.resolve_resume(str(d), tmp_path)
    assert "optimizer.pt is 0 bytes" in str(e.value) and e.value.field == "resume_from_checkpoint"


def test_marker_without_checksums_still_counts_and_markerless_is_set_aside(tmp_path):
    old = tmp_path / "checkpoint-5"
    old.mkdir()
    (old / ck.MARKER).write_text(json.dumps({"step": 5, "time": 0}))
    half = tmp_path / "checkpoint-9"
    half.mkdir()
    assert ck.resolve_resume("auto", tmp_path) == old
    assert [p.name.split("-")[0] for p in ck.set_aside_incomplete(tmp_path)] == ["incomplete"]
    assert ck.resolve_resume("never", tmp_path) is None
