"""Model cards: what a compliance officer reads before a model is used.

Built only from the training run record (`opclaim_run.json`) and the latest evaluation's
`metrics.json`: base model, data summary (counts, services, date range), the exact recipe,
metrics with confidence intervals, intended use and limitations. Note text is never read, and
only whitelisted summary fields are copied, so a card cannot carry PHI.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from opclaim.errors import InputError
from opclaim.io import atomic_write

RUN_RECORD = "opclaim_run.json"
CARD = "README.md"
CARD_TAG = "tags: [opclaim,"
COUNT_KEYS = ("cases", "n_cases", "n", "count", "records")
METRIC_SECTIONS = ("icd10", "cpt", "modifier", "modifiers", "structure")

INTENDED_USE = """\
Drafts a billing claim (ICD-10-CM diagnoses; CPT codes with modifiers per provider) from a
surgeon's operative note, for a certified coder to review. It is a coder's assistant, not an
autonomous coder: every claim must be checked by a person before submission."""

LIMITATIONS = """\
- Trained on the data summarised above only; services, note styles and code-set releases outside
  it are untested. Re-evaluate on local data before use.
- Generated codes can be wrong or fabricated (not in the code set); the evaluation's
  valid/fabricated rates measure this. Constrained decoding reduces but does not remove it.
- Metrics are means over the evaluation cases with bootstrap confidence intervals; small
  evaluation sets give wide intervals.
