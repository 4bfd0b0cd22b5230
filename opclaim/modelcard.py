"""Model cards: a concise document about one trained model, for the person who approves its use.

Identity (base model by name and source, sha256 of base, adapter and merged weights, bundle
digest when signed), data provenance, the hyperparameters that differ from the study's and why,
the headline on the golden set (else cross-style, else same-style) with intervals and the
val -> same-style -> cross-style -> golden gaps, subgroup findings, use, limitations and PHI
handling. Only this model's configurations are reported (never base, kNN or RAG), no machine
path is printed, and the full resolved configuration is written beside the card
(`opclaim_config.json`, paths reduced to their last component) and referenced by sha256.

Built from the run record (`opclaim_run.json`), the evaluation's `metrics.json` and the merge
record, read in one place (`load_inputs`) through their typed schemas (opclaim.artifacts), which
refuse unknown fields; note text is never read and only whitelisted summary fields are copied.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import opclaim
from opclaim import artifacts
from opclaim.artifacts import EvalMetrics, MergeRecord, TrainRun
from opclaim.errors import InputError
from opclaim.io import atomic_write, read_json

RUN_RECORD = "opclaim_run.json"
MERGE_RECORD = "opclaim_merge.json"
CONFIG_FILE = "opclaim_config.json"
CARD = "README.md"
CARD_TAG = "tags: [opclaim,"
BUNDLE_MANIFEST = "opclaim_bundle.json"
COMPONENTS = (("icd10", "ICD-10-CM"), ("cpt", "CPT"), ("modifier", "Modifiers"))
# Configurations that are this model (the rest of a report compares it with other systems).
OWN_PREFIXES = ("finetuned", "fine-tuned", "ft", "merged", "adapter", "model")  # "model": an unlabelled run

# The study's settings: the [study] keys of train/recipes/phi3-mini-128k_qlora_zero3-4gpu.yaml
# (tests/test_modelcard.py keeps the two in step).
STUDY = {"load_in_4bit": True, "lora_r": 64, "lora_alpha": 16, "lora_dropout": 0.1,
         "lora_target_modules": ["o_proj", "qkv_proj", "gate_up_proj", "down_proj", "lm_head"],
         "attn_implementation": "auto", "prompt_format": "phi3", "bf16": True}
STUDY_BASE = "microsoft/Phi-3-mini-128k-instruct (or -medium-128k)"
# Why a run departs from the study, for the departures our recipes make (measured; see the
# recipe comments). Anything else is reported as not explained.
WHY = {
    "load_in_4bit": "CPU training: bitsandbytes nf4 on CPU measured 63 s per step against 11 s for the "
                    "fp32 base (train/recipes/smollm2-135m_qlora_cpu.yaml)",
    "lora_dropout": "CPU training: drawing dropout masks cost a quarter of each step (1.32x), and a run "
                    "of under two epochs is not what dropout regularises",
    "bf16": "bf16 only where the hardware has it (CPU without AVX-512 BF16, or an older GPU)",
    "prompt_format": "the base model is not Phi-3, so it keeps its own chat template",
    "base_model": "a model that trains on the hardware at hand (the CPU demo: SmolLM2-135M on 2 cores)",
}

INTENDED_USE = """\
Drafts a professional billing claim (ICD-10-CM diagnoses; CPT codes with modifiers per provider)
from a surgeon's operative note, for a certified coder to review and correct before submission.
It is a coder's assistant inside the organisation that holds the notes, offline."""

OUT_OF_SCOPE = """\
- Submitting claims without a coder's review; facility (UB-04) or E/M coding; anaesthesia claims.
- Services, note styles, languages or code-set releases not in the training data above.
- Any use outside the environment approved to process the notes (the model needs no network)."""

LIMITATIONS = """\
- Constrained decoding removes fabricated codes by construction: every generated code is drawn
  from the reference lists (billable ICD-10-CM codes of the shipped release, the CPT list, the
  modifier table).
  It does not remove valid but wrong codes -- a real code for the wrong diagnosis, side or
  procedure, a missed secondary diagnosis, a wrong or missing modifier. Precision and recall
  measure those; only a coder's review catches them case by case.
- Without constrained decoding the model can write codes that do not exist; the evaluation's
  fabricated rate measures how often.
- Metrics are means over the evaluation cases with 95% bootstrap intervals; a small set (and a
  small subgroup) gives a wide interval. Synthetic test sets share the generator of the training
  notes, so same-style numbers overstate real performance: read the golden row and the gaps.
- CPT is licensed by the AMA; the synthetic catalog used in tests is not a CPT release."""

