"""Retrieval-tuned training prompts: each training case with the nearest *other* training claims.

The examples come from the training index with the case itself left out (never its own claim:
that would teach copying the answer). A seeded share of cases gets distractors instead (RAFT,
arXiv:2403.10131): claims of another service, or random other claims when the data has one
service, so the model learns to read the note rather than copy the first example.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from opclaim.claim import Case, Claim
from opclaim.errors import InputError

MODES = ("finetuned", "rag", "mixed")
DISTRACTORS = ("other-service", "random")


@dataclass
class Plan:
    """Per training case: the ids of its example claims and whether they are distractors."""

    example_ids: list[list[str]]
    distractor: list[bool]

    def share(self) -> float:
        return sum(self.distractor) / len(self.distractor) if self.distractor else 0.0


def check_args(dargs) -> None:
    if dargs.prompt_mode not in MODES:
        raise InputError(f"unknown prompt_mode {dargs.prompt_mode!r}; known: {', '.join(MODES)}",
                         field="prompt_mode")
    if dargs.prompt_mode == "finetuned":
        return
    if not dargs.rag_index:
        raise InputError(f"prompt_mode {dargs.prompt_mode} needs rag_index (an index of train_file: "
                         "`opclaim rag build --train TRAIN --out DIR`)", field="rag_index")
    if not isinstance(dargs.rag_k, int) or dargs.rag_k < 1:
        raise InputError("must be a positive integer", field="rag_k")
    if not 0.0 <= dargs.rag_distractor_share <= 1.0:
        raise InputError("must be between 0 and 1", field="rag_distractor_share")
    if dargs.rag_distractors not in DISTRACTORS:
        raise InputError(f"unknown rag_distractors {dargs.rag_distractors!r}; known: {', '.join(DISTRACTORS)}",
                         field="rag_distractors")


def plan(cases: list[Case], retriever, *, k: int, share: float, kind: str, seed: int) -> Plan:
    """Which training claims each case's prompt shows. Nearest neighbours come from `retriever`
    (excluding the case's own id); exactly round(share * n) cases, chosen by `seed`, get distractors."""
    if not cases:
        return Plan([], [])
    rng = random.Random(seed)
    n_dis = round(share * len(cases))
    chosen = set(rng.sample(range(len(cases)), n_dis))
    near = retriever.neighbours(retriever.embed([c.note for c in cases]), k, [c.id for c in cases])
    ids = retriever.ids
    service = {c.id: c.service for c in cases}  # the index stores claims, not services
    one_service = len(set(service.values())) < 2
    out_ids, dis = [], []
    for i, (case, hits) in enumerate(zip(cases, near, strict=True)):
        if i in chosen:
            nearest = {j for j, _ in hits}
            other = kind == "other-service" and not one_service

            def ok(j, case=case, nearest=nearest, other=other):
                return ids[j] != case.id and j not in nearest and (not other or service.get(ids[j]) != case.service)

            out_ids.append([ids[j] for j in _draw(rng, len(ids), k, ok)])
            dis.append(True)
        else:
            out_ids.append([ids[j] for j, _ in hits])
            dis.append(False)
        if case.id in out_ids[-1]:  # the retriever's exclusion, checked where it matters
            raise AssertionError("a training prompt would show the case its own claim")
    return Plan(out_ids, dis)


def _draw(rng: random.Random, n: int, k: int, ok) -> list[int]:
    """k distinct rows of range(n) passing `ok`, by rejection (the index can hold 192k claims), then
    by a scan when they are rare."""
    got: list[int] = []
    for _ in range(50 * k):
        j = rng.randrange(n)
        if j not in got and ok(j):
            got.append(j)
            if len(got) == k:
                return got
    rest = [j for j in range(n) if j not in got and ok(j)]
    got += rng.sample(rest, min(k - len(got), len(rest)))
    if len(got) < k:
        raise InputError(f"the training index has fewer than {k} claims to use as distractors",
                         field="rag_distractor_share")
    return got


def examples(plan_: Plan, retriever) -> list[list[Claim]]:
    row = {rid: n for n, rid in enumerate(retriever.ids)}
    return [[retriever.claims[row[i]] for i in ids] for ids in plan_.example_ids]


def load_retriever(dargs):
    """The training index, checked against train_file (leaving a case out works by id)."""
    from rag.retrieve import Retriever

    return Retriever.load(dargs.rag_index, train_file=dargs.train_file)


def facts(dargs, plan_: Plan | None) -> dict:
    """What the run record keeps about retrieval (no case ids, no text)."""
    if dargs.prompt_mode == "finetuned":
        return {}
    from pathlib import Path

    from opclaim.artifacts import folder_fingerprint

    return {"index": str(Path(dargs.rag_index).resolve()), "index_fingerprint": folder_fingerprint(
        Path(dargs.rag_index)), "k": dargs.rag_k, "distractor_share": dargs.rag_distractor_share,
            "distractors": dargs.rag_distractors,
            "distractor_share_actual": round(plan_.share(), 4) if plan_ else None}
