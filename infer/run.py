"""One inference run: prompts sorted by token length and cut into batches, streamed to PRED.partial,
written back in input order as PRED when every case is done (files: infer/output.py).

Prompts of similar length share a batch (left padding), so little compute goes to padding. A
batch decodes with its engine (infer/engines.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from eval import calibrate, confidence
from infer import output
from infer.engines import STUDY
from infer.output import FLAG_CAPPED, FLAG_TOO_LONG, FLAG_TRUNCATED
from opclaim.io import open_private_append


def buckets(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by prompt length (longest first: memory problems show up at once), in batches."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def trim_incomplete(text: str) -> str:
    """Drop the unfinished item after the last separator: a constrained output cut off by the
    token budget could otherwise end in half a code (e.g. 'K80.2' of 'K80.20')."""
    cut = max(text.rfind(","), text.rfind("\n"))
    return text[:cut] if cut >= 0 else ""


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
            longest = max(lengths[ok[b]] for b in batch)
            budget = min(max_new_tokens, ctx - longest) if ctx else max_new_tokens
            t0 = time.perf_counter()
            texts, truncated = engine.generate([prompts_text[i] for i in idx], budget)
            # Amortised per-case cost: the batch's wall time shared by its cases.
            latency = round((time.perf_counter() - t0) / len(idx), 4)
            token_probs = getattr(engine, "last_token_probs", None) or [None] * len(idx)
            shown = getattr(engine, "examples", None) or {}
            cal = getattr(engine, "calibration", None)
            for i, text, cut, tp in zip(idx, texts, truncated, token_probs, strict=False):
                flags = []
                if cut:
                    flags.append(FLAG_TRUNCATED)
                    if constrained:
                        text = trim_incomplete(text)
                if budget < max_new_tokens:
                    flags.append(FLAG_CAPPED)
                row = {"id": cases[i].id, "config": label, "output": text, "latency_s": latency}
                if flags:
                    row["flags"] = flags
                if tp is not None:
                    row["confidence"] = confidence.score_output(
                        text, tp, masked=constrained and getattr(engine, "processed", True))
                    if cases[i].id in shown:
                        confidence.add_agreement(row["confidence"], shown[cases[i].id])
                    if cal is not None:
                        calibrate.annotate(row["confidence"], cal)
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