PHI_HANDLING = """\
- Operative notes are PHI. Training, inference and evaluation run offline; nothing is sent out.
- This card, the run record and metrics.json hold counts, codes, date ranges and service names
  only, never note text; files that do hold notes (data, predictions, report.html, cases.csv,
  rejects) are written owner-only (0600).
- Logs and error messages name file, line and field, never a note's content.
- The adapter weights were trained on the notes and may memorise fragments of them: treat the
  weights with the same access controls as the training data."""


# ---------------------------------------------------------------- inputs (one place)
def _read_summary(path: Path) -> dict:
    """The `opclaim data validate --summary` file (not a versioned artifact): a JSON object."""
    obj = read_json(path, "validation summary")
    if not isinstance(obj, dict):
        raise InputError("not a JSON object", file=path)
    return obj


def load_inputs(model_dir: Path, metrics_path: Path | None
                ) -> tuple[TrainRun, EvalMetrics | None, MergeRecord | None]:
    """(run record, metrics.json or None, merge record or None): the card's only reads of sidecar
    files, each through its schema's one reader."""
    run = artifacts.load(TrainRun, model_dir / RUN_RECORD)
    metrics = artifacts.load(EvalMetrics, metrics_path) if metrics_path else None
    merge = artifacts.load_optional(MergeRecord, model_dir)
    return run, metrics, merge


def is_opclaim_card(path: str | Path) -> bool:
    p = Path(path)
    return p.is_file() and CARD_TAG in p.read_text(encoding="utf-8", errors="replace")[:500]


