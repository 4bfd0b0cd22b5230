"""The files of one inference output `PRED` (e.g. preds.jsonl), and resuming into them safely.

- `PRED.partial` grows while the run goes (0600, one row per finished case);
- `PRED.run.json` (artifacts.InferRun) records the run configuration, which cases file the rows
  belong to (its sha256 and the ids' digest) and whether the run completed;
- `PRED` appears atomically, in input order, only when every case is done;
- `PRED.lock` is held (flock) while a run writes, so a second run on the same PRED stops at once.

A rerun with the same configuration and cases skips ids already written. Another configuration
or another cases file is refused (`force_new` starts over), so one file never mixes outputs of two
setups. A torn last line of the partial file (the process was killed mid-write) is dropped and its
case generated again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from pathlib import Path

from opclaim import artifacts
from opclaim.artifacts import InferRun, PredictionRow
from opclaim.errors import InputError
from opclaim.io import atomic_write

FLAG_TOO_LONG = "prompt_exceeds_context"      # empty output: the prompt alone fills the context
FLAG_TRUNCATED = "max_new_tokens_reached"     # no end-of-claim token within the budget
FLAG_CAPPED = "new_tokens_capped_by_context"  # budget cut so prompt + output fit the context

run_record = artifacts.run_record_path
partial = artifacts.partial_path


def cases_identity(cases, cases_file: str | Path | None = None) -> artifacts.CasesIdentity:
    """The cases file's sha256 (the records' canonical JSON when there is no file) and the ids' digest."""
    if cases_file is not None:
        digest = artifacts.sha256_file(cases_file)
    else:
        h = hashlib.sha256()
        for c in cases:
            h.update(json.dumps(c.to_dict(), sort_keys=True, ensure_ascii=False).encode())
            h.update(b"\n")
        digest = h.hexdigest()
    return artifacts.CasesIdentity(sha256=digest, ids_sha256=artifacts.ids_digest(c.id for c in cases),
                                   n=len(cases))


@contextlib.contextmanager
def locked(out: Path):
    """Hold PRED.lock for the duration; InputError at once when another run holds it."""
    path = artifacts.lock_path(Path(out))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError("another run is writing this output (its lock is held); wait for it or use "
                             "another --out", file=out) from None
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # while still held: the next run creates a fresh lock file
    finally:
        os.close(fd)


def start_over(out: Path) -> None:
    """--force-new: remove the output, its run record, partial file and rank shards."""
    out = Path(out)
    for f in [out, run_record(out), partial(out), *out.parent.glob(f"{out.name}.rank*-of-*")]:
        f.unlink(missing_ok=True)


def drop_torn_tail(path: Path) -> bool:
    """Cut a half-written last line off a streaming file; True when one was cut."""
    path = Path(path)
    if not artifacts.torn_tail(path):
        return False
    data = path.read_bytes()
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as fh:
        fh.truncate(keep)
    return True


def check_resume(out: Path, config: dict, cases: artifacts.CasesIdentity) -> dict[str, dict]:
    """Rows already done for this configuration and cases; refuse an output made otherwise."""
    out = Path(out)
    side = run_record(out)
    have = {**artifacts.read_prediction_rows(out),
            **artifacts.read_prediction_rows(partial(out), drop_torn_tail=True)}
    if side.is_file():
        old = artifacts.load(InferRun, side)
        if old.cases != cases:
            what = "a different number of cases" if old.cases.n != cases.n else (
                "the same ids in another file" if old.cases.ids_sha256 == cases.ids_sha256 else "other cases")
            raise InputError(f"output was written for another cases file ({what}); refusing to resume into "
                             "it. Use --force-new to start over, or another --out", file=out)
        if old.config != config:
            diff = sorted(k for k in set(old.config) | set(config) if old.config.get(k) != config.get(k))
            raise InputError(f"output was written by a different run configuration (differs in: "
                             f"{', '.join(diff)}); refusing to resume into it. Use another --out "
                             "(or --force-new to start over)", file=out)
    elif have:
        raise InputError("output exists without its run record (.run.json); refusing to resume into it",
                         file=out)
    return have


def write_run_record(out: Path, config: dict, cases: artifacts.CasesIdentity, complete: bool,
                     n_rows: int = 0, ranks: int | None = None) -> None:
    artifacts.save(InferRun(config=config, cases=cases, complete=complete, rows=n_rows, ranks=ranks),
                   run_record(out))


def read_rows(path: Path) -> dict[str, dict]:
    """A complete prediction file (or a finished shard): id -> row."""
    return artifacts.read_prediction_rows(path)


def finalize(out: Path, order: list[str], rows: dict[str, dict], config: dict,
             cases: artifacts.CasesIdentity, ranks: int | None = None) -> int:
    """Write the complete file in input order (atomically), then drop the partial file."""
    ordered = [PredictionRow.from_dict(rows[i]).to_dict() for i in order if i in rows]
    with atomic_write(out, private=True) as fh:
        for r in ordered:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    write_run_record(out, config, cases, True, len(ordered), ranks)
    partial(out).unlink(missing_ok=True)
    return len(ordered)
