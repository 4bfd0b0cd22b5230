"""`report.html`: one self-contained file for air-gapped enclaves (inline CSS, base64 PNG images,
no scripts, no fonts, a Content-Security-Policy that forbids fetching anything).

Jinja2 autoescaping escapes every value, so note text containing markup stays inert text.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from pathlib import Path

import numpy as np
from jinja2 import Environment, FileSystemLoader, select_autoescape

from eval.metrics import CONVENTIONS, CaseScore, References, Run, describe
from opclaim.codes import MODIFIERS, icd10_description, nearest_billable_icd10
from opclaim.io import atomic_write

TEMPLATES = Path(__file__).parent / "templates"
NOTE_EXCERPT = 1200

# Table 2 of the study: (group, label, component, key, scale)
TABLE2 = [
    ("ICD-10-CM", "Precision", "icd10", "precision", "pct"), ("ICD-10-CM", "Recall", "icd10", "recall", "pct"),
    ("ICD-10-CM", "F1", "icd10", "f1", "pct"), ("ICD-10-CM", "Full match", "icd10", "full_match", "pct"),
    ("ICD-10-CM", "Valid codes", "icd10", "valid", "pct"),
    ("ICD-10-CM", "Fabricated codes", "icd10", "fabricated", "pct"),
    ("CPT", "Precision", "cpt", "precision", "pct"), ("CPT", "Recall", "cpt", "recall", "pct"),
    ("CPT", "F1", "cpt", "f1", "pct"), ("CPT", "Full match", "cpt", "full_match", "pct"),
    ("CPT", "Valid codes", "cpt", "valid", "pct"), ("CPT", "Fabricated codes", "cpt", "fabricated", "pct"),
    ("Modifiers", "Precision", "modifier", "precision", "pct"), ("Modifiers", "Recall", "modifier", "recall", "pct"),
    ("Modifiers", "F1", "modifier", "f1", "pct"), ("Modifiers", "Full match", "modifier", "full_match", "pct"),
    ("Structure", "ROUGE-L (×100)", "structure", "rougeL", "x100"),
    ("Structure", "ROUGE-Lsum (×100)", "structure", "rougeLsum", "x100"),
    ("Structure", "METEOR", "structure", "meteor", "frac"),
]


def _fmt(v, scale: str) -> str:
    if v is None:
        return "n/a"
    if scale == "num":
        return f"{100 * v:.0f}"
    if scale == "frac":
        return f"{v:.3f}"
    return f"{100 * v:.1f}" + ("%" if scale == "pct" else "")


def _ci(ci) -> str:
    return f"[{100 * ci[0]:.1f}–{100 * ci[1]:.1f}]" if ci else ""


def by_gold(runs: list[Run]) -> dict[str, list[Run]]:
    return {g: [r for r in runs if r.gold == g] for g in dict.fromkeys(r.gold for r in runs)}


def table2(runs: list[Run]) -> list[dict]:
    """One block per gold set; in it one small table per component, configurations as rows."""
    out = []
    for gold, gruns in by_gold(runs).items():
        groups = []
        for group in dict.fromkeys(t[0] for t in TABLE2):
            metrics = [t for t in TABLE2 if t[0] == group]
            rows = []
            for run in gruns:
                cells = []
                for _, _, comp, key, scale in metrics:
                    b = run.block[comp]
                    ci = b.get(f"{key}_ci") if key in ("precision", "recall") else None
                    cells.append({"value": _fmt(b.get(key), scale), "ci": _ci(ci)})
                rows.append({"config": run.config, "cells": cells})
            groups.append({"title": group, "metrics": [t[1] for t in metrics], "rows": rows})
        out.append({"gold": gold, "n_cases": gruns[0].block["n_cases"], "groups": groups})
    return out


def service_tables(runs: list[Run]) -> list[dict]:
    """Per gold set: services as rows, configurations as columns, F1 of the three components."""
    out = []
    for gold, gruns in by_gold(runs).items():
        services = sorted({svc for r in gruns for svc in r.block["by_service"]})
        rows = []
        for svc in services:
            cells = []
            for r in gruns:
                b = r.block["by_service"].get(svc)
                cells.append(None if b is None else {"n": b["n_cases"], "f1": [_fmt(b[c]["f1"], "num") for c in
                                                                               ("icd10", "cpt", "modifier")]})
            rows.append({"service": svc, "cells": cells})
        out.append({"gold": gold, "configs": [r.config for r in gruns], "rows": rows})
    return out


SYSTEM_TITLES = {"icd10": "ICD-10-CM", "cpt": "CPT", "modifiers": "Modifiers"}


def routing_view(runs: list[Run]) -> list[dict]:
    """Per gold set with routed configurations: the numbers table and the precision–coverage plot."""
    from eval.auto_review import curve_figure

    out = []
    for gold, gruns in by_gold(runs).items():
        routed = [r for r in gruns if r.block.get("routing")]
        skipped = [{"config": r.config, "reason": r.block["routing_skipped"]} for r in gruns
                   if r.block.get("routing_skipped")]
        if not routed and not skipped:
            continue
        rows, curves, chosen = [], {}, {}
        for r in routed:
            rt = r.block["routing"]
            curves[r.config] = {s: d["curve"] for s, d in rt["systems"].items()}
            chosen[r.config] = {s: (d["coverage"], d["precision"]) for s, d in rt["systems"].items()
                                if d["n_auto"]}
            for s, d in rt["systems"].items():
                freq = d.get("by_frequency") or {}
                rows.append({"config": r.config, "system": SYSTEM_TITLES[s],
                             "threshold": _fmt(d["threshold"], "frac"),
                             "precision": _fmt(d["precision"], "pct"), "precision_ci": _ci(d.get("precision_ci")),
                             "coverage": _fmt(d["coverage"], "pct"), "coverage_ci": _ci(d.get("coverage_ci")),
                             "n_auto": d["n_auto"], "n_correct": d["n_correct"],
                             "recall_lost": _fmt(d["recall_lost"], "pct"),
                             "ece": f"{_fmt(d.get('ece_before'), 'frac')} → {_fmt(d.get('ece_after'), 'frac')}",
                             "common": _freq(freq.get("common")), "rare": _freq(freq.get("rare"))})
        plot = None
        if routed:
            import matplotlib.pyplot as plt

            fig = curve_figure(curves, chosen, target=routed[0].block["routing"]["target_precision"])
            fig.tight_layout()
            plot = _png(fig)
            plt.close(fig)
        first = routed[0].block["routing"] if routed else {}
        out.append({"gold": gold, "rows": rows, "plot": plot, "skipped": skipped,
                    "target": first.get("target_precision"), "frequency": first.get("frequency"),
                    "cases": [{"config": r.config, "auto": r.block["routing"]["cases_auto"],
                               "n": r.block["routing"]["cases"],
                               "rate": _fmt(r.block["routing"]["automation_rate"], "pct"),
                               "calibration": r.block["routing"]["calibration"]["file"]} for r in routed]})
    return out


def _freq(d: dict | None) -> str:
    if not d:
        return "–"
    return f"{_fmt(d['precision'], 'pct')} / {_fmt(d['coverage'], 'pct')} (n={d['n_auto']})"


DIM_TITLES = {"service": "Service", "age_band": "Age band", "sex": "Sex"}
COMP_TITLES = (("icd10", "ICD-10-CM"), ("cpt", "CPT"), ("modifier", "Modifiers"))


def subgroup_tables(runs: list[Run]) -> list[dict]:
    """Per configuration: one table per dimension (F1 % with its interval, n, flags)."""
    out = []
    for run in runs:
        sg = run.block.get("subgroups") or {}
        if not sg.get("dimensions"):
            continue
        overall = sg["overall"]
        dims = []
        for dim, rows in sg["dimensions"].items():
            dims.append({"dim": dim, "title": DIM_TITLES.get(dim, dim), "rows": [
                {"group": g, "n": row["n_cases"],
                 "cells": [{"f1": _fmt(row[c]["f1"], "pct"), "ci": _ci(row[c]["f1_ci"]), "flag": c in row["flagged"]}
                           for c, _ in COMP_TITLES]} for g, row in rows.items()]})
        out.append({"label": run.label, "flags": sg["flags"], "rule": sg.get("rule", ""),
                    "overall": [{"f1": _fmt(overall[c]["f1"], "pct"), "ci": _ci(overall[c]["f1_ci"])}
                                for c, _ in COMP_TITLES], "dims": dims})
    return out


def headline_view(head: dict | None) -> dict | None:
    """The headline block: where its numbers come from and the gaps table, formatted."""
    if not head or head.get("source") is None:
        return None
    from eval.headline import ROLE_LABELS, ROLES

    roles = [r for r in ROLES if any(r in g["sets"] for g in head["gaps"])]
    rows = []
    for g in head["gaps"]:
        for comp, title in COMP_TITLES:
            cells = [_fmt(g["sets"][r][comp]["f1"], "pct") if r in g["sets"] else "–" for r in roles]
            present = [r for r in roles if r in g["sets"]]
            gap = (100 * (g["sets"][present[-1]][comp]["f1"] - g["sets"][present[0]][comp]["f1"])
                   if len(present) > 1 else None)
            rows.append({"config": g["config"], "component": title, "cells": cells,
                         "gap": f"{gap:+.1f}" if gap is not None else "–",
                         "span": f"{present[0]} → {present[-1]}" if len(present) > 1 else ""})
    f1 = [{"component": title, "value": _fmt(head["f1"][c]["value"], "pct"), "ci": _ci(head["f1"][c].get("f1_ci"))}
          for c, title in COMP_TITLES] if head.get("f1") else []
    return {"source": head["source"], "label": head["label"], "config": head.get("config"),
            "n_cases": head.get("n_cases"), "rule": head.get("rule", ""), "f1": f1,
            "roles": [{"role": r, "title": ROLE_LABELS[r], "gold": head["sets_by_role"][r]} for r in roles],
            "rows": rows}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def boxplot(runs: list[Run]) -> list[dict]:
    """The study's Figure 3, one figure per gold set: bootstrap distributions of mean precision and
    recall, horizontal boxes with one labelled row per configuration (labels never collide)."""
    if not runs or not runs[0].boot:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    for gold, gruns in by_gold(runs).items():
        n = len(gruns)
        fig, axes = plt.subplots(1, 3, figsize=(10, 1.3 + 0.55 * n), sharey=True)
        for ax, (comp, title) in zip(axes, COMP_TITLES, strict=True):
            for k, colour, off in (("p", "#2471a3", -0.18), ("r", "#c0392b", 0.18)):
                data = [np.asarray(r.boot[f"{comp}.{k}"]) * 100 for r in gruns]
                bp = ax.boxplot(data, positions=[i + off for i in range(n)], widths=0.3, showfliers=False,
                                orientation="horizontal", patch_artist=True)
                for box in bp["boxes"]:
                    box.set(facecolor=colour, alpha=0.45)
                ax.plot([], [], color=colour, lw=6, alpha=0.45, label="precision" if k == "p" else "recall")
            lo, hi = ax.get_xlim()
            ax.set_xlim(max(lo, -1), min(hi, 101))  # means are percentages: no axis past 0 or 100
            ax.set_title(title, fontsize=11)
            ax.set_xlabel("bootstrap mean (%)", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
        axes[0].set_yticks(range(n), [r.config for r in gruns], fontsize=9)
        axes[0].invert_yaxis()  # first configuration on top, as in the tables
        axes[-1].legend(fontsize=8, loc="best")
        fig.tight_layout()
        out.append({"gold": gold, "uri": _png(fig)})
        plt.close(fig)
    return out


def _code_item(system: str, code: str, status: str, refs: References) -> dict:
    item = {"code": code, "status": status, "description": describe(system, code, refs), "nearest": []}
    if status == "invalid" and system == "icd10":
        item["reason"] = "not a billable ICD-10-CM code"
        item["nearest"] = [{"code": c, "description": icd10_description(c) or ""}
                           for c in nearest_billable_icd10(code)]
    elif status == "invalid":
        item["reason"] = "not in the CPT reference list"
    return item


def _code_info(run: Run, i: int, system: str, code: str) -> dict:
    """Confidence, route and evidence sentence of one predicted code (empty when not computed)."""
    cid, note = run.cases[i].id, run.cases[i].note
    info: dict = {"confidence": None, "route": None, "evidence": None, "weak": False}
    if run.scored is not None:
        v = run.scored[cid][system].get(code)
        info["confidence"] = None if v is None or v["score"] is None else f"{v['score']:.2f}"
        info["route"] = run.routes[cid]["codes"][system].get(code, "review")
    elif i < len(run.confidence) and run.confidence[i]:
        from eval.confidence import code_scores

        v = code_scores(run.confidence[i])[system].get(code)
        info["confidence"] = None if v is None else f"{v:.2f} (raw)"
    ev = (run.evidence[i] if run.evidence is not None else {}).get((system, code))
    if ev and ev["spans"]:
        a, b = ev["spans"][0]
        info["evidence"], info["weak"] = note[a:b], ev["no_evidence"]
    return info


def predicted_view(s: CaseScore, refs: References, run: Run | None = None, i: int = 0) -> dict:
    """A predicted claim with each code marked match / extra / invalid, plus the misses; with a
    run, each code's confidence, route and evidence sentence."""
    ref = {"icd10": refs.icd10, "cpt": refs.cpt}

    def status(system, code):
        if system in ref and code not in ref[system]:
            return "invalid"
        return "match" if code in s.gold[system] else "extra"

    def info(system, code):
        return _code_info(run, i, system, code) if run is not None else {}

    icd = [{**_code_item("icd10", c, status("icd10", c), refs), **info("icd10", c)} for c in s.extraction.icd10]
    lines = []
    for provider, cpt, mods in s.extraction.lines:
        lines.append({"provider": provider, "cpt": {**_code_item("cpt", cpt, status("cpt", cpt), refs), **info("cpt", cpt)},
                      "mods": [{"mod": m, "status": "match" if f"{cpt}-{m}" in s.gold["modifier"] else "extra",
                                "meaning": MODIFIERS.get(m, ""), **info("modifiers", f"{cpt}-{m}")} for m in mods]})
    missed = {"icd10": [_code_item("icd10", c, "missed", refs) for c in sorted(s.gold["icd10"] - s.pred["icd10"])],
              "cpt": [_code_item("cpt", c, "missed", refs) for c in sorted(s.gold["cpt"] - s.pred["cpt"])],
              "modifier": sorted(s.gold["modifier"] - s.pred["modifier"])}
    routes = run.routes[run.cases[i].id] if run is not None and run.routes is not None else None
    return {"icd10": icd, "lines": lines, "missed": missed, "missing": s.missing,
            "p": s.p, "r": s.r, "headers": s.extraction.headers, "route": routes["route"] if routes else None,
            "n_review": _n_review(run, i)}


