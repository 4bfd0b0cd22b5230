"""Data-parallel inference: `accelerate launch --num_processes N -m infer ...`.

Cases not yet done are sorted by id and split across ranks with accelerate (its padding repeats
the last items so every rank gets the same count). Each rank writes its own shard file
(PRED.rankR-of-N) through the ordinary resumable run; rank 0 holds PRED's lock for the whole
job, merges the shards, drops the duplicates, and writes the final file in input order. Greedy
decoding is deterministic, so N ranks give exactly the one-process output (given the same batch
composition; see docs/inference.md).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from infer import output
from infer.run import run
from opclaim.artifacts import shard_path


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def run_sharded(cases, prompts_text, engine, out: Path, config: dict, *, progress: bool = True,
                cases_id=None, force_new: bool = False, lock: bool = True, **kwargs):
    """Run this rank's share; on rank 0 merge everything. Returns stats on rank 0, None elsewhere.
    `lock=False`: rank 0's caller already holds PRED's lock."""
    import torch
    from accelerate import PartialState

    # cpu=True makes accelerate join the ranks over gloo when there is no GPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    rank, n = state.process_index, state.num_processes
    cases_id = cases_id or output.cases_identity(cases)
    # A failure here ends this rank; the launcher then stops the others.
    with output.locked(out) if lock and state.is_main_process else contextlib.nullcontext():
        if force_new and state.is_main_process:
            output.start_over(out)
        state.wait_for_everyone()
        have = output.check_resume(out, config, cases_id)  # every rank reads the same files: same answer
        todo = sorted((i for i, c in enumerate(cases) if c.id not in have), key=lambda i: cases[i].id)
        mine: list[int] = []
        if todo:
            with state.split_between_processes(todo, apply_padding=True) as part:
                mine = list(part)
        shard = shard_path(out, rank, n)
        if mine:
            run([cases[i] for i in mine], [prompts_text[i] for i in mine], engine, shard,
                {**config, "shard": f"{rank}/{n}"}, progress=progress and rank == 0, **kwargs)
        state.wait_for_everyone()
        stats = None
        if state.is_main_process:
            rows = dict(have)
            shards = [shard_path(out, r, n) for r in range(n)]
            for s in shards:
                for i, row in output.read_rows(s).items():
                    rows.setdefault(i, row)  # padding duplicates: first copy wins
            n_rows = output.finalize(out, [c.id for c in cases], rows, config, cases_id, ranks=n)
            for s in shards:
                for f in (s, output.run_record(s), output.partial(s)):
                    f.unlink(missing_ok=True)
            stats = {"rows": n_rows, "generated": len(set(todo)), "skipped": len(cases) - len(todo),
                     "too_long": sum(1 for r in rows.values() if output.FLAG_TOO_LONG in r.get("flags", []))}
        state.wait_for_everyone()
    return stats
