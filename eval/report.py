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
    if scale == "frac":
        return f"{v:.3f}"
    return f"{100 * v:.1f}" + ("%" if scale == "pct" else "")


def _ci(ci) -> str:
    return f"[{100 * ci[0]:.1f}–{100 * ci[1]:.1f}]" if ci else ""


def table2(runs: list[Run]) -> list[dict]:
    rows = []
    for group, label, comp, key, scale in TABLE2:
        cells = []
        for run in runs:
            b = run.block[comp]
            ci = b.get(f"{key}_ci") if key in ("precision", "recall") else None
            cells.append({"value": _fmt(b.get(key), scale), "ci": _ci(ci)})
        rows.append({"group": group, "label": label, "cells": cells})
    return rows


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


def boxplot(runs: list[Run]) -> str | None:
    """The study's Figure 3: bootstrap distributions of mean precision and recall."""
    if not runs or not runs[0].boot:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(4 + 2.2 * len(runs), 3.6), sharey=True)
    for ax, (comp, title) in zip(axes, [("icd10", "ICD-10-CM"), ("cpt", "CPT"), ("modifier", "Modifiers")], strict=False):
        data, labels = [], []
        for run in runs:
            for k, name in (("p", "P"), ("r", "R")):
                data.append(np.asarray(run.boot[f"{comp}.{k}"]) * 100)
                labels.append(f"{run.label}\n{name}")
        ax.boxplot(data, showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=7, rotation=30)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("bootstrap mean (%)")
    fig.tight_layout()
    uri = _png(fig)
    plt.close(fig)
    return uri


def _code_item(system: str, code: str, status: str, refs: References) -> dict:
    item = {"code": code, "status": status, "description": describe(system, code, refs), "nearest": []}
    if status == "invalid" and system == "icd10":
        item["reason"] = "not a billable ICD-10-CM code"
        item["nearest"] = [{"code": c, "description": icd10_description(c) or ""}
                           for c in nearest_billable_icd10(code)]
    elif status == "invalid":
        item["reason"] = "not in the CPT reference list"
    return item


def predicted_view(s: CaseScore, refs: References) -> dict:
    """A predicted claim with each code marked match / extra / invalid, plus the misses."""
    ref = {"icd10": refs.icd10, "cpt": refs.cpt}

    def status(system, code):
        if system in ref and code not in ref[system]:
            return "invalid"
        return "match" if code in s.gold[system] else "extra"

    icd = [_code_item("icd10", c, status("icd10", c), refs) for c in s.extraction.icd10]
    lines = []
    for provider, cpt, mods in s.extraction.lines:
        lines.append({"provider": provider, "cpt": _code_item("cpt", cpt, status("cpt", cpt), refs),
                      "mods": [{"mod": m, "status": "match" if f"{cpt}-{m}" in s.gold["modifier"] else "extra",
                                "meaning": MODIFIERS.get(m, "")} for m in mods]})
    missed = {"icd10": [_code_item("icd10", c, "missed", refs) for c in sorted(s.gold["icd10"] - s.pred["icd10"])],
              "cpt": [_code_item("cpt", c, "missed", refs) for c in sorted(s.gold["cpt"] - s.pred["cpt"])],
              "modifier": sorted(s.gold["modifier"] - s.pred["modifier"])}
    return {"icd10": icd, "lines": lines, "missed": missed, "missing": s.missing,
            "p": s.p, "r": s.r, "headers": s.extraction.headers}


def coder_sections(runs: list[Run], refs: References, max_cases: int) -> list[dict]:
    """Per gold set: the worst cases (summed over its configurations) with every prediction."""
    out = []
    for gold in dict.fromkeys(r.gold for r in runs):
        gruns = [r for r in runs if r.gold == gold]
        cases = gruns[0].cases
        order = sorted(range(len(cases)), key=lambda i: (sum(r.scores[i].worst_key() for r in gruns), cases[i].id))
        items = []
        for i in order[:max_cases]:
            c = cases[i]
            note = c.note if len(c.note) <= NOTE_EXCERPT else c.note[:NOTE_EXCERPT] + " …"
            gold_lines = [{"provider": p.name, "role": p.role, "cpt": ln.cpt, "mods": ln.modifiers,
                           "description": ln.description} for p in c.claim.providers for ln in p.lines]
            gold_icd = [{"code": x, "description": icd10_description(x) or ""} for x in c.claim.icd10]
            items.append({"id": c.id, "service": c.service or "unknown", "note": note,
                          "gold_icd": gold_icd, "gold_lines": gold_lines,
                          "preds": [{"label": r.label, **predicted_view(r.scores[i], refs)} for r in gruns]})
        out.append({"gold": gold, "n_cases": len(cases), "shown": len(items), "cases": items})
    return out


def render(runs: list[Run], refs: References, *, title: str = "opclaim evaluation", n_boot: int = 1000,
           seed: int = 0, max_cases: int = 100, headline: dict | None = None) -> str:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)),
                      autoescape=select_autoescape(["html", "j2"], default=True, default_for_string=True))
    services = sorted({svc for r in runs for svc in r.block["by_service"]})
    ctx = {
        "title": title, "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "runs": runs, "table2": table2(runs), "boxplot": boxplot(runs), "services": services,
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
