"""The inference part of `opclaim doctor`: merge a few-step adapter, then one batched and one
constrained generation on each available engine, checking that batched outputs equal the
one-at-a-time outputs. Outputs are compared, never reported (they are made from note prompts).
"""

from __future__ import annotations

import time
from pathlib import Path

import opclaim  # noqa: F401

MAX_NEW_TOKENS = 24


def small_code_lists(cases):
    """The codes of the given cases plus a few hundred billable ICD codes: compiling the full list
    (74,736 codes) takes about a minute, which is the grammar's cost, not the engine's."""
    from infer.constrain import CodeLists, synth_cpt_codes
    from opclaim.codes import icd10_billable, modifier_table

    icd = set(sorted(icd10_billable())[:300]) | {c for case in cases for c in case.claim.icd10_set()}
    cpt = set(synth_cpt_codes()) | {c for case in cases for c in case.claim.cpt_set()}
    mods = sorted(set(modifier_table()) | {m for case in cases for m in case.claim.modifier_set()})
    return CodeLists(sorted(icd), sorted(cpt), mods, {"icd10": f"doctor subset ({len(icd)})",
                                                      "cpt": f"synthetic catalog + cases ({len(cpt)})",
                                                      "modifiers": "opclaim modifier table"})


def _same(engine, prompts_text) -> dict:
    t0 = time.perf_counter()
    batched, _ = engine.generate(prompts_text, MAX_NEW_TOKENS)
    took = time.perf_counter() - t0
    single = [engine.generate([p], MAX_NEW_TOKENS)[0][0] for p in prompts_text]
    return {"prompts": len(prompts_text), "batched_equals_single": batched == single,
            "batched_s": round(took, 2), "nonempty": sum(1 for t in batched if t)}


def run(model_dir: Path, adapter_dir: Path, merged_dir: Path, cases, *, grammar_cache: Path) -> dict:
    import torch

    from infer import constrain, loading
    from infer.engines import HFEngine, VllmEngine
    from infer.merge import merge
    from infer.render import build_prompts

    t0 = time.perf_counter()
    rec = merge(model_dir, adapter_dir, merged_dir)
    out = {"merge": {"merged_into": rec["merged_into"], "seconds": round(time.perf_counter() - t0, 1)}}
    loaded = loading.load(merged_dir)
    prompts_text = build_prompts(cases, "finetuned", loaded)
    lists = small_code_lists(cases)
    grammar = constrain.for_model(loaded, lists, cache=grammar_cache)
    hf = {"plain": _same(HFEngine(loaded), prompts_text),
          "constrained": _same(HFEngine(loaded, grammar=grammar), prompts_text)}
    out["hf"] = hf
    try:
        VllmEngine.check()
        have_vllm = True
    except Exception:  # noqa: BLE001 - InputError: vllm or a GPU missing
        have_vllm = False
    if have_vllm and torch.cuda.is_available():
        ebnf = constrain.claim_ebnf(loaded.fmt, lists, private_markers=False)
        out["vllm"] = {"plain": _same(VllmEngine(merged_dir, loaded), prompts_text),
                       "constrained": _same(VllmEngine(merged_dir, loaded, ebnf=ebnf), prompts_text)}
    return out
