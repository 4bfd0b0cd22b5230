"""The model card: a concise document about this model -- no machine paths, hashes of what it is
made of, only its own configurations, the golden headline with gaps, a sane size."""

import hashlib
import json
import re

import pytest
import yaml

from opclaim import modelcard
from opclaim.claim import render_target
from opclaim.cli import main as cli_main
from opclaim.errors import InputError
from opclaim.io import write_jsonl
from opclaim.synth import generate_cases
from tests.conftest import ROOT

CANARY = "ZQXCANARY7731PHI"
ABS_PATH = re.compile(r"(?:^|[\s`'\"(\[|=:])/[\w.-]+/")
CONFIGS = ("base", "rag", "knn", "finetuned", "finetuned+constrained")


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """runs/{models/base, adapter, merged, eval}: what the demo leaves, with fake weight bytes and a
    real `opclaim eval` over five configurations and four gold sets."""
    root = tmp_path_factory.mktemp("runs")
    base, adapter, merged, ev = (root / "models" / "base", root / "adapter", root / "merged", root / "eval")
    for d in (base, adapter, merged):
        d.mkdir(parents=True)
    (base / "model.safetensors").write_bytes(b"base weights")
    (base / "opclaim_source.json").write_text(json.dumps({"schema": "opclaim.model-source/2", "name": "smollm2-135m",
                                                          "source": "HuggingFaceTB/SmolLM2-135M-Instruct"}))
    (adapter / "adapter_model.safetensors").write_bytes(b"adapter weights")
    (merged / "model.safetensors").write_bytes(b"merged weights")
    (merged / "opclaim_merge.json").write_text(json.dumps({
        "schema": "opclaim.merge/2", "adapter": str(adapter), "base_model": str(base),
        "merged_into": "original", "dtype": "float32", "prompt_format": "chatml", "untied_lm_head": False}))
    run = {"schema": "opclaim.train-run/3", "prompt_format": "chatml", "load_in_4bit": False, "base_model": str(base),
           "base_model_source": {"name": "smollm2-135m", "source": "HuggingFaceTB/SmolLM2-135M-Instruct"},
           "world_size": 1, "global_step": 140, "final_train_loss": 0.41, "final_val_loss": 0.52,
           "date": "2026-12-01T20:00:00Z", "torch": "2.9.0",
           "data": {"train": {"cases": 180, "services": {"Ophthalmology": 180}, "date_range": ["2019-01-03", "2023-12-20"]},
                    "val": {"cases": 60, "services": {"Ophthalmology": 60}, "date_range": ["2019-02-01", "2023-11-02"]}},
           "config": {"model": {"model_name_or_path": str(base), "load_in_4bit": False, "lora_r": 64, "lora_alpha": 16,
                                "lora_dropout": 0.0, "lora_target_modules": None, "attn_implementation": "auto"},
                      "data": {"train_file": str(root / "train.jsonl"), "prompt_format": "auto"},
                      "training": {"output_dir": str(adapter), "max_steps": 140, "learning_rate": 0.005,
                                   "lr_scheduler_type": "constant_with_warmup", "per_device_train_batch_size": 2,
                                   "gradient_accumulation_steps": 1, "bf16": True, "use_cpu": True}}}
    (adapter / "opclaim_run.json").write_text(json.dumps(run))
    (root / "canary_run.json").write_text(json.dumps(
        {**run, "data": {**run["data"], "train": {**run["data"]["train"], "example_note": f"PATIENT: {CANARY}"}}}))
    # four gold sets, every configuration on each (val: fine-tuned only, as the demo does)
    sets = {"val": generate_cases(20, seed=1, style="terse", id_prefix="v"),
            "test": generate_cases(30, seed=2, style="terse", id_prefix="t"),
            "dictation": generate_cases(30, seed=3, style="dictation", id_prefix="d"),
            "golden": generate_cases(30, seed=4, style="dictation", id_prefix="g")}
    args = ["eval", "--out", str(ev), "--bootstrap", "100"]
    for name, cases in sets.items():
        rows = [{**c.to_dict(), "patient": c.patient} for c in cases]
        if name == "golden":
            for r in rows:
                r["source"] = "golden"
                r.pop("style")
        write_jsonl(root / f"{name}.jsonl", rows)
        args += ["--gold", f"{name}={root / f'{name}.jsonl'}"]
        for k, cfg in enumerate(CONFIGS):
            if name == "val" and cfg != "finetuned":
                continue
            preds = [{"id": c.id, "output": render_target(c.claim) if (i + k) % (k + 2) else ""}
                     for i, c in enumerate(cases)]
            write_jsonl(root / f"p_{name}_{k}.jsonl", preds)
            args += ["--predictions", f"{name}/{cfg}={root / f'p_{name}_{k}.jsonl'}"]
    assert cli_main(args) == 0
    return {"root": root, "base": base, "adapter": adapter, "merged": merged, "metrics": ev / "metrics.json"}


