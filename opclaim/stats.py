"""Describe a cases file: note token lengths (the study's Figure 1), the top ICD-10-CM and CPT
codes (Figure 2), service mix, patients by age band and sex (Table 1) and encounter dates, as PNG plots, stats.json and a small HTML page.

Only aggregates are written: no note text, no ids.
"""

from __future__ import annotations

import html
import json
import statistics
from collections import Counter
from pathlib import Path

from opclaim.claim import Case, render_target
from opclaim.ingest import count_tokens
from opclaim.io import atomic_write
from opclaim.patient import AGE_BANDS, UNKNOWN, age_band, attach_raw_fields, patient_of

TOP_N = 50


def compute(cases: list[Case], tokenizer=None) -> dict:
    note_tokens = [count_tokens(c.note, tokenizer) for c in cases]
    target_tokens = [count_tokens(render_target(c.claim), tokenizer) for c in cases]
    icd = Counter(code for c in cases for code in c.claim.icd10_set())
    cpt = Counter(code for c in cases for code in c.claim.cpt_set())
    mods = Counter(m.split("-", 1)[1] for c in cases for m in c.claim.modifier_set())
    services = Counter(c.service or "unknown" for c in cases)
    years = Counter((c.date or "undated")[:4] for c in cases)
    pts = [patient_of(c) for c in cases]
    bands = Counter(age_band(p["age"]) for p in pts)
    sexes = Counter(p["sex"] or UNKNOWN for p in pts)
    months = Counter((c.date or "undated")[:7] for c in cases)

    def summary(xs):
        if not xs:
            return {}
        s = sorted(xs)
        return {"min": s[0], "median": statistics.median(s), "mean": round(statistics.fmean(s), 1),
                "p95": s[min(len(s) - 1, int(0.95 * len(s)))], "max": s[-1]}

    return {
        "cases": len(cases),
        "token_counter": "tokenizer" if tokenizer is not None else "regex estimate (words and punctuation)",
        "note_tokens": summary(note_tokens),
        "target_tokens": summary(target_tokens),
        "distinct_icd10": len(icd), "distinct_cpt": len(cpt),
        "top_icd10": icd.most_common(TOP_N), "top_cpt": cpt.most_common(TOP_N),
        "modifiers": mods.most_common(),
        "services": services.most_common(),
        # the study's Table 1 rows: age band and sex (missing fields are "unknown")
        "patients": {"age_band": [(b, bands[b]) for b in [x[2] for x in AGE_BANDS] + [UNKNOWN] if bands[b]],
                     "sex": [(x, sexes[x]) for x in ("F", "M", "U", UNKNOWN) if sexes[x]],
                     "age": summary([p["age"] for p in pts if p["age"] is not None])},
        "years": sorted(years.items()), "months": sorted(months.items()),
        "_note_tokens": note_tokens,
    }


def _plots(st: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(st["_note_tokens"], bins=40, color="#3b6ea5")
    ax.set_xlabel("note length (tokens)")
    ax.set_ylabel("cases")
    ax.set_title("Operative note lengths")
    fig.tight_layout()
    fig.savefig(out / "note_tokens.png", dpi=110)
    plt.close(fig)
    files.append("note_tokens.png")
    for key, name, title in (("top_icd10", "top_icd10.png", "ICD-10-CM"), ("top_cpt", "top_cpt.png", "CPT")):
        pairs = st[key]
        fig, ax = plt.subplots(figsize=(8, max(3, 0.18 * len(pairs) + 1)))
        ax.barh([p[0] for p in pairs][::-1], [p[1] for p in pairs][::-1], color="#5a9b5a")
        ax.set_xlabel("cases")
        ax.set_title(f"Top {len(pairs)} {title} codes")
        ax.tick_params(axis="y", labelsize=7)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)
    fig, ax = plt.subplots(figsize=(7, 4))
    svc = st["services"]
    ax.barh([s for s, _ in svc][::-1], [n for _, n in svc][::-1], color="#a5673b")
    ax.set_xlabel("cases")
    ax.set_title("Service mix")
    fig.tight_layout()
    fig.savefig(out / "services.png", dpi=110)
    plt.close(fig)
    files.append("services.png")
    return files


def _table(rows, head) -> str:
    e = html.escape
    body = "".join("<tr>" + "".join(f"<td>{e(str(x))}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><tr>{''.join(f'<th>{e(h)}</th>' for h in head)}</tr>{body}</table>"


def write(cases: list[Case], out: str | Path, source: str = "", tokenizer=None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if source and str(source).endswith(".jsonl") and Path(source).is_file():
        attach_raw_fields(cases, source, keys=("patient",))  # until Case parses `patient` itself
    st = compute(cases, tokenizer)
    images = _plots(st, out)
    public = {k: v for k, v in st.items() if not k.startswith("_")}
    n = max(1, st["cases"])
    nt = st["note_tokens"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>opclaim data stats</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:2px 8px;text-align:left}}img{{max-width:100%}}</style></head><body>
<h1>Data statistics</h1><p>{html.escape(Path(source).name if source else '')}: {st['cases']} cases,
{st['distinct_icd10']} distinct ICD-10-CM codes, {st['distinct_cpt']} distinct CPT codes.
Token counts: {html.escape(st['token_counter'])}.</p>
<h2>Note length (Figure 1)</h2>{_table([[k, v] for k, v in nt.items()], ['statistic', 'tokens'])}
<img src="note_tokens.png" alt="histogram of note lengths">
<h2>Code frequencies (Figure 2)</h2><img src="top_icd10.png" alt="top ICD-10-CM codes"><img src="top_cpt.png" alt="top CPT codes">
<h2>Service mix</h2>{_table([[s, c, f'{100 * c / n:.1f}%'] for s, c in st['services']], ['service', 'cases', 'share'])}
<img src="services.png" alt="service mix">
<h2>Patients (Table 1)</h2>{_table([[f'age {b}', c, f'{100 * c / n:.1f}%'] for b, c in st['patients']['age_band']]
         + [[f'sex {x}', c, f'{100 * c / n:.1f}%'] for x, c in st['patients']['sex']], ['group', 'cases', 'share'])}
<h2>Encounter dates</h2>{_table(st['years'], ['year', 'cases'])}
<h2>Modifiers</h2>{_table(st['modifiers'], ['modifier', 'lines'])}
</body></html>"""
    with atomic_write(out / "index.html") as fh:
        fh.write(page)
    # stats.json last: its presence marks a complete output folder.
    with atomic_write(out / "stats.json") as fh:
        json.dump({**public, "images": images}, fh, indent=1)
    return public
