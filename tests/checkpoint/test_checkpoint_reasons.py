"""train.checkpoint, detail by detail: the exact reasons and log lines, every spelling of the
resume setting, which rank logs, and the two Trainer callbacks run in this process (a real
TrainerState/TrainerControl; a real one-rank gloo group for the signal agreement). Cases found by
mutation testing (docs/records/mutation.md); the end-to-end runs are test_train_resume / _zero3_resume."""

import json
import logging
import os
import signal
import time
from types import SimpleNamespace

import pytest
import torch.distributed as dist
from transformers import TrainerControl, TrainerState

from opclaim.errors import InputError
from tests.checkpoint.test_checkpoint import _ckpt
from train import checkpoint as ck


@pytest.fixture(autouse=True)
def _fresh_cache():
    ck._verified.clear()
    yield
    ck._verified.clear()


def _marker(d, body):
    d.mkdir(parents=True, exist_ok=True)
    (d / ck.MARKER).write_text(json.dumps(body) if not isinstance(body, str) else body)
    return d


# ---------------------------------------------------------------- marker and manifest
def test_marker_is_indented_json_with_the_time_written(tmp_path):
    t0 = time.time()
    d = _ckpt(tmp_path, 3)
    text = (d / ck.MARKER).read_text()
    body = json.loads(text)
    assert text == json.dumps(body, indent=1) + "\n"  # one key per line: readable, diffable
    assert t0 - 1 <= body["time"] <= time.time() + 1


def test_manifest_leaves_out_part_files_and_the_marker(tmp_path):
    # A `.part` is an unfinished write; listing it would make the marker fail once it is renamed.
    d = tmp_path / "checkpoint-1"
    d.mkdir()
    (d / "a.bin").write_bytes(b"a")
    (d / "b.bin.part").write_bytes(b"b")
    (d / ck.MARKER).write_text("{}")
    assert set(ck.file_manifest(d)) == {"a.bin"}


@pytest.mark.parametrize("body,reason", [
    ({"step": 1, "files": {}}, "completion marker lists no files"),
    ({"step": 1, "files": ["a.bin"]}, "completion marker lists no files"),
    ({"step": 1, "files": {"a.bin": {"size": 1}}}, "completion marker entry for a.bin is malformed"),
    ("{trunc", "completion marker is unreadable"),
])
def test_exact_reasons(tmp_path, body, reason):
    d = _marker(tmp_path / "checkpoint-1", body)
    (d / "a.bin").write_bytes(b"a")
    assert ck.verify(d) == reason


def test_marker_that_is_not_an_object_does_not_crash_verify(tmp_path):
    # Resume must never die on a strange marker; a JSON list has no file list to compare.
    assert ck.verify(_marker(tmp_path / "checkpoint-1", "[1, 2]")) is None


def test_newest_complete_ignores_markerless_and_missing_folders(tmp_path):
    for step in (3, 5, 7):
        _ckpt(tmp_path, step)
    (tmp_path / "checkpoint-9").mkdir()
    assert ck.newest_complete(tmp_path).name == "checkpoint-7"
    assert ck.newest_complete(tmp_path / "nope") is None
    assert ck.newest_complete(tmp_path / "checkpoint-9") is None


# ---------------------------------------------------------------- resume setting
@pytest.mark.parametrize("setting", [None, "", "auto", True, "true", "True"])
def test_auto_spellings_take_the_newest(tmp_path, setting):
    _ckpt(tmp_path, 10)
    assert ck.resolve_resume(setting, tmp_path).name == "checkpoint-10"


@pytest.mark.parametrize("setting", ["never", "false", "FALSE", "no", "No", False])
def test_never_spellings_start_fresh(tmp_path, setting):
    _ckpt(tmp_path, 10)
    assert ck.resolve_resume(setting, tmp_path) is None


def test_explicit_path_error_names_the_checkpoint(tmp_path):
    d = _ckpt(tmp_path, 10)
    (d / "optimizer.pt").write_bytes(b"")
    with pytest.raises(InputError) as e:
        ck.resolve_resume(str(d), tmp_path)
    assert e.value.file == d


@pytest.mark.parametrize("rank,logs", [(None, True), ("0", True), ("", True), ("1", False)])
def test_only_the_main_rank_logs_skipped_checkpoints(tmp_path, monkeypatch, caplog, rank, logs):
    _ckpt(tmp_path, 10)
    (_ckpt(tmp_path, 20) / "optimizer.pt").write_bytes(b"O")
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    with caplog.at_level(logging.WARNING, logger="train"):
        assert ck.resolve_resume("auto", tmp_path).name == "checkpoint-10"
    got = [r.getMessage() for r in caplog.records if r.name == "train"]
    assert got == (["skipping checkpoint-20: optimizer.pt is 1 bytes, the marker says 128"] if logs else [])


# ---------------------------------------------------------------- callbacks
def _state(step, zero=True):
    return TrainerState(global_step=step, is_world_process_zero=zero)


def test_completion_marker_callback_marks_the_step_folder_and_clears_the_cache(tmp_path):
    d = tmp_path / "checkpoint-7"
    d.mkdir()
    (d / "adapter_model.safetensors").write_bytes(b"A" * 8)
    assert ck.verify(d) == f"no completion marker {ck.MARKER}"  # cached
    control = TrainerControl()
    got = ck.CompletionMarker().on_save(SimpleNamespace(output_dir=str(tmp_path)), _state(7), control)
    assert got is control
    assert json.loads((d / ck.MARKER).read_text())["step"] == 7
    assert ck.verify(d) is None  # the cached "no marker" was dropped


def test_completion_marker_callback_with_nothing_cached(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-2" / "adapter_model.safetensors").write_bytes(b"A")
    ck.CompletionMarker().on_save(SimpleNamespace(output_dir=str(tmp_path)), _state(2), TrainerControl())
    assert ck.verify(tmp_path / "checkpoint-2") is None


def test_completion_marker_callback_only_on_rank_zero_and_only_for_an_existing_folder(tmp_path):
    d = tmp_path / "checkpoint-7"
    d.mkdir()
    args = SimpleNamespace(output_dir=str(tmp_path))
    ck.CompletionMarker().on_save(args, _state(7, zero=False), TrainerControl())
    assert not (d / ck.MARKER).exists()
    ck.CompletionMarker().on_save(args, _state(8), TrainerControl())  # no checkpoint-8: nothing
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-7"]


@pytest.fixture
def restore_signals():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_stop_on_signal_saves_and_stops_at_the_next_step_end(restore_signals, sig):
    cb = ck.StopOnSignal()
    control = TrainerControl()
    assert cb.on_step_end(None, _state(1), control) is control
    assert not (control.should_save or control.should_training_stop or cb.stopped)
    os.kill(os.getpid(), sig)  # the real handler, installed by the callback
    assert cb.requested
    cb.on_step_end(None, _state(2), control)
    assert control.should_save and control.should_training_stop and cb.stopped


def test_stop_on_signal_listens_only_to_the_signals_given(restore_signals):
    cb = ck.StopOnSignal(signals=(signal.SIGUSR1,))
    assert signal.getsignal(signal.SIGUSR1) == cb._handle
    assert signal.getsignal(signal.SIGTERM) != cb._handle


def test_signal_agreement_through_a_real_process_group(restore_signals, tmp_path):
    # One gloo rank: all_reduce(MAX) is exercised for real; a flag of 0 must stay "go on".
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cb = ck.StopOnSignal(signals=())
        assert cb._agreed() is False
        ck._barrier()
        cb.requested = True
        assert cb._agreed() is True
    finally:
        dist.destroy_process_group()
