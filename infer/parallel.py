"""Data-parallel inference: `accelerate launch --num_processes N -m infer ...`.

Cases not yet done are sorted by id and split across ranks with accelerate (its padding repeats
the last items so every rank gets the same count). Each rank writes its own shard file through
the ordinary resumable writer; rank 0 then merges the shards, drops the duplicates, and writes
the final file in input order. Greedy decoding is deterministic, so N ranks give exactly the
one-process output (given the same batch composition; see README).
"""

from __future__ import annotations

import os
from pathlib import Path

from infer import generate


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def shard_path(out: Path, rank: int, n: int) -> Path:
    return out.with_name(f"{out.name}.rank{rank}-of-{n}")


def run_sharded(cases, prompts_text, engine, out: Path, config: dict, *, progress: bool = True, **kwargs):
    """Run this rank's share; on rank 0 merge everything. Returns stats on rank 0, None elsewhere."""
    import torch
    from accelerate import PartialState

    # cpu=True makes accelerate join the ranks over gloo when there is no GPU.
    state = PartialState(cpu=not torch.cuda.is_available())
    rank, n = state.process_index, state.num_processes
    have = generate.check_resume(out, config)  # every rank reads the same files: same answer
    todo = sorted((i for i, c in enumerate(cases) if c.id not in have), key=lambda i: cases[i].id)
    mine: list[int] = []
    if todo:
        with state.split_between_processes(todo, apply_padding=True) as part:
            mine = list(part)
    shard = shard_path(out, rank, n)
    if mine:
        generate.run([cases[i] for i in mine], [prompts_text[i] for i in mine], engine, shard,
                     {**config, "shard": f"{rank}/{n}"}, progress=progress and rank == 0, **kwargs)
    state.wait_for_everyone()
    stats = None
    if state.is_main_process:
        rows = dict(have)
        shards = [shard_path(out, r, n) for r in range(n)]
        for s in shards:
            for i, row in generate.read_rows(s).items():
                rows.setdefault(i, row)  # padding duplicates: first copy wins
        n_rows = generate.finalize(out, [c.id for c in cases], rows, config, {"ranks": n})
        for s in shards:
            for f in (s, generate.sidecar(s), generate.partial(s)):
                f.unlink(missing_ok=True)
        stats = {"rows": n_rows, "generated": len(set(todo)), "skipped": len(cases) - len(todo),
                 "too_long": sum(1 for r in rows.values() if generate.FLAG_TOO_LONG in r.get("flags", []))}
    state.wait_for_everyone()
    return stats
