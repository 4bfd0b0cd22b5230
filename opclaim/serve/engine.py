"""The one adapter between the service and inference (infer/ + eval.extract).

Everything the server needs from a model goes through `Engine`: prompt rendering, one batched
greedy decode with the study's settings, and turning an output into a claim with per-code rows.
When infer/ is reorganised, only this file changes.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import opclaim  # noqa: F401  (offline environment before transformers)
from opclaim.errors import InputError

DEFAULT_MAX_NEW_TOKENS = 512  # the study's budget


@dataclass
class Suggestion:
    claim: dict
    codes: list[dict]
    output: str
    flags: list[str] = field(default_factory=list)
    latency_s: float = 0.0
    batch_size: int = 1


def bundle_digest(bundle_dir: str | Path | None) -> str | None:
    """sha256 of the signed manifest: names every file's hash, so it identifies the bundle."""
    if not bundle_dir:
        return None
    from opclaim.bundle import MANIFEST

    return hashlib.sha256((Path(bundle_dir) / MANIFEST).read_bytes()).hexdigest()


def _cpt_descriptions(text: str) -> dict[str, str]:
    """CPT -> the description the model wrote, when the output is in the target format (CPT
    descriptions are licensed: the claim is the only source here)."""
    from opclaim.claim import parse_target

    try:
        claim = parse_target(text)
    except InputError:
        return {}
    return {ln.cpt: ln.description for p in claim.providers for ln in p.lines if ln.description}


def claim_from_output(text: str, confidence: dict | None = None) -> tuple[dict, list[dict]]:
    """(claim dict, code rows) from one model output. Malformed codes are dropped; codes that
    parse but are not billable/known stay, marked valid=False, so the coder sees them.
    `confidence` (eval/confidence.py, from the decoding) fills each row's confidence: the code's
    token-probability product (uncalibrated; a CPT row's is its code's best line)."""
    from eval.confidence import code_scores

    scores = code_scores(confidence)
    routes: dict[tuple[str, str], str] = {}
    for c in (confidence or {}).get("codes", []):  # calibrated: the route `opclaim infer --calibration` gives
        if c.get("route") is not None:
            key = (c.get("system"), c.get("code"))
            routes[key] = "review" if routes.get(key) == "review" else c["route"]
    from eval.extract import extract
    from opclaim.claim import Claim
    from opclaim.codes import icd10_description, is_billable_icd10

    ex = extract(text)
    descriptions = _cpt_descriptions(text)
    providers: dict[str, list[dict]] = {}
    for prov, cpt, mods in ex.lines:
        providers.setdefault(prov or "Unknown", []).append(
            {"cpt": cpt, "modifiers": list(mods), "description": descriptions.get(cpt, "")})
    raw = {"icd10": list(ex.icd10), "providers": [{"name": n, "lines": ls} for n, ls in providers.items()]}
    try:
        claim = Claim.from_dict(raw).to_dict()
    except InputError:  # an odd code the extractor let through: keep what normalises
        claim = {"icd10": [], "providers": []}
        for c in ex.icd10:
            try:
                claim["icd10"].append(Claim.from_dict({"icd10": [c]}).icd10[0])
            except InputError:
                pass
    rows = [{"system": "icd10", "code": c, "description": icd10_description(c),
             "valid": is_billable_icd10(c), "modifiers": None, "confidence": scores["icd10"].get(c),
             "route": routes.get(("icd10", c)), "evidence": None} for c in claim["icd10"]]
    for p in claim["providers"]:
        for ln in p["lines"]:
            rows.append({"system": "cpt", "code": ln["cpt"], "description": ln.get("description") or None,
                         "valid": True, "modifiers": ln["modifiers"], "provider": p["name"],
                         "confidence": scores["cpt"].get(ln["cpt"]),
                         "route": routes.get(("cpt", ln["cpt"])), "evidence": None})
    return claim, rows


def add_evidence(note: str, claim: dict, rows: list[dict]) -> None:
    """Each row's evidence: the note sentence that best supports the code (eval/evidence.py,
    BM25 against the code's description; character offsets), [] when none reaches the floor."""
    from eval import evidence

    found = evidence.find(note, claim, "bm25")
    for r in rows:
        ev = found.get((r["system"], r["code"]))
        if ev is not None:
            r["evidence"] = [] if ev["no_evidence"] else [{"start": s, "end": e} for s, e in ev["spans"]]


