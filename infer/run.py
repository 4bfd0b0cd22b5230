"""One inference run: prompts sorted by token length and cut into batches, streamed to PRED.partial,
written back in input order as PRED when every case is done (files: infer/output.py).

Prompts of similar length share a batch (left padding), so little compute goes to padding. A
batch decodes with its engine (infer/engines.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from infer import output
from infer.batch import decode_batch, trim_incomplete  # noqa: F401  (trim_incomplete: re-exported)
from infer.engines import STUDY
from infer.output import FLAG_TOO_LONG
from opclaim.io import open_private_append


def buckets(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by prompt length (longest first: memory problems show up at once), in batches."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def run(cases, prompts_text: list[str], engine, out: str | Path, config: dict, *,
        batch_size: int = 8, max_new_tokens: int = STUDY["max_new_tokens"], progress: bool = True,
        on_batch=None, cases_id=None, force_new: bool = False, lock: bool = True) -> dict:
    """Generate for every case not already in `out`; returns counts. The file is 0600: outputs
    can echo note text. `cases_id` (output.cases_identity) ties the output to its cases file;
    by default it is computed from the records. `lock=False`: the caller already holds PRED's lock."""
    import contextlib

    out = Path(out)
    cases_id = cases_id or output.cases_identity(cases)
    with output.locked(out) if lock else contextlib.nullcontext():
        if force_new:
            output.start_over(out)
        return _run_locked(cases, prompts_text, engine, out, config, cases_id, batch_size=batch_size,
                           max_new_tokens=max_new_tokens, progress=progress, on_batch=on_batch)


def _run_locked(cases, prompts_text, engine, out: Path, config: dict, cases_id, *, batch_size: int,
                max_new_tokens: int, progress: bool, on_batch) -> dict:
    from tqdm import tqdm

    constrained = bool(config.get("constrain"))
    have = output.check_resume(out, config, cases_id)
    output.drop_torn_tail(output.partial(out))  # its case is not in `have`: generated again
    output.write_run_record(out, config, cases_id, False, len(have))
    todo = [i for i, c in enumerate(cases) if c.id not in have]
    lengths = [engine.count_tokens(prompts_text[i]) for i in todo]
    ctx = engine.context
    too_long = {j for j, n in enumerate(lengths) if ctx and n >= ctx}
    ok = [j for j in range(len(todo)) if j not in too_long]
    label = config.get("config_name") or config.get("mode")
    n_done = 0
    # The bar shows counts only: never case ids or text.
    bar = tqdm(total=len(todo), desc=f"infer {label}", unit="case", disable=not progress, leave=False)
    with open_private_append(output.partial(out)) as fh:
        for j in sorted(too_long):
            row = {"id": cases[todo[j]].id, "config": label, "output": "", "latency_s": 0.0,
                   "flags": [FLAG_TOO_LONG]}
            fh.write(json.dumps(row) + "\n")
            have[row["id"]] = row
            bar.update(1)
        fh.flush()
        for batch in buckets([lengths[j] for j in ok], batch_size):
            idx = [todo[ok[b]] for b in batch]
            t0 = time.perf_counter()
            shown = getattr(engine, "examples", None) or {}
            decoded = decode_batch(engine, [prompts_text[i] for i in idx], [lengths[ok[b]] for b in batch],
                                   max_new_tokens=max_new_tokens, constrained=constrained,
                                   calibration=getattr(engine, "calibration", None),
                                   examples=[shown.get(cases[i].id) for i in idx])
            # Amortised per-case cost: the batch's wall time shared by its cases.
            latency = round((time.perf_counter() - t0) / len(idx), 4)
            for i, d in zip(idx, decoded, strict=True):
                row = {"id": cases[i].id, "config": label, "output": d["output"], "latency_s": latency}
                if d["flags"]:
                    row["flags"] = d["flags"]
                if "confidence" in d:
                    row["confidence"] = d["confidence"]
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                have[row["id"]] = row
            fh.flush()
            n_done += len(idx)
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(n_done)
    bar.close()
    n = output.finalize(out, [c.id for c in cases], have, config, cases_id)
    return {"rows": n, "generated": n_done, "skipped": len(cases) - len(todo), "too_long": len(too_long)}
