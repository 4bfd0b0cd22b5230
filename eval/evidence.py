"""Evidence: for each suggested code, the note sentence(s) that support it, as character offsets
snapped to sentence or bullet/line boundaries.

Methods (compared by hit@1 against the synthetic writers' gold spans, Case.evidence, `measure`):
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

from opclaim.sentences import sentences

METHODS = ("bm25", "minilm")
FLOORS = {"bm25": 1.0, "minilm": 0.25}
_WORD_RE = re.compile(r"[a-z0-9]+")
_STOP = frozenset("a an and the of with without or to in on for by at as is was were be unspecified other "
                  "not elsewhere classified nos".split())


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
def gold_spans(case) -> dict[tuple[str, str], list[list[int]]]:
    """(system, code) -> the case's gold evidence spans (Case.evidence: written by the synthetic
    writers, opclaim/synth/scenario.gold_evidence)."""
    return {(system, code): spans for system, d in (case.evidence or {}).items() for code, spans in d.items()}


def measure(cases, method: str) -> dict:
    """hit@1 over the gold codes of cases that carry gold evidence: the method's top sentence, found
    from the gold claim's code descriptions, is one of the code's gold sentences."""
    tally = {"icd10": [0, 0], "cpt": [0, 0]}  # system -> [hits, n]
    for case in cases:
        gold = gold_spans(case)
        if not gold:
            continue
        found = find(case.note, case.claim.to_dict(), method)
        for key, spans in gold.items():
            if key not in found or not found[key]["spans"] or key[0] not in tally:
                continue
            tally[key[0]][1] += 1
            tally[key[0]][0] += found[key]["spans"][0] in spans
    hits, n = sum(t[0] for t in tally.values()), sum(t[1] for t in tally.values())
    return {"method": method, "n": n, "hit_at_1": hits / n if n else None,
            "by_system": {s: {"n": t[1], "hit_at_1": t[0] / t[1] if t[1] else None} for s, t in tally.items()}}


def main(argv=None) -> int:
    """`python -m eval.evidence`: hit@1 of each method on fresh synthetic cases of each style."""
    import argparse

    from opclaim.synth import generate_cases

    ap = argparse.ArgumentParser(prog="python -m eval.evidence", description=main.__doc__)
    ap.add_argument("--n", type=int, default=40, help="cases per style")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--length", choices=("real", "short"), default="real")
    ap.add_argument("--methods", default=",".join(METHODS))
    args = ap.parse_args(argv)
    print("| style | method | codes | hit@1 | ICD-10-CM | CPT |\n|---|---|---:|---:|---:|---:|")
    for style in ("dictation", "terse"):
        cases = generate_cases(args.n, seed=args.seed, style=style, length=args.length)
        for method in args.methods.split(","):
            r = measure(cases, method)
            b = r["by_system"]
            print(f"| {style} | {method} | {r['n']} | {r['hit_at_1']:.3f} | {b['icd10']['hit_at_1']:.3f} "
                  f"(n={b['icd10']['n']}) | {b['cpt']['hit_at_1']:.3f} (n={b['cpt']['n']}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
