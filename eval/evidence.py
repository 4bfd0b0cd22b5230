"""Evidence: for each suggested code, the note sentence(s) that support it, as character offsets
snapped to sentence or bullet/line boundaries.

Methods (compared by hit@1 against synthetic gold spans, `measure`):
- "bm25": lexical BM25 between the code's description and each note sentence;
- "minilm": cosine similarity of MiniLM embeddings (rag/embed.py, the model already shipped).
Descriptions: ICD-10-CM from the shipped release (opclaim.codes.icd10_description), CPT from the
claim's own line description (CPT descriptors are licensed; none ship).

A suggested code whose best sentence scores below the method's floor is flagged `no_evidence`.
"""

from __future__ import annotations

import math
import re
from collections import Counter

METHODS = ("bm25", "minilm")
FLOORS = {"bm25": 1.0, "minilm": 0.25}
_BOUNDARY_RE = re.compile(r"\n+|(?<=[.!?;])\s+(?=[A-Z0-9(\[])")
_BULLET_RE = re.compile(r"^\s*(?:[-*\u2022]+|\(?\d{1,3}[.)])\s*")
_WORD_RE = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an and the of with without or to in on for by at as is was were be unspecified other "
                  "not elsewhere classified nos".split())


def sentences(note: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence or line of the note, whitespace and bullet markers trimmed."""
    spans, pos = [], 0
    for m in [*_BOUNDARY_RE.finditer(note), None]:
        end = m.start() if m else len(note)
        seg = note[pos:end]
        lead = len(seg) - len(seg.lstrip())
        b = _BULLET_RE.match(seg[lead:])
        if b:
            lead += b.end()
        s, e = pos + lead, pos + len(seg.rstrip())
        if e > s:
            spans.append((s, e))
        pos = m.end() if m else len(note)
    return spans


def _words(text: str) -> list[str]:
    return [w for w in _WORD_RE.findall(text.lower()) if w not in _STOP]


def bm25_scores(query: str, docs: list[str], k1: float = 1.2, b: float = 0.75) -> list[float]:
    toks = [_words(d) for d in docs]
    n = len(toks)
    if not n:
        return []
    avg = sum(map(len, toks)) / n or 1.0
    df = Counter(w for t in toks for w in set(t))
    q = set(_words(query))
    out = []
    for t in toks:
        tf = Counter(t)
        s = 0.0
        for w in q:
            if tf[w]:
                idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                s += idf * tf[w] * (k1 + 1) / (tf[w] + k1 * (1 - b + b * len(t) / avg))
        out.append(s)
    return out


def minilm_matrix(queries: list[str], docs: list[str]):
    """Cosine similarities [queries, docs], one embedding call per note."""
    import numpy as np

    from rag.embed import embed

    if not docs or not queries:
        return np.zeros((len(queries), len(docs)))
    vecs = np.asarray(embed([*queries, *docs], progress=False))
    return vecs[len(queries):] @ vecs[:len(queries)].T


def descriptions(claim_dict: dict) -> dict[tuple[str, str], str]:
    """(system, code) -> description for a claim {"icd10": [...], "providers": [...]}."""
    from opclaim.codes import icd10_description

    out = {}
    for c in claim_dict.get("icd10", []):
        out[("icd10", c)] = icd10_description(c) or c
    for p in claim_dict.get("providers", []):
        for ln in p.get("lines", []):
            out.setdefault(("cpt", ln["cpt"]), ln.get("description") or ln["cpt"])
    return out


def find(note: str, claim_dict: dict, method: str = "bm25", top: int = 1) -> dict[tuple[str, str], dict]:
    """(system, code) -> {"spans": [[start, end], ...] best first, "score": best, "no_evidence": bool}."""
    if method not in METHODS:
        raise ValueError(f"unknown evidence method {method!r}")
    spans = sentences(note)
    texts = [note[s:e] for s, e in spans]
    out = {}
    descs = descriptions(claim_dict)
    sims = minilm_matrix(list(descs.values()), texts) if method == "minilm" else None
    for qi, (key, desc) in enumerate(descs.items()):
        scores = bm25_scores(desc, texts) if sims is None else [float(v) for v in sims[:, qi]]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[:top]
        best = scores[order[0]] if order else 0.0
        out[key] = {"spans": [list(spans[i]) for i in order], "score": round(float(best), 4),
                    "no_evidence": best < FLOORS[method]}
    return out


def for_run(run, refs, method: str = "bm25") -> list[dict]:
    """Per case of an eval Run: (system, code) -> find()'s result for each predicted code; a
    modifier pair ("47562-80") shares its CPT line's evidence. CPT descriptions from the reference
    list (the output's own descriptions are the model's words, not the code's)."""
    out = []
    for case, s in zip(run.cases, run.scores, strict=True):
        ex = s.extraction
        if not (ex.icd10 or ex.cpt):
            out.append({})
            continue
        claim = {"icd10": list(ex.icd10), "providers": [{"lines": [
            {"cpt": c, "description": refs.cpt_descriptions.get(c) or ""} for c in ex.cpt]}]}
        found = find(case.note, claim, method)
        for pair in ex.modifiers:
            cpt = pair.split("-", 1)[0]
            if ("cpt", cpt) in found:
                found[("modifiers", pair)] = found[("cpt", cpt)]
        out.append(found)
    return out


# ---------------------------------------------------------------- synthetic gold and measurement
def gold_spans(scenario, note: str) -> dict[tuple[str, str], list[list[int]]]:
    """The sentences that carry each fact's words in a synthetic note (opclaim.synth): a diagnosis's
    words or terse words, a procedure's name or its synonyms, found in the note the writer wrote
    from them."""
    from opclaim.synth.dictation import SYNONYMS

    spans = sentences(note)
    low = note.lower()

    def where(phrases) -> list[list[int]]:
        hits = []
        for s, e in spans:
            seg = low[s:e]
            if any(ph and ph.lower() in seg for ph in phrases):
                hits.append([s, e])
        return hits

    from opclaim.synth.terse import SYNONYMS as TERSE_SYNONYMS

    out: dict[tuple[str, str], list[list[int]]] = {}
    for d in scenario.done:
        for dx in d.post:  # the claim codes post-operative diagnoses (scenario.icd10_codes)
            for code in dx.for_side(d.side, d.digit, d.lid):  # as scenario.icd10_codes codes it
                out.setdefault(("icd10", code), where([dx.words, dx.terse]))
        names = [d.proc.name, *SYNONYMS.get(d.proc.cpt, []), *TERSE_SYNONYMS.get(d.proc.cpt, [])]
        out.setdefault(("cpt", d.proc.cpt), where(names))
    return {k: v for k, v in out.items() if v}


def measure(pairs, method: str) -> dict:
    """hit@1 over (scenario, case) pairs: the top sentence is one of the gold sentences."""
    hits = n = 0
    for scenario, case in pairs:
        gold = gold_spans(scenario, case.note)
        found = find(case.note, case.claim.to_dict(), method)
        for key, spans in gold.items():
            if key not in found or not found[key]["spans"]:
                continue
            n += 1
            hits += found[key]["spans"][0] in spans
    return {"method": method, "n": n, "hit_at_1": hits / n if n else None}
