"""Checkpoints that are either complete or ignored, and a clean stop on SIGTERM / SIGUSR1.

Trainer resumes from the highest-numbered `checkpoint-N` even if it was half-written when the job
died. Here every rank finishes writing, then rank 0 writes `opclaim_complete.json` last; resume
takes the newest checkpoint *with* that marker and moves marker-less ones aside.

On SIGTERM or SIGUSR1 (SLURM sends one before the time limit with `--signal=B:USR1@120`), the
ranks agree at the next step end, save a complete checkpoint and exit with EXIT_REQUEUE (75,
EX_TEMPFAIL): "stopped on purpose, state saved, run the same command again to continue".
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from pathlib import Path

from transformers import TrainerCallback

MARKER = "opclaim_complete.json"
EXIT_REQUEUE = 75
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def is_complete(ckpt: Path) -> bool:
    return (Path(ckpt) / MARKER).is_file()


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


def set_aside_incomplete(output_dir: str | Path) -> list[Path]:
    """Rename marker-less checkpoints so neither resume nor rotation ever picks them (main rank only)."""
    moved = []
    for p in checkpoints(output_dir):
        if not is_complete(p):
            dest = p.with_name(f"incomplete-{p.name}-{int(time.time())}")
            p.rename(dest)
            moved.append(dest)
    return moved


def resolve_resume(setting, output_dir) -> Path | None:
    """None/"auto" -> newest complete checkpoint (or None); "never"/"false" -> None; else a path."""
    if setting in (None, "", "auto", True, "true", "True"):
        return newest_complete(output_dir)
    if str(setting).lower() in ("never", "false", "no"):
        return None
    p = Path(setting)
    if not is_complete(p):
        from opclaim.errors import InputError

        raise InputError(f"checkpoint has no completion marker {MARKER}", file=p, field="resume_from_checkpoint")
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
                tmp = ckpt / f".{MARKER}.part"
                tmp.write_text(json.dumps({"step": state.global_step, "time": time.time()}) + "\n")
                os.replace(tmp, ckpt / MARKER)
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