class Engine:
    """One model in memory. `generate` is called from one worker thread only."""

    def __init__(self, model_dir: str | Path, adapter: str | Path | None = None, *, mode: str = "finetuned",
                 rag_index: str | Path | None = None, k: int = 2, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 bundle_dir: str | Path | None = None, constrain: dict | None = None,
                 repetition_scope: str = "prompt", calibration: str | Path | None = None):
        """`constrain`: {"icd_ref", "cpt_ref", "cpt_from", "mod_ref", "cache"} (values may be None) to
        decode with infer.constrain's claim grammar, as `opclaim infer --constrain`. `calibration`:
        cal.json from `opclaim calibrate`, as `opclaim infer --calibration` (p_cal and route per code)."""
        from infer import engines, loading

        if rag_index:
            mode = "rag"
        if mode == "rag" and not rag_index:
            raise InputError("rag mode needs --rag-index DIR", field="--rag-index")
        # as `opclaim infer`: weights run only in the prompt mode they were trained with
        loading.check_mode(loading.weights_mode(model_dir, adapter), mode, k)
        self.calibration = None
        if calibration:
            from eval.calibrate import Calibration
            from opclaim import artifacts

            self.calibration = artifacts.load(Calibration, calibration)  # before the model: fails fast
        self.loaded = loading.load(model_dir, adapter)
        self.mode, self.k, self.max_new_tokens = mode, k, max_new_tokens
        self.retriever = None
        if rag_index:
            from rag.retrieve import Retriever

            self.retriever = Retriever.load(rag_index)
            self.mode = "rag"
        info = self.loaded.info
        self.model_id = "model:" + info["model_fingerprint"] + (
            f"+adapter:{info['adapter_fingerprint']}" if info.get("adapter_fingerprint") else "")
        self.bundle_digest = bundle_digest(bundle_dir)
        self.context = self.loaded.context
        grammar = None
        if constrain is not None:
            from infer import constrain as cg

            lists = cg.code_lists(constrain.get("icd_ref"), constrain.get("cpt_ref"), constrain.get("cpt_from"),
                                  constrain.get("mod_ref"))
            cache = constrain.get("cache")
            grammar = cg.for_model(self.loaded, lists, cache=Path(cache) if cache else None)
            self.model_id += f"+grammar:{grammar.key[-16:]}"
        self.constrained = grammar is not None
        self._engine = engines.HFEngine(self.loaded, grammar=grammar, repetition_scope=repetition_scope)

    def render(self, notes: list[str]) -> list[str]:
        return self._render(notes)[0]

    def _render(self, notes: list[str]) -> tuple[list[str], list]:
        """(prompts, the RAG examples each shows: None entries outside rag mode)."""
        import prompts

        examples = [None] * len(notes)
        if self.retriever is not None:
            examples = self.retriever.examples_batch(notes, k=self.k)
        return [prompts.prompt(n, self.mode, fmt=self.loaded.fmt, tokenizer=self.loaded.tokenizer, examples=ex)
                for n, ex in zip(notes, examples, strict=True)], examples

    def generate(self, notes: list[str]) -> list[Suggestion]:
        """One batch, as `opclaim infer` decodes it: greedy, study settings, budget capped by the
        context, too-long prompts answered empty with a flag."""
        from infer import output
        from infer.batch import decode_batch

        t0 = time.perf_counter()
        texts, shown = self._render(notes)
        lengths = [self._engine.count_tokens(p) for p in texts]
        ok = [i for i, n in enumerate(lengths) if not (self.context and n >= self.context)]
        outs = {i: ("", [output.FLAG_TOO_LONG], None) for i in range(len(notes)) if i not in ok}
        if ok:  # the same batch step as `opclaim infer` (infer/batch.py): flags, confidence, calibration
            decoded = decode_batch(self._engine, [texts[i] for i in ok], [lengths[i] for i in ok],
                                   max_new_tokens=self.max_new_tokens, constrained=self.constrained,
                                   calibration=self.calibration,
                                   examples=[shown[i] for i in ok])
            for i, d in zip(ok, decoded, strict=True):
                outs[i] = (d["output"], d["flags"], d.get("confidence"))
        latency = round(time.perf_counter() - t0, 4)
        result = []
        for i in range(len(notes)):
            text, flags, conf = outs[i]
            claim, rows = claim_from_output(text, conf)
            add_evidence(notes[i], claim, rows)
            result.append(Suggestion(claim, rows, text, flags, latency, len(notes)))
        return result


def load_engine(model_dir, adapter=None, **kw) -> Engine:
    return Engine(model_dir, adapter, **kw)