- CPT is licensed by the AMA; the synthetic catalog used in tests is not a CPT release.
- The model must run where the notes may be processed (air-gapped); it never needs the network."""


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable JSON ({type(e).__name__})", file=path) from None
    if not isinstance(obj, dict):
        raise InputError("not a JSON object", file=path)
    return obj


def is_opclaim_card(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and CARD_TAG in p.read_text(encoding="utf-8", errors="replace")[:500]


def find_latest_metrics(model_dir: str | Path) -> Path | None:
    """The newest metrics.json under the model folder (where `opclaim eval --out` was pointed)."""
    found = [p for p in Path(model_dir).rglob("metrics.json") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _first(d: dict, *keys, default=None):
    for k in keys:
        if isinstance(d, dict) and d.get(k) not in (None, "", [], {}):
            return d[k]
    return default


# ---------------------------------------------------------------- sections
def _base_model(run: dict) -> str:
    base = _first(run, "base_model", "model", "model_name_or_path")
    if base is None:
        base = _first(run.get("config") or {}, "model_name_or_path", "base_model", "model")
    if isinstance(base, dict):
        base = base.get("name") or base.get("path")
    return str(base) if base else "not recorded"


def _data_summary(run: dict) -> list[str]:
    """Counts, services and date range only; any other field in the record is ignored.

    Train records `{"train": {...}, "val": {...}}` (one summary per split); a flat summary works too."""
    data = _first(run, "data_summary", "data", default={}) or {}
    if not isinstance(data, dict):
        return ["- not recorded"]
    splits = {k: v for k, v in data.items() if isinstance(v, dict) and any(c in v for c in COUNT_KEYS)}
    if splits:
        lines = [line for k, v in splits.items() for line in _summary_lines(v, prefix=f"{k}: ")]
    else:
        lines = _summary_lines(data, prefix="")
    return lines or ["- not recorded"]


def _summary_lines(d: dict, prefix: str) -> list[str]:
    out = []
    for k in COUNT_KEYS:
        if isinstance(d.get(k), int):
            out.append(f"- {prefix}{d[k]} cases")
            break
    services = _first(d, "services", "service_counts")
    if isinstance(services, dict):
        items = ", ".join(f"{_short(s)} ({n})" for s, n in sorted(services.items()) if isinstance(n, int))
        out.append(f"- {prefix}services: {items}")
    elif isinstance(services, list):
        out.append(f"- {prefix}services: {', '.join(_short(s) for s in services)}")
    dates = _first(d, "date_range", "dates")
    if isinstance(dates, (list, tuple)) and len(dates) == 2:
        out.append(f"- {prefix}dates: {_short(dates[0])} to {_short(dates[1])}")
    elif isinstance(dates, dict):
        out.append(f"- {prefix}dates: {_short(dates.get('min') or dates.get('first'))} to "
                   f"{_short(dates.get('max') or dates.get('last'))}")
    elif d.get("date_min") or d.get("date_max"):
        out.append(f"- {prefix}dates: {_short(d.get('date_min'))} to {_short(d.get('date_max'))}")
    for k in ("styles", "tokens", "max_tokens", "mean_tokens"):
        if isinstance(d.get(k), (int, float, dict)) and not isinstance(d.get(k), bool):
            out.append(f"- {prefix}{k}: {_short(json.dumps(d[k]) if isinstance(d[k], dict) else d[k])}")
    return out


def _short(x, n: int = 60) -> str:
    """Short labels only (service names, dates): anything long could be free text."""
    s = str(x)
    return s if len(s) <= n else s[: n - 1] + "…"


def _recipe(run: dict) -> str:
    recipe = _first(run, "config", "recipe", "resolved_config", default={})
    return yaml.safe_dump(recipe, sort_keys=True, default_flow_style=False).rstrip()


def _fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _metric_rows(metrics: dict, prefix: str = "") -> list[tuple[str, str, str]]:
    """(name, value, 95% CI) rows from a nested metrics.json; CIs are `*_ci: [lo, hi]` or `ci`."""
    rows = []
    for k, v in metrics.items():
        if k.endswith("_ci") or k in ("ci", "ci95"):
            continue
        name = f"{prefix}{k}"
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            ci = metrics.get(f"{k}_ci")
            if not ci and isinstance(metrics.get("ci"), dict):
                ci = metrics["ci"].get(k)
            rows.append((name, _fmt(v), _fmt_ci(ci)))
        elif isinstance(v, dict):
            if "value" in v and isinstance(v["value"], (int, float)):
                ci = v.get("ci") or v.get("ci95") or ([v["lo"], v["hi"]] if "lo" in v and "hi" in v else None)
                rows.append((name, _fmt(v["value"]), _fmt_ci(ci)))
            else:
                rows += _metric_rows(v, prefix=f"{name}.")
    return rows


def _fmt_ci(ci) -> str:
    if isinstance(ci, dict):
        ci = [ci.get("lo", ci.get("low")), ci.get("hi", ci.get("high"))]
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(x, (int, float)) for x in ci):
        return f"[{ci[0]:.3f}, {ci[1]:.3f}]"
    return ""


def _metrics_section(metrics_path: Path | None) -> str:
    if metrics_path is None:
        return "No evaluation recorded yet. Run `opclaim eval` and regenerate this card with `--metrics`."
    m = _read_json(Path(metrics_path))
    # One table per configuration scored (`configs` in opclaim.eval/1), else the top level.
    configs = m.get("configs") if isinstance(m.get("configs"), dict) and m["configs"] else {"": m}
    parts = [f"From `{Path(metrics_path).name}` (fractions in [0, 1]; 95% bootstrap CIs)."]
    for name, cm in configs.items():
        if not isinstance(cm, dict):
            continue
        sections = {k: cm[k] for k in METRIC_SECTIONS if isinstance(cm.get(k), dict)} or cm
        rows = _metric_rows(sections)
        head = f"**{name}** ({cm.get('n_cases', '?')} cases, gold `{cm.get('gold', '?')}`)\n\n" if name else ""
        table = ["| metric | value | 95% CI |", "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
        parts.append(head + "\n".join(table))
    return "\n\n".join(parts)


def render_model_card(run: dict, metrics_path: Path | None = None, name: str = "opclaim model") -> str:
    final = ""
    for key, label in (("final_train_loss", "training"), ("final_val_loss", "validation")):
        if isinstance(run.get(key), (int, float)):
            final += f"\n\nFinal {label} loss: {_fmt(run[key])}"
    if isinstance(run.get("global_step"), int):
        final += f" (after {run['global_step']} steps, world size {run.get('world_size', 1)})"
    prompt = _first(run, "prompt_format", "format", "template", default="not recorded")
    return f"""---
library_name: transformers
tags: [opclaim, medical-coding, icd-10-cm, cpt]
base_model: {_base_model(run)}
---
# {name}

Fine-tuned by opclaim to turn an operative note into a billing claim.

## Base model
{_base_model(run)} (prompt format: {prompt})

## Training data
{chr(10).join(_data_summary(run))}

## Recipe
The exact resolved configuration of the training run:

```yaml
{_recipe(run)}
```{final}

## Evaluation
{_metrics_section(metrics_path)}

## Intended use
{INTENDED_USE}

## Limitations
{LIMITATIONS}
"""


def write_model_card(model_dir: str | Path, metrics_path: str | Path | None = None) -> Path:
    """Write `model_dir/README.md` from its opclaim_run.json (and metrics.json); return its path."""
    model_dir = Path(model_dir)
    run = _read_json(model_dir / RUN_RECORD)
    if metrics_path is None:
        metrics_path = find_latest_metrics(model_dir)
    out = model_dir / CARD
    with atomic_write(out) as fh:
        fh.write(render_model_card(run, Path(metrics_path) if metrics_path else None, name=model_dir.name))
    return out