def _n_review(run: Run | None, i: int) -> int:
    if run is None or run.routes is None:
        return 0
    return sum(r == "review" for d in run.routes[run.cases[i].id]["codes"].values() for r in d.values())


def highlighted(note: str, runs: list[Run], i: int) -> list[dict]:
    """The note (excerpt) as segments; a sentence that is some predicted code's evidence carries
    those codes. Autoescaping renders every segment as text; the template wraps marked ones."""
    marks: dict[tuple[int, int], list[str]] = {}
    for r in runs:
        for (system, code), ev in ((r.evidence[i] if r.evidence is not None else {}) or {}).items():
            if system != "modifiers" and ev["spans"] and not ev["no_evidence"]:
                tags = marks.setdefault(tuple(ev["spans"][0]), [])
                if code not in tags:
                    tags.append(code)
    cut = max([NOTE_EXCERPT, *(e for _, e in marks)])
    text = note if len(note) <= cut else note[:cut] + " …"
    segs, pos = [], 0
    for (a, b), codes in sorted(marks.items()):
        if a < pos:  # overlaps an earlier mark (sentences do not overlap; defensive)
            continue
        segs.append({"text": text[pos:a], "codes": None})
        segs.append({"text": text[a:b], "codes": codes})
        pos = b
    segs.append({"text": text[pos:], "codes": None})
    return [x for x in segs if x["text"]]


