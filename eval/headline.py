"""Which gold set the headline numbers come from, and the val -> same-style -> cross-style ->
golden gaps side by side (ClarioScope's table: a same-generator number alone overstates a model).

Each gold set gets a role. By name first ("golden", "val", "test"/"same-style", "cross-style"),
then by content: records marked `"source": "golden"` are golden; a set written in another style
than the val/test sets is cross-style. The headline set is golden if present, else cross-style,
else same-style; its configuration is the one asked for (`--headline-config`), else "finetuned"
when scored there, else the first one.
"""

from __future__ import annotations

from collections import Counter

ROLES = ("val", "same-style", "cross-style", "golden")
ROLE_LABELS = {"val": "validation", "same-style": "same-style test", "cross-style": "cross-style test",
               "golden": "golden (hand-written)"}
_BY_NAME = {"golden": "golden", "val": "val", "validation": "val", "test": "same-style",
            "same-style": "same-style", "same_style": "same-style", "cross-style": "cross-style",
            "cross_style": "cross-style", "cross": "cross-style"}
COMPONENTS = ("icd10", "cpt", "modifier")


def _style(cases) -> str | None:
    styles = Counter(getattr(c, "style", None) for c in cases)
    styles.pop(None, None)
    return styles.most_common(1)[0][0] if styles else None


def roles(golds: dict[str, list]) -> dict[str, str | None]:
    """{gold name: role or None}."""
    out: dict[str, str | None] = {}
    for name, cases in golds.items():
        role = _BY_NAME.get(name.lower())
        if role is None and cases and all(getattr(c, "source", None) == "golden" for c in cases):
            role = "golden"
        out[name] = role
    ref = next((_style(golds[n]) for n, r in out.items() if r in ("same-style", "val") and _style(golds[n])), None)
    for name, role in out.items():
        if role is None:
            st = _style(golds[name])
            if st and ref and st != ref:
                out[name] = "cross-style"
            elif st and ref and st == ref:
                out[name] = "same-style"
    return out


def build(runs, golds: dict[str, list], prefer: str | None = None) -> dict:
    """The headline block of metrics.json: source set, its configuration's F1, and the gaps."""
    role_of = roles(golds)
    by_role = {}
    for name, role in role_of.items():  # first set of each role wins (the order given on the command line)
        if role and role not in by_role:
            by_role[role] = name
    source_role = next((r for r in ("golden", "cross-style", "same-style") if r in by_role), None)
    source = by_role[source_role] if source_role else next(iter(golds), None)
    on_source = [r for r in runs if r.gold == source]
    pick = next((r for r in on_source if r.config == prefer), None) or next(
        (r for r in on_source if r.config == "finetuned"), on_source[0] if on_source else None)
    configs = list(dict.fromkeys(r.config for r in runs))
    gaps = []
    for cfg in configs:
        cells = {}
        for role in ROLES:
            run = next((r for r in runs if r.config == cfg and r.gold == by_role.get(role)), None)
            if run is not None:
                cells[role] = {"gold": run.gold, "n_cases": run.block["n_cases"],
                               **{c: {"f1": run.block[c]["f1"]} for c in COMPONENTS}}
        if len(cells) < 1:
            continue
        present = [r for r in ROLES if r in cells]
        steps = [{"from": a, "to": b, **{c: cells[b][c]["f1"] - cells[a][c]["f1"] for c in COMPONENTS}}
                 for a, b in zip(present, present[1:], strict=False)]
        gaps.append({"config": cfg, "sets": cells, "steps": steps})
    return {"source": source, "role": source_role or role_of.get(source),
            "label": ROLE_LABELS.get(source_role or "", source),
            "config": pick.config if pick else None, "run": pick.label if pick else None,
            "n_cases": pick.block["n_cases"] if pick else None,
            "f1": {c: {"value": pick.block[c]["f1"], "precision_ci": pick.block[c].get("precision_ci"),
                       "recall_ci": pick.block[c].get("recall_ci"),
                       "f1_ci": ((pick.block.get("subgroups") or {}).get("overall") or {}).get(c, {}).get("f1_ci")}
                   for c in COMPONENTS} if pick else {},
            "roles": role_of, "sets_by_role": by_role, "gaps": gaps,
            "rule": "golden if present, else cross-style, else same-style; the configuration asked for, "
                    "else finetuned, else the first"}
