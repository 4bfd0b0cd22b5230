"""Per-code confidence from the decoding itself: for each ICD-10-CM code, CPT line and modifier in
a generated claim, the product of the probabilities the model gave that code's tokens.

A code's characters in the output are found first (`code_spans`); its tokens are the generated
tokens whose characters overlap them (offsets from infer.engines.token_offsets). Two products:
- `p`: under the distribution decoding picked from (repetition penalty and, when constrained, the
  grammar mask; softmax renormalised over the allowed tokens). `masked` says whether a grammar
  was on.
- `p_model`: under the model's raw distribution (no penalty, no mask); null from vLLM, which
  returns one distribution per run (its processed logprobs: infer/engines.VllmEngine).

The row field (artifacts.PredictionRow.confidence):
    {"method": "token_prob", "masked": bool,
     "codes": [{"system": "icd10"|"cpt"|"modifiers", "code": "K80.20" | "47562" | "47562-80",
                "line": int | None, "span": [start, end], "p": float, "p_model": float}, ...]}
"""

from __future__ import annotations

import math
import re

from eval.extract import extract

SYSTEMS = ("icd10", "cpt", "modifiers")
_CPT_LINE_RE = re.compile(r"CPT\s*\d{1,3}\s*[:.)]\s*(\d{4}[0-9FTU]|[A-V]\d{4})(?![0-9A-Za-z])([^\n]*)", re.I)
_MODS_RE = re.compile(r"\|\s*Modifiers?\s*:\s*([^|\n]*)", re.I)
_MOD_RE = re.compile(r"(?<![0-9A-Za-z])([0-9A-Za-z]{2})(?![0-9A-Za-z])")


def code_spans(text: str) -> list[dict]:
    """Each scored code of the output with its character span: {"system", "code", "line", "span"}.
    Codes are those eval.extract scores; one whose characters cannot be found is left out."""
    ext = extract(text)
    found: list[dict] = []
    icd_from = 0
    m = re.search(r"ICD[-\s]?10", text, re.I)
    if m:
        icd_from = m.end()
    for code in ext.icd10:
        for form in (code, code.replace(".", "")):
            hit = re.compile(rf"(?<![0-9A-Za-z.]){re.escape(form)}(?![0-9A-Za-z])", re.I).search(text, icd_from)
            if hit:
                found.append({"system": "icd10", "code": code, "line": None, "span": [hit.start(), hit.end()]})
                break
    cpts, mods = set(ext.cpt), set(ext.modifiers)
    for line, lm in enumerate(_CPT_LINE_RE.finditer(text)):
        cpt = lm.group(1).upper()
        if cpt not in cpts:
            continue
        found.append({"system": "cpt", "code": cpt, "line": line, "span": [lm.start(1), lm.end(1)]})
        mm = _MODS_RE.search(lm.group(2))
        if not mm:
            continue
        base = lm.start(2) + mm.start(1)
        for tok in _MOD_RE.finditer(mm.group(1)):
            pair = f"{cpt}-{tok.group(1).upper()}"
            if pair in mods:
                found.append({"system": "modifiers", "code": pair, "line": line,
                              "span": [base + tok.start(1), base + tok.end(1)]})
    return found


def span_product(tokens: list[tuple], start: int, end: int) -> tuple[float, float | None, int]:
    """(product of p, product of p_model, number of tokens) over tokens overlapping [start, end).
    p_model is None when the engine did not give it (vLLM returns one distribution)."""
    lp = lpm = 0.0
    n = 0
    for s, e, p, pm, *_ in tokens:
        if s < end and e > start:
            lp += math.log(max(p, 1e-300))
            lpm = None if pm is None or lpm is None else lpm + math.log(max(pm, 1e-300))
            n += 1
    return math.exp(lp), (None if lpm is None else math.exp(lpm)), n


def score_output(text: str, tokens: list[tuple], *, masked: bool) -> dict:
    """The row's `confidence` field for one generated output and its token probabilities."""
    codes = []
    for c in code_spans(text):
        p, pm, n = span_product(tokens, *c["span"])
        if n:
            codes.append({**c, "p": round(p, 6), "p_model": None if pm is None else round(pm, 6)})
    return {"method": "token_prob", "masked": masked, "codes": codes}


def add_agreement(conf: dict, examples) -> dict:
    """The neighbours' agreement of each code: the share of the prompt's example claims (rag mode)
    that carry it (ICD-10-CM in the diagnoses, CPT on a line, a CPT-modifier pair on a line), as `agree`."""
    sets = {"icd10": [], "cpt": [], "modifiers": []}
    for ex in examples:
        sets["icd10"].append(set(ex.icd10))
        lines = [ln for p in ex.providers for ln in p.lines]
        sets["cpt"].append({ln.cpt for ln in lines})
        sets["modifiers"].append({f"{ln.cpt}-{m}" for ln in lines for m in ln.modifiers})
    for c in conf.get("codes", []):
        have = sets.get(c.get("system"))
        if have:
            c["agree"] = round(sum(c["code"] in h for h in have) / len(have), 6)
    return conf


def code_scores(confidence: dict | None, key: str = "p") -> dict[str, dict[str, float]]:
    """system -> code -> score for a row's confidence field; a code on several lines keeps its best."""
    out: dict[str, dict[str, float]] = {s: {} for s in SYSTEMS}
    for c in (confidence or {}).get("codes", []):
        v = c.get(key)
        if v is None or c.get("system") not in out:
            continue
        d = out[c["system"]]
        d[c["code"]] = max(d.get(c["code"], 0.0), float(v))
    return out
