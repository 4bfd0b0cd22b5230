"""The study's metrics (docs/design.md "Evaluation definitions"), per configuration.

Per case: precision = |M∩P|/|M|, recall = |M∩P|/|P| for the model's (M) and coder's (P) code
sets; the means over cases are reported, F1 is computed from the means. Full match, pooled
valid/fabricated shares against reference lists, modifiers as CPT-MOD pairs, ROUGE/METEOR and
bootstrap intervals complete the block. Nothing here touches note text except to read gold.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval import bootstrap, textmetrics
from eval.extract import Extraction, extract
from opclaim.claim import Case, render_target, strip_special_tokens
from opclaim.codes import icd10_billable, icd10_description, icd10_release, load_code_list, normalize_icd10
from opclaim.errors import InputError
from opclaim.io import iter_jsonl, read_cases
from opclaim.scoring import precision_recall

COMPONENTS = ("icd10", "cpt", "modifier")
CONVENTIONS = {
    "per_case": "precision = |M∩P|/|M|, recall = |M∩P|/|P| (M = model codes, P = coder codes)",
    "empty_model_nonempty_gold": "precision 0, recall 0",
    "both_empty": "precision 1, recall 1",
    "nonempty_model_empty_gold": "precision 0, recall 0 (0/0 is 0 except when both sets are empty)",
    "f1": "2·P̄·R̄/(P̄+R̄) from the mean precision and mean recall; 0 when both are 0",
    "modifier": "unique CPT-MOD pairs, so a modifier counts only on its code",
    "cpt": "unique CPT codes over all providers",
    "valid_fabricated": "pooled over cases: share of generated codes (unique per case) in / not in the "
                        "reference list; null when nothing was generated",
    "missing_prediction": "a gold case with no prediction is scored as an empty output",
    "unextractable_output": "codes that cannot be extracted count as not generated (wrong)",
    "rouge": "rouge_score RougeScorer(['rougeL','rougeLsum'], use_stemmer=False).score(target=gold, "
             "prediction=output) F-measure, mean over cases; special tokens stripped from both texts",
    "meteor": "nltk meteor_score([gold.split()], output.split()), default parameters, WordNet 3.0; "
              "null with a reason when WordNet is unavailable",
    "bootstrap": "cases resampled with replacement, seeded; 2.5th and 97.5th percentiles of the "
                 "resampled mean precision and recall",
}


# ---------------------------------------------------------------- inputs
@dataclass
class Prediction:
    id: str
    output: str
    config: str
    latency_s: float | None = None
    line: int = 0
    confidence: dict | None = None  # per-code scores from the decoding (eval/confidence.py)


@dataclass
class References:
    icd10: frozenset
    icd10_name: str
    cpt: frozenset
    cpt_name: str
    cpt_descriptions: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"icd10": {"source": self.icd10_name, "n_codes": len(self.icd10)},
                "cpt": {"source": self.cpt_name, "n_codes": len(self.cpt)}}


def read_gold(path: str | Path) -> list[Case]:
    """Gold cases, strictly (duplicate ids, malformed lines, non-UTF-8 name the line)."""
    return read_cases(path)


def read_predictions(path: str | Path, gold_ids: set[str], config: str | None = None) -> dict[str, dict]:
    """{config: {id: Prediction}}. With `config` every record belongs to it; otherwise records are
    grouped by their own "config" field ("model" when absent). Errors name file, line, field."""
    out: dict[str, dict[str, Prediction]] = defaultdict(dict)
    first_line: dict[tuple[str, str], int] = {}
    n_rec = 0
    for n, obj in iter_jsonl(path):
        n_rec += 1
        pid = obj.get("id")
        if pid is None or isinstance(pid, (bool, float, dict, list)) or (isinstance(pid, str) and not pid.strip()):
            raise InputError("missing or not a string", file=path, line=n, field="id")
        pid = str(pid)
        if "output" not in obj:
            raise InputError("missing", file=path, line=n, field="output")
        if not isinstance(obj["output"], str):
            raise InputError("must be a string", file=path, line=n, field="output")
        lat = obj.get("latency_s")
        if lat is not None and (isinstance(lat, bool) or not isinstance(lat, (int, float))
                                or not math.isfinite(lat) or lat < 0):
            raise InputError("must be a non-negative number", file=path, line=n, field="latency_s")
        cfg = config
        if cfg is None:
            cfg = obj.get("config", "model")
            if not isinstance(cfg, str) or not cfg.strip():
                raise InputError("must be a non-empty string", file=path, line=n, field="config")
        if pid not in gold_ids:
            raise InputError("prediction id is not in the gold file", file=path, line=n, field="id")
        key = (cfg, pid)
        if key in first_line:
            raise InputError(f"duplicate id (first on line {first_line[key]})", file=path, line=n, field="id")
        first_line[key] = n
        conf = obj.get("confidence")
        if conf is not None and (not isinstance(conf, dict) or not isinstance(conf.get("codes", []), list)):
            raise InputError("must be an object with a 'codes' list", file=path, line=n, field="confidence")
        out[cfg][pid] = Prediction(pid, obj["output"], cfg, None if lat is None else float(lat), n, conf)
    if not n_rec:
        raise InputError("no predictions", file=path)
    return dict(out)


def _catalog_cpt() -> tuple[dict[str, str], str] | None:
    """{CPT: description} of the synthetic catalog (imported lazily: only when used)."""
    from opclaim.synth import catalog

    codes = catalog.all_cpt_codes()
    by_cpt = getattr(catalog, "BY_CPT", {})
    return ({c: getattr(by_cpt.get(c), "desc", "") for c in codes},
            "opclaim.synth.catalog.all_cpt_codes()")


def load_references(golds: list[Case], icd_ref: str | Path | None = None,
                    cpt_ref: str | Path | None = None) -> References:
    """The lists valid/fabricated are counted against (docs/design.md); `golds` are all gold cases."""
    if icd_ref:
        icd = frozenset(load_code_list(icd_ref, normalize_icd10))
        icd_name = f"user list {Path(icd_ref).name}"
    else:
        icd = icd10_billable()
        icd_name = f"billable codes of {icd10_release()}"
    gold_desc: dict[str, str] = {}
    for c in golds:
        for p in c.claim.providers:
            for ln in p.lines:
                gold_desc.setdefault(ln.cpt, ln.description)
    if cpt_ref:
        table = load_code_list(cpt_ref)
        cpt_name = f"user list {Path(cpt_ref).name}"
        desc = {**gold_desc, **{k: v for k, v in table.items() if v}}
        cpt = frozenset(table)
    else:
        cat = _catalog_cpt()
        if cat is None:
            table, cpt_name = {}, "CPT codes in the gold file (synthetic catalog not available)"
        else:
            table, src = cat
            cpt_name = f"synthetic catalog ({src}) plus CPT codes in the gold file"
        cpt = frozenset(table) | frozenset(gold_desc)
        desc = {**{k: v for k, v in table.items() if v}, **gold_desc}
    return References(icd, icd_name, cpt, cpt_name, desc)


# ---------------------------------------------------------------- per case
@dataclass
class CaseScore:
    id: str
    service: str
    missing: bool
    extraction: Extraction
    gold: dict[str, set]
    pred: dict[str, set]
    p: dict[str, float]
    r: dict[str, float]
    latency_s: float | None

    def worst_key(self) -> float:
        return sum(self.p.values()) + sum(self.r.values())


def gold_sets(case: Case) -> dict[str, set]:
    return {"icd10": case.claim.icd10_set(), "cpt": case.claim.cpt_set(), "modifier": case.claim.modifier_set()}


def score_case(case: Case, pred: Prediction | None) -> CaseScore:
    ex = extract(pred.output if pred else "")
    g = gold_sets(case)
    m = {"icd10": set(ex.icd10), "cpt": set(ex.cpt), "modifier": set(ex.modifiers)}
    p, r = {}, {}
    for comp in COMPONENTS:
        p[comp], r[comp] = precision_recall(m[comp], g[comp])
    return CaseScore(case.id, case.service or "unknown", pred is None, ex, g, m, p, r,
                     pred.latency_s if pred else None)


def gold_text(case: Case) -> str:
    return strip_special_tokens(render_target(case.claim))


def output_text(pred: Prediction | None) -> str:
    return strip_special_tokens(pred.output) if pred else ""


# ---------------------------------------------------------------- aggregation
def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _prf(scores: list[CaseScore], comp: str) -> dict:
    p = float(np.mean([s.p[comp] for s in scores]))
    r = float(np.mean([s.r[comp] for s in scores]))
    return {"precision": p, "recall": r, "f1": _f1(p, r)}


def _validity(scores: list[CaseScore], comp: str, ref: frozenset) -> dict:
    generated = [c for s in scores for c in s.pred[comp]]
    n = len(generated)
    valid = sum(c in ref for c in generated)
    return {"valid": valid / n if n else None, "fabricated": (n - valid) / n if n else None, "n_generated": n}


def latency_summary(scores: list[CaseScore], gpu_hour_cost: float | None) -> dict:
    lat = np.array([s.latency_s for s in scores if s.latency_s is not None], dtype=float)
    if not lat.size:
        return {"n": 0, "mean_s": None, "median_s": None, "p95_s": None, "cost_per_1000_cases": None,
                "gpu_hour_cost": gpu_hour_cost}
    mean = float(lat.mean())
    return {"n": int(lat.size), "mean_s": mean, "median_s": float(np.median(lat)),
            "p95_s": float(np.percentile(lat, 95)), "gpu_hour_cost": gpu_hour_cost,
            # sequential GPU time per case -> cost of 1,000 cases at the given hourly price
            "cost_per_1000_cases": None if gpu_hour_cost is None else mean * 1000 / 3600 * gpu_hour_cost}


def top_codes(scores: list[CaseScore], refs: References, k: int = 15) -> dict:
    """Most-missed gold codes and most-fabricated generated codes (codes only, no note text)."""
    missed, fabricated = Counter(), Counter()
    for s in scores:
        for c in s.gold["icd10"] - s.pred["icd10"]:
            missed[("icd10", c)] += 1
        for c in s.gold["cpt"] - s.pred["cpt"]:
            missed[("cpt", c)] += 1
        for c in s.pred["icd10"] - refs.icd10:
            fabricated[("icd10", c)] += 1
        for c in s.pred["cpt"] - refs.cpt:
            fabricated[("cpt", c)] += 1

    def rows(counter):
        return [{"system": sys_, "code": c, "count": n, "description": describe(sys_, c, refs)}
                for (sys_, c), n in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]

    return {"most_missed": rows(missed), "most_fabricated": rows(fabricated)}


def describe(system: str, code: str, refs: References) -> str:
    if system == "icd10":
        return icd10_description(code) or ""
    return refs.cpt_descriptions.get(code, "")


def summarize(scores: list[CaseScore], text_scores: list[tuple], refs: References, n_boot: int = 1000,
              seed: int = 0, gpu_hour_cost: float | None = None) -> tuple[dict, dict]:
    """One metrics block (docs/design.md,  issue layout) for one configuration on one gold set, and
    the resampled means behind its intervals ({"icd10.p": array, ...}, for the box plots)."""
    block: dict = {"n_cases": len(scores), "n_missing_predictions": sum(s.missing for s in scores),
                   "missing_prediction_ids": [s.id for s in scores if s.missing]}
    arrays = {f"{c}.{k}": np.array([getattr(s, k)[c] for s in scores]) for c in COMPONENTS for k in ("p", "r")}
    boot = bootstrap.resampled_means(arrays, n_boot, seed) if n_boot > 0 else {}
    ci = {k: bootstrap.interval(v) for k, v in boot.items()} if boot else {k: None for k in arrays}
    ref = {"icd10": refs.icd10, "cpt": refs.cpt}
    for comp in COMPONENTS:
        b = _prf(scores, comp)
        b["full_match"] = float(np.mean([s.pred[comp] == s.gold[comp] for s in scores]))
        if comp in ref:
            b.update(_validity(scores, comp, ref[comp]))
        b["precision_ci"], b["recall_ci"] = ci[f"{comp}.p"], ci[f"{comp}.r"]
        block[comp] = b
    block["structure"] = textmetrics.means(text_scores)
    by: dict[str, list] = defaultdict(list)
    for s in scores:
        by[s.service].append(s)
    block["by_service"] = {svc: {"n_cases": len(ss), **{c: _prf(ss, c) for c in COMPONENTS}}
                           for svc, ss in sorted(by.items())}
    block["latency"] = latency_summary(scores, gpu_hour_cost)
    block.update(top_codes(scores, refs))
    return block, boot


@dataclass
class Run:
    """One configuration on one gold set: per-case scores plus its metrics block."""
    label: str
    config: str
    gold: str
    cases: list[Case]
    scores: list[CaseScore]
    text_scores: list[tuple]
    block: dict
    boot: dict
    confidence: list = field(default_factory=list)  # per case: the prediction's `confidence` or None
    scored: dict | None = None    # eval --calibration: id -> system -> code -> {"score", "correct"}
    routes: dict | None = None    # eval --calibration: eval.auto_review.route() of `scored`
    evidence: list | None = None  # per case: eval.evidence.find() of the predicted codes


def evaluate(gold_sets_: dict[str, list[Case]], predictions: list[tuple[str, str, dict[str, Prediction]]],
             refs: References, n_boot: int = 1000, seed: int = 0, gpu_hour_cost: float | None = None,
             workers: int | None = None) -> list[Run]:
    """`predictions` = [(gold name, config name, {id: Prediction})]. Text metrics of all runs are
    scored in one parallel pass; each run's bootstrap uses the same seed (paired resamples)."""
    staged = []
    golds_txt, outs_txt = [], []
    for gname, cfg, preds in predictions:
        cases = gold_sets_[gname]
        scores = [score_case(c, preds.get(c.id)) for c in cases]
        staged.append((gname, cfg, cases, scores, len(golds_txt), preds))
        golds_txt += [gold_text(c) for c in cases]
        outs_txt += [output_text(preds.get(c.id)) for c in cases]
    text = textmetrics.score_all(golds_txt, outs_txt, workers=workers)
    runs = []
    multi_gold = len({g for g, _, _ in predictions}) > 1 or len(gold_sets_) > 1
    for gname, cfg, cases, scores, start, preds in staged:
        ts = text[start:start + len(cases)]
        block, boot = summarize(scores, ts, refs, n_boot, seed, gpu_hour_cost)
        label = f"{gname}/{cfg}" if multi_gold else cfg
        conf = [getattr(preds.get(c.id), "confidence", None) for c in cases]
        runs.append(Run(label, cfg, gname, cases, scores, ts, {"config": cfg, "gold": gname, **block}, boot, conf))
    return runs