def find_latest_metrics(model_dir: str | Path) -> Path | None:
    """The newest metrics.json under the model folder (where `opclaim eval --out` was pointed)."""
    found = [p for p in Path(model_dir).rglob("metrics.json") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


# ---------------------------------------------------------------- helpers
def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _weights(folder: Path | None, pattern: str = "*.safetensors") -> dict[str, str]:
    """{file name: sha256} of a folder's weight files ({} when the folder is not here)."""
    if folder is None or not folder.is_dir():
        return {}
    return {f.name: sha256_file(f) for f in sorted(folder.glob(pattern)) if f.is_file()}


def _short(x, n: int = 60) -> str:
    """Short labels only (service names, dates): anything long could be free text."""
    s = str(x)
    return s if len(s) <= n else s[: n - 1] + "…"


def _strip_paths(obj):
    """The resolved config without machine paths: absolute paths keep their last component."""
    if isinstance(obj, dict):
        return {k: _strip_paths(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip_paths(v) for v in obj]
    if isinstance(obj, str) and (obj.startswith("/") or obj[1:3] in (":\\", ":/")):
        return "…/" + Path(obj).name
    return obj


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}"


def _ci(ci) -> str:
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else "–"


def is_own(config: str) -> bool:
    return str(config).lower().startswith(OWN_PREFIXES)


# ---------------------------------------------------------------- sections
def base_model_name(run: TrainRun) -> str:
    """The base model by name (its source), never by where it sat on the build machine."""
    src = run.base_model_source
    if src is not None and (src.source or src.name):
        return _short(src.source or src.name, 120)
    return Path(run.base_model).name if run.base_model else "not recorded"


def _merged_dir(model_dir: Path, merge: MergeRecord | None) -> Path | None:
    """This folder if it is a merged model, else a sibling merged from this adapter."""
    if merge is not None:
        return model_dir
    here = model_dir.resolve()
    for rec in sorted(model_dir.parent.glob(f"*/{MERGE_RECORD}")):
        try:
            if Path(artifacts.load(MergeRecord, rec).adapter).resolve() == here:
                return rec.parent
        except (OSError, InputError):
            continue  # a sibling whose record this opclaim cannot read is not ours to describe
    return None


def _bundle_digest(model_dir: Path) -> str:
    for folder in (model_dir, model_dir.parent):
        m = folder / BUNDLE_MANIFEST
        if m.is_file():
            return f"sha256 `{sha256_file(m)}` of {BUNDLE_MANIFEST} (signed; `opclaim bundle verify`)"
    return "not in a signed bundle yet (`opclaim bundle create` signs one; the manifest digest is then shown here)"


def identity(model_dir: Path, run: TrainRun, merge: MergeRecord | None, config_sha: str) -> list[str]:
    base_dir = Path(run.base_model) if run.base_model else None
    base_w = _weights(base_dir)
    merged = _merged_dir(model_dir, merge)
    adapter_w = _weights(model_dir, "adapter_model*.safetensors") if merge is None else {}
    merged_w = _weights(merged, "model*.safetensors") if merged else {}

    def hashes(ws: dict, missing: str) -> str:
        return "; ".join(f"`{n}` sha256 `{h}`" for n, h in ws.items()) or missing

    rows = [("Base model", f"{base_model_name(run)}"),
            ("Base weights", hashes(base_w, "not available where this card was written")),
            ("Adapter (LoRA)", hashes(adapter_w, "none (this folder is a merged model)" if merge else "not found")),
            ("Merged weights", hashes(merged_w, "not merged")),
            ("Bundle", _bundle_digest(model_dir)),
            ("Prompt format", _short(run.prompt_format or "not recorded")),
            ("Prompt mode", _prompt_mode(run)),
            ("Resolved configuration", f"`{CONFIG_FILE}` beside this card, sha256 `{config_sha}`"),
            ("Trained", f"{_short(run.date or 'date not recorded')}, torch {_short(run.torch or '?')}; "
                        f"card written by opclaim {opclaim.__version__}")]
    return ["| | |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]


def _prompt_mode(run: TrainRun) -> str:
    """How the weights must be prompted (`opclaim infer` refuses another mode)."""
    if run.prompt_mode == "finetuned":
        return "finetuned (the study's: the note only); run with `--mode finetuned`"
    r = run.rag or {}
    how = (f"{_short(str(r.get('k')))} nearest other training claims per prompt, "
           f"{_short(str(r.get('distractor_share_actual')))} of them distractors ({_short(str(r.get('distractors')))}), "
           f"index fingerprint `{_short(str(r.get('index_fingerprint')))}`")
    modes = "`--mode finetuned` or `--mode rag`" if run.prompt_mode == "mixed" else "`--mode rag`"
    return f"{_short(run.prompt_mode)} (retrieval-tuned: {how}); run with {modes} and a RAG index"


def provenance(run: TrainRun, validation: dict | None) -> list[str]:
    out = []
    services: dict[str, int] = {}
    for name, s in run.data.items():  # split name -> SplitCounts
        dr = s.date_range
        dates = f", encounter dates {_short(dr[0])} to {_short(dr[1])}" if isinstance(dr, list) and len(dr) == 2 else ""
        out.append(f"- {_short(name)}: {s.cases} cases{dates}")
        for svc, k in (s.services or {}).items():
            if isinstance(k, int):
                services[_short(svc)] = services.get(_short(svc), 0) + k
    if services:
        out.append(f"- services ({len(services)}): " + ", ".join(f"{s} ({n})" for s, n in sorted(services.items())))
    if not out:
        out.append("- not recorded in the run record")
    if validation:
        clean = validation.get("cleanup") or {}
        out.append(f"- validation (`opclaim data validate`): {validation.get('records', '?')} records, "
                   f"{validation.get('valid', '?')} valid, {validation.get('rejected', '?')} rejected, "
                   f"{validation.get('flagged', '?')} flagged")
        out.append("- label clean-up: " + (", ".join(f"{_short(k)} {v}" for k, v in clean.items()
                                                    if isinstance(v, int)) or "none needed"))
        defects = validation.get("defects") or {}
        if defects:
            out.append("- rejects by defect: " + ", ".join(f"{_short(k)} {v}" for k, v in defects.items()
                                                         if isinstance(v, int)))
    else:
        out.append("- label clean-up and rejects: not recorded (pass the `--summary` of `opclaim data "
                   "validate` to the card; synthetic data needs none)")
    return out


def _flat_config(run: TrainRun) -> dict:
    cfg = run.config or {}
    flat = {}
    for part in ("model", "data", "training"):
        if isinstance(cfg.get(part), dict):
            flat.update(cfg[part])
    return flat


def hyperparameters(run: TrainRun) -> list[str]:
    flat = _flat_config(run)
    actual = dict(flat)
    if run.prompt_format:
        actual["prompt_format"] = run.prompt_format  # what was used, not "auto"
    rows = []
    base = base_model_name(run)
    if "phi-3" not in base.lower():
        rows.append(("base model", STUDY_BASE, base, WHY["base_model"]))
    for key, study in STUDY.items():
        if key not in actual:
            continue
        v = actual[key]
        if key == "lora_target_modules" and v in (None, [], ""):
            continue  # None = the family's own linear layers + lm_head, the study's choice
        if key == "attn_implementation" and v == "auto":
            continue
        if v != study:
            rows.append((key, json.dumps(study), json.dumps(v), WHY.get(key, "not explained in the run record")))
    steps = (f"{run.global_step} optimiser steps (max_steps {flat.get('max_steps', '?')}), "
             f"world size {run.world_size}, learning rate {flat.get('learning_rate', '?')} "
             f"({flat.get('lr_scheduler_type', '?')}), effective batch "
             f"{_eff_batch(flat, run)}")
    losses = ", ".join(f"final {lab} loss {v:.3f}" for v, lab in ((run.final_train_loss, "training"),
                                                                   (run.final_val_loss, "validation"))
                       if v is not None)
    out = [f"Training: {steps}" + (f"; {losses}" if losses else "") + "."]
    if rows:
        out += ["", "Settings that differ from the study's:", "",
                "| setting | study | this model | why |", "|---|---|---|---|"]
        out += [f"| {k} | {s} | {v} | {w} |" for k, s, v, w in rows]
    else:
        out.append("\nEvery setting the study gives (QLoRA nf4, LoRA r=64, alpha=16, dropout 0.1, all linear "
                   "layers + lm_head, bf16) is the study's.")
    out.append(f"\nSettings the study does not give (batch, learning rate, schedule, length) are in `{CONFIG_FILE}`.")
    return out


def _eff_batch(flat: dict, run: TrainRun):
    try:
        return int(flat["per_device_train_batch_size"]) * int(flat.get("gradient_accumulation_steps", 1)) * int(
            run.world_size)
    except (KeyError, TypeError, ValueError):
        return "?"


def _own_blocks(metrics: EvalMetrics) -> list[tuple[str, dict]]:
    """(configuration, block) of this model's configurations, every gold set, in file order."""
    return [(cfg, {"gold": gold, **b}) for gold, blocks in metrics.blocks().items() for cfg, b in blocks
            if is_own(b.get("config", cfg))]


def evaluation(metrics: EvalMetrics | None, metrics_name: str) -> list[str]:
    if metrics is None:
        return ["No evaluation recorded yet. Run `opclaim eval` and regenerate this card with `--metrics`."]
    own = _own_blocks(metrics)
    if not own:
        return [f"`{metrics_name}` scores none of this model's configurations."]
    head = (metrics.single or {}).get("headline") or {}
    roles = {g: (v or {}).get("role") for g, v in metrics.gold_sets.items()}
    source = head.get("source") or own[0][1].get("gold")
    label = head.get("label") or source
    out = [f"Headline set: **{_short(label)}** (`{_short(source)}`; rule: golden if present, else "
           "cross-style, else same-style). F1 in %, 95% bootstrap CIs (precision / recall intervals; "
           "F1 interval from the same resamples).", "",
           "| configuration | cases | component | F1 | F1 95% CI | precision (95% CI) | recall (95% CI) |",
           "|---|---|---|---|---|---|---|"]
    for label_, b in own:
        if b.get("gold") != source:
            continue
        sg = (b.get("subgroups") or {}).get("overall") or {}
        for comp, title in COMPONENTS:
            m = b.get(comp) or {}
            out.append(f"| {_short(b.get('config', label_))} | {b.get('n_cases', '?')} | {title} | {_pct(m.get('f1'))} | "
                       f"{_ci((sg.get(comp) or {}).get('f1_ci'))} | {_pct(m.get('precision'))} "
                       f"{_ci(m.get('precision_ci'))} | {_pct(m.get('recall'))} {_ci(m.get('recall_ci'))} |")
    gaps = [g for g in head.get("gaps", []) if is_own(g.get("config", ""))]
    order = ("val", "same-style", "cross-style", "golden")
    present = [r for r in order if any(r in g.get("sets", {}) for g in gaps)]
    if len(present) > 1:
        out += ["", "Generalisation gaps (F1 %): " + " → ".join(present), "",
                "| configuration | component | " + " | ".join(present) + " | gap |",
                "|---|---|" + "---|" * (len(present) + 1)]
        for g in gaps:
            sets = g["sets"]
            for comp, title in COMPONENTS:
                vals = [sets[r][comp]["f1"] if r in sets else None for r in present]
                known = [v for v in vals if v is not None]
                gap = f"{100 * (known[-1] - known[0]):+.1f}" if len(known) > 1 else "–"
                out.append(f"| {_short(g['config'])} | {title} | " + " | ".join(_pct(v) for v in vals) + f" | {gap} |")
    elif roles:
        out += ["", "Only one kind of test set was scored: no generalisation gap to show."]
    return out


def subgroup_findings(metrics: EvalMetrics | None) -> list[str]:
    if metrics is None:
        return ["Not evaluated."]
    own = _own_blocks(metrics)
    with_sg = [(lab, b) for lab, b in own if (b.get("subgroups") or {}).get("dimensions")]
    if not with_sg:
        return ["No subgroup breakdown in this evaluation (re-run `opclaim eval`)."]
    out = ["By service, age band (<40, 40-64, 65-79, 80+) and sex; a subgroup is flagged when it has at "
           "least 5 cases and its whole 95% F1 interval lies below the overall F1.", ""]
    flagged = 0
    for lab, b in with_sg:
        sg = b["subgroups"]
        unknown = sg["dimensions"].get("age_band", {}).get("unknown", {}).get("n_cases", 0)
        for f in sg.get("flags", []):
            flagged += 1
            out.append(f"- **{_short(lab)}**: {f['dimension']} = {_short(f['group'])} (n={f['n_cases']}): "
                       f"{f['component']} F1 {_pct(f['f1'])} {_ci(f['f1_ci'])} against {_pct(f['overall_f1'])} overall")
        if unknown:
            out.append(f"- {_short(lab)}: {unknown} of {sg['overall'].get('n_cases', '?')} cases have no patient age")
    if not flagged:
        out.append(f"- No subgroup flagged in {len(with_sg)} evaluation(s) of this model.")
    out.append("- Full tables: report.html (\"Subgroups\") and metrics.json (`configs.*.subgroups`).")
    return out


# ---------------------------------------------------------------- the card
def render_model_card(run: TrainRun, metrics: EvalMetrics | None = None, *, name: str = "opclaim model",
                      model_dir: Path | None = None, merge: MergeRecord | None = None, config_sha: str = "",
                      validation: dict | None = None, metrics_name: str = "metrics.json") -> str:
    model_dir = Path(model_dir) if model_dir else Path(".")
    base = base_model_name(run).replace("\n", " ")
    sections = [
        ("Identity", identity(model_dir, run, merge, config_sha)),
        ("Training data", provenance(run, validation)),
        ("Training", hyperparameters(run)),
        ("Evaluation", evaluation(metrics, metrics_name)),
        ("Subgroups", subgroup_findings(metrics)),
        ("Intended use", [INTENDED_USE]),
        ("Out of scope", [OUT_OF_SCOPE]),
        ("Limitations", [LIMITATIONS]),
        ("PHI handling", [PHI_HANDLING]),
    ]
    body = "\n\n".join(f"## {title}\n" + "\n".join(lines) for title, lines in sections)
    return (f"---\nlibrary_name: transformers\ntags: [opclaim, medical-coding, icd-10-cm, cpt]\n"
            f"base_model: {json.dumps(base)}\n---\n# {_short(name)}\n\n"
            "A fine-tuned model that drafts a billing claim from an operative note. "
            "Built by opclaim; this card is generated (`opclaim card`).\n\n" + body + "\n")


def write_resolved_config(model_dir: Path, run: TrainRun) -> str:
    """`opclaim_config.json` beside the card (sorted keys, paths stripped); return its sha256."""
    text = json.dumps(_strip_paths(run.config or {}), indent=1, sort_keys=True, default=str,
                      ensure_ascii=False) + "\n"
    with atomic_write(model_dir / CONFIG_FILE) as fh:
        fh.write(text)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_model_card(model_dir: str | Path, metrics_path: str | Path | None = None,
                     validation_summary: str | Path | None = None) -> Path:
    """Write `model_dir/README.md` (and `opclaim_config.json` beside it); return the card's path."""
    model_dir = Path(model_dir)
    if metrics_path is None:
        metrics_path = find_latest_metrics(model_dir)
    run, metrics, merge = load_inputs(model_dir, Path(metrics_path) if metrics_path else None)
    validation = _read_summary(Path(validation_summary)) if validation_summary else None
    sha = write_resolved_config(model_dir, run)
    card = render_model_card(run, metrics, name=model_dir.name, model_dir=model_dir, merge=merge, config_sha=sha,
                             validation=validation,
                             metrics_name=Path(metrics_path).name if metrics_path else "metrics.json")
    out = model_dir / CARD
    with atomic_write(out) as fh:
        fh.write(card)
    return out