def coder_sections(runs: list[Run], refs: References, max_cases: int) -> list[dict]:
    """Per gold set: riskiest cases first (most codes routed to review over its configurations,
    then the worst scores), with every prediction and the note's evidence highlighted."""
    out = []
    for gold, gruns in by_gold(runs).items():
        cases = gruns[0].cases
        order = sorted(range(len(cases)), key=lambda i: (-sum(_n_review(r, i) for r in gruns),
                                                         sum(r.scores[i].worst_key() for r in gruns), cases[i].id))
        items = []
        for i in order[:max_cases]:
            c = cases[i]
            gold_lines = [{"provider": p.name, "role": p.role, "cpt": ln.cpt, "mods": ln.modifiers,
                           "description": ln.description} for p in c.claim.providers for ln in p.lines]
            gold_icd = [{"code": x, "description": icd10_description(x) or ""} for x in c.claim.icd10]
            items.append({"id": c.id, "service": c.service or "unknown", "segments": highlighted(c.note, gruns, i),
                          "gold_icd": gold_icd, "gold_lines": gold_lines,
                          "n_review": sum(_n_review(r, i) for r in gruns),
                          "preds": [{"label": r.label, **predicted_view(r.scores[i], refs, r, i)} for r in gruns]})
        out.append({"gold": gold, "n_cases": len(cases), "shown": len(items), "cases": items,
                    "routed": any(r.routes is not None for r in gruns)})
    return out


def render(runs: list[Run], refs: References, *, title: str = "opclaim evaluation", n_boot: int = 1000,
           seed: int = 0, max_cases: int = 100, headline: dict | None = None) -> str:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html", "j2"], default=True, default_for_string=True))
    ctx = {
        "title": title, "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": runs, "table2": table2(runs), "boxplots": boxplot(runs), "services": service_tables(runs),
        "routing": routing_view(runs),
        "references": refs.describe(), "n_boot": n_boot, "seed": seed, "conventions": CONVENTIONS,
        "meteor_reason": next((r.block["structure"].get("meteor_unavailable") for r in runs
                               if r.block["structure"].get("meteor_unavailable")), None),
        "coder": coder_sections(runs, refs, max_cases), "modifiers": MODIFIERS,
        "headline": headline_view(headline), "subgroups": subgroup_tables(runs),
    }
    return env.get_template("report.html.j2").render(**ctx)


def write(path: str | Path, runs: list[Run], refs: References, **kw) -> None:
    html = render(runs, refs, **kw)
    with atomic_write(path, private=True) as fh:  # carries note excerpts: owner-only
        fh.write(html)
