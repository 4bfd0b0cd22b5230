"""Checkpoints that are either complete or ignored, and a clean stop on SIGTERM / SIGUSR1.

Trainer resumes from the highest-numbered `checkpoint-N` even if it was half-written when the job
died. Here every rank finishes writing, then rank 0 writes `opclaim_complete.json` last, listing
every file of the checkpoint with its size and sha256. Resume takes the newest checkpoint whose
marker is present *and* whose files still match it (a disk that filled up, a truncated copy or a
torn file fails); each one skipped is named with the reason, and skipped or marker-less ones are
moved aside so neither resume nor rotation picks them.

On SIGTERM or SIGUSR1 (SLURM sends one before the time limit with `--signal=B:USR1@120`), the
ranks agree at the next step end, save a complete checkpoint and exit with EXIT_REQUEUE (75,
EX_TEMPFAIL): "stopped on purpose, state saved, run the same command again to continue".
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import signal
import time
from pathlib import Path

from transformers import TrainerCallback

MARKER = "opclaim_complete.json"
EXIT_REQUEUE = 75
_CKPT = re.compile(r"^checkpoint-(\d+)$")
log = logging.getLogger("train")
_verified: dict[str, str | None] = {}  # checkpoint path -> reason it fails (None: verifies)


def is_complete(ckpt: Path) -> bool:
    return (Path(ckpt) / MARKER).is_file()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def file_manifest(ckpt: str | Path) -> dict[str, dict]:
    """{relative path: {"size", "sha256"}} for every file in the checkpoint except the marker."""
    ckpt = Path(ckpt)
    out = {}
    for p in sorted(ckpt.rglob("*")):
        rel = p.relative_to(ckpt).as_posix()
        if p.is_file() and rel != MARKER and not rel.endswith(".part"):
            out[rel] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    return out


def write_marker(ckpt: str | Path, step: int) -> None:
    ckpt = Path(ckpt)
    body = {"step": step, "time": time.time(), "files": file_manifest(ckpt)}
    tmp = ckpt / f".{MARKER}.part"
    tmp.write_text(json.dumps(body, indent=1) + "\n")
    os.replace(tmp, ckpt / MARKER)


def verify(ckpt: str | Path) -> str | None:
    """None when the checkpoint's files match its marker; else why not (file names, sizes only)."""
    ckpt = Path(ckpt)
    key = str(ckpt.resolve())
    if key in _verified:
        return _verified[key]
    reason = _check(ckpt)
    _verified[key] = reason
    return reason


def _check(ckpt: Path) -> str | None:
    marker = ckpt / MARKER
    if not marker.is_file():
        return f"no completion marker {MARKER}"
    try:
        body = json.loads(marker.read_text(encoding="utf-8"))
        files = body.get("files") if isinstance(body, dict) else None
    except (OSError, ValueError):
        return "completion marker is unreadable"
    if files is None:
        return None  # a marker from before checksums: complete, nothing to compare
    if not isinstance(files, dict) or not files:
        return "completion marker lists no files"
    for rel, want in sorted(files.items()):
        p = ckpt / rel
        if not p.is_file():
            return f"{rel} is missing"
        try:
            size, digest = int(want["size"]), str(want["sha256"])
        except (KeyError, TypeError, ValueError):
            return f"completion marker entry for {rel} is malformed"
        if p.stat().st_size != size:
            return f"{rel} is {p.stat().st_size} bytes, the marker says {size}"
        if _sha256(p) != digest:
            return f"{rel} does not match its sha256 in the marker"
    return None


def checkpoints(output_dir: str | Path) -> list[Path]:
    """checkpoint-N folders, oldest step first."""
    d = Path(output_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if p.is_dir() and (m := _CKPT.match(p.name))]
    return [p for _, p in sorted(found)]


def newest_complete(output_dir: str | Path) -> Path | None:
    done = [p for p in checkpoints(output_dir) if is_complete(p)]
    return done[-1] if done else None


def _main_rank() -> bool:
    return int(os.environ.get("RANK", "0") or 0) == 0


def newest_verified(output_dir: str | Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """(newest checkpoint that has its marker and matches it, [(skipped checkpoint, reason)])."""
    skipped = []
    for p in reversed([p for p in checkpoints(output_dir) if is_complete(p)]):
        reason = verify(p)
        if reason is None:
            return p, skipped
        skipped.append((p, reason))
    return None, skipped


def set_aside_incomplete(output_dir: str | Path) -> list[Path]:
    """Rename marker-less checkpoints (incomplete-*) and ones whose files no longer match their
    marker (corrupt-*) so neither resume nor rotation ever picks them (main rank only)."""
    moved = []
    for p in checkpoints(output_dir):
        prefix = "incomplete" if not is_complete(p) else ("corrupt" if verify(p) else None)
        if prefix:
            dest = p.with_name(f"{prefix}-{p.name}-{int(time.time())}")
            p.rename(dest)
            moved.append(dest)
    return moved


def resolve_resume(setting, output_dir) -> Path | None:
    """None/"auto" -> newest verified checkpoint (or None); "never"/"false" -> None; else a path
    that must verify (InputError, exit 2, saying why not)."""
    if setting in (None, "", "auto", True, "true", "True"):
        found, skipped = newest_verified(output_dir)
        if _main_rank():
            for p, reason in skipped:
                log.warning("skipping %s: %s", p.name, reason)
        return found
    if str(setting).lower() in ("never", "false", "no"):
        return None
    p = Path(setting)
    reason = verify(p)
    if reason is not None:
        from opclaim.errors import InputError

        raise InputError(f"checkpoint cannot be resumed: {reason}", file=p, field="resume_from_checkpoint")
    return p


def _barrier():
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class CompletionMarker(TrainerCallback):
    """Write the marker after every rank has finished writing the checkpoint."""

    def on_save(self, args, state, control, **kwargs):
        _barrier()
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                write_marker(ckpt, state.global_step)
                _verified.pop(str(ckpt.resolve()), None)
        _barrier()
        return control


class StopOnSignal(TrainerCallback):
    """SIGTERM/SIGUSR1 -> save a complete checkpoint at the next step end and stop training."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR1)):
        self.requested = False
        self.stopped = False
        for s in signals:
            signal.signal(s, self._handle)

    def _handle(self, signum, frame):
        self.requested = True

    def _agreed(self) -> bool:
        # Any rank's signal stops every rank at the same step; otherwise collectives would hang.
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        flag = torch.tensor([1.0 if self.requested else 0.0])
        if dist.get_backend() == "nccl":
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item() > 0)

    def on_step_end(self, args, state, control, **kwargs):
        if self._agreed():
            self.stopped = True
            control.should_save = True
            control.should_training_stop = True
        return control