@pytest.fixture(scope="module")
def card(runs):
    path = modelcard.write_model_card(runs["adapter"], runs["metrics"])
    return path.read_text(encoding="utf-8")


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_card_has_no_absolute_paths(card, runs):
    assert str(runs["root"]) not in card
    assert not ABS_PATH.search(card), ABS_PATH.search(card).group(0)
    assert "base_model: \"HuggingFaceTB/SmolLM2-135M-Instruct\"" in card
    config = (runs["adapter"] / modelcard.CONFIG_FILE).read_text()
    assert str(runs["root"]) not in config and "…/adapter" in config  # paths reduced to their last part


@pytest.mark.slow  # > 2 s: outside the make test-fast tier
def test_card_carries_the_hashes_of_what_the_model_is(card, runs):
    assert _sha(runs["base"] / "model.safetensors") in card
    assert _sha(runs["adapter"] / "adapter_model.safetensors") in card
    assert _sha(runs["merged"] / "model.safetensors") in card  # the sibling merged from this adapter
    assert _sha(runs["adapter"] / modelcard.CONFIG_FILE) in card
    assert "not in a signed bundle yet" in card


def test_card_reports_only_its_own_configurations(card):
    rows = [line for line in card.splitlines() if line.startswith("| ")]
    first_cells = {line.split("|")[1].strip() for line in rows}
    assert {"finetuned", "finetuned+constrained"} <= first_cells
    assert not first_cells & {"base", "rag", "knn"}
    assert not re.search(r"\b(rag|knn|kNN|RAG)\b", card.split("## Intended use")[0])


def test_card_headline_is_golden_with_intervals_and_the_gaps(card):
    assert "Headline set: **golden (hand-written)** (`golden`" in card
    assert re.search(r"\| finetuned \| 30 \| ICD-10-CM \| [\d.]+ \| \[[\d.]+, [\d.]+\] \|", card)
    assert "val → same-style → cross-style → golden" in card
    gap_rows = [x for x in card.splitlines() if x.startswith("| finetuned | ICD-10-CM |")]
    assert len(gap_rows) == 1 and gap_rows[0].count("|") == 8  # four sets and the gap
    assert "## Subgroups" in card and ("flagged" in card or "No subgroup flagged" in card)


def test_card_sections_provenance_and_departures(card):
    for section in ("## Identity", "## Training data", "## Training", "## Evaluation", "## Subgroups",
                    "## Intended use", "## Out of scope", "## Limitations", "## PHI handling"):
        assert section in card
    assert "train: 180 cases, encounter dates 2019-01-03 to 2023-12-20" in card
    assert "services (1): Ophthalmology (240)" in card
    assert "| load_in_4bit | true | false | CPU training" in card
    assert "| lora_dropout | 0.1 | 0.0 |" in card and "| prompt_format | \"phi3\" | \"chatml\" |" in card
    assert "| lora_r |" not in card  # the study's value: not a departure
    assert "removes fabricated codes by construction" in card and "valid but wrong codes" in card
    assert "reduces but does not remove" not in card
    assert CANARY not in card


def test_card_size_is_sane(card):
    assert len(card.splitlines()) < 140 and len(card) < 14000


def test_bundle_digest_when_signed(runs, tmp_path):
    import shutil

    b = tmp_path / "bundle"
    shutil.copytree(runs["adapter"], b / "adapter")
    (b / "opclaim_bundle.json").write_text('{"files": {}}')
    card = modelcard.write_model_card(b / "adapter", runs["metrics"]).read_text()
    assert _sha(b / "opclaim_bundle.json") in card and "signed" in card


def test_card_without_metrics_or_own_configs(runs, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(runs["adapter"], d)
    assert "No evaluation recorded yet" in modelcard.write_model_card(d).read_text()
    m = json.loads(runs["metrics"].read_text())
    m["configs"] = {k: v for k, v in m["configs"].items() if not modelcard.is_own(v["config"])}
    (tmp_path / "metrics.json").write_text(json.dumps(m))
    text = modelcard.write_model_card(d, tmp_path / "metrics.json").read_text()
    assert "none of this model's configurations" in text and "| base |" not in text


def test_study_settings_match_the_study_recipe():
    recipe = ROOT / "train" / "recipes" / "phi3-mini-128k_qlora_zero3-4gpu.yaml"
    tagged = {}
    for line in recipe.read_text().splitlines():
        if "# [study]" in line and ":" in line.split("#")[0]:
            tagged.update(yaml.safe_load(line.split("#")[0]))
    assert tagged == modelcard.STUDY


def test_card_cli(runs, tmp_path, capsys):
    import shutil

    d = tmp_path / "a"
    shutil.copytree(runs["adapter"], d)
    assert cli_main(["card", "--model", str(d), "--metrics", str(runs["metrics"])]) == 0
    assert modelcard.is_opclaim_card(d / "README.md") and (d / modelcard.CONFIG_FILE).is_file()


def test_a_run_record_with_a_field_no_card_may_copy_is_refused(runs, tmp_path):
    """The run record's reader (artifacts.TrainRun) refuses unknown fields, naming the field and
    never quoting its value; the card is not written."""
    d = tmp_path / "m"
    d.mkdir()
    (d / modelcard.RUN_RECORD).write_text((runs["root"] / "canary_run.json").read_text())
    with pytest.raises(InputError) as e:
        modelcard.write_model_card(d, runs["metrics"])
    assert e.value.field == "data.train.example_note" and CANARY not in str(e.value)
    assert not (d / modelcard.CARD).exists()
