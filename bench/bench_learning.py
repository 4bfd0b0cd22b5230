"""Learning efficiency: val CPT and ICD-10-CM F1 against training seconds, per training recipe variant.

    python -m bench learning --demo-dir runs/demo [--variants top8-cached-cosine all-layers] [--steps 600]
        [--points 3] [--out runs/bench/learning]

Each variant is the demo recipe (train/recipes/smollm2-135m_qlora_cpu.yaml) with the overrides
below, trained on the demo's training split (a `make demo` run's folder: data, base model) with a
checkpoint at `--points` evenly spaced steps. Every checkpoint generates claims for the demo's val
cases (`opclaim infer --mode finetuned --constrain`, the demo's scored form) and is scored with
`opclaim eval`; its training seconds are the time from the start of the training command to the
checkpoint's completion marker (model loading and, for cached variants, building the cache
included). Rows: F1 at the last point with seconds as the ratio's baseline (the `all-layers` run),
plus a table and `learning.png` (F1 against seconds) in `--out`.

Caveat: checkpoints inside a cosine run are not annealed; a shorter run of its own ends higher than
the curve's middle point. Run alone: the seconds are wall time on a shared CPU otherwise.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import opclaim  # noqa: F401  (offline environment first)

RECIPE = "train/recipes/smollm2-135m_qlora_cpu.yaml"
VARIANTS = {
    # the recipe as the study's LoRA (every layer), constant rate, as the 140-step demo used to run
    "all-layers": {"lora_top_layers": 0, "cache_frozen_layers": False, "lr_scheduler_type": "constant_with_warmup"},
    "top8-cosine": {"lora_top_layers": 8, "cache_frozen_layers": False, "lr_scheduler_type": "cosine"},
    "top8-cached-cosine": {"lora_top_layers": 8, "cache_frozen_layers": True, "lr_scheduler_type": "cosine"},
    "top4-cached-cosine": {"lora_top_layers": 4, "cache_frozen_layers": True, "lr_scheduler_type": "cosine"},
    "top12-cached-cosine": {"lora_top_layers": 12, "cache_frozen_layers": True, "lr_scheduler_type": "cosine"},
}


def _run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], **kw)
    if r.returncode != 0:
        raise RuntimeError(f"exit {r.returncode}: {' '.join(map(str, cmd[:4]))} ...")


def train(demo: Path, out: Path, over: dict, steps: int, points: int) -> dict[int, float]:
    """Train one variant; {step: training seconds at that checkpoint}."""
    every = max(1, steps // points)
    args = [sys.executable, "-m", "train", "--config", RECIPE, "--model_name_or_path", demo / "models" / "base",
            "--train_file", demo / "data" / "split" / "train.jsonl", "--eval_strategy", "no",
            "--output_dir", out, "--max_steps", steps, "--save_steps", every, "--save_total_limit", points + 1,
            "--logging_steps", 20]
    for k, v in over.items():
        args += [f"--{k}", str(v).lower() if isinstance(v, bool) else v]
    t0 = time.time()
    _run(args)
    done = {}
    for ck in out.glob("checkpoint-*"):
        if any(ck.glob("*.json")):  # a finished checkpoint: its last file is written last
            done[int(ck.name.split("-")[1])] = max(p.stat().st_mtime for p in ck.iterdir()) - t0
    return dict(sorted(done.items()))


def score(demo: Path, adapter: Path, out: Path) -> tuple[float, float]:
    """(CPT F1, ICD-10-CM F1) of the adapter on the demo's val cases, constrained, as the demo scores."""
    opc = Path(sys.executable).parent / "opclaim"
    pred = out / "val.jsonl"
    _run([opc, "infer", "--model", demo / "models" / "base", "--adapter", adapter, "--mode", "finetuned",
          "--cases", demo / "data" / "val_eval.jsonl", "--out", pred, "--constrain", "--cpt-ref",
          demo / "data" / "cpt_catalog.txt", "--batch-size", 16, "--max-new-tokens", 160, "--force-new",
          "--no-progress"])
    _run([opc, "eval", "--predictions", f"m={pred}", "--gold", f"val={demo / 'data' / 'val_eval.jsonl'}",
          "--out", out / "eval", "--bootstrap", 0, "--cpt-ref", demo / "data" / "cpt_catalog.txt"],
         stdout=subprocess.DEVNULL)
    from opclaim import artifacts

    (_, cfg), = artifacts.load(artifacts.EvalMetrics, out / "eval" / "metrics.json").blocks()["val"]
    return cfg["cpt"]["f1"] or 0.0, cfg["icd10"]["f1"] or 0.0


def plot(curves: dict[str, list[tuple[float, float, float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharex=True)
    for name, pts in curves.items():
        secs = [p[0] for p in pts]
        axes[0].plot(secs, [100 * p[1] for p in pts], marker="o", label=name)
        axes[1].plot(secs, [100 * p[2] for p in pts], marker="o", label=name)
    for ax, what in zip(axes, ("CPT F1 (val, %)", "ICD-10-CM F1 (val, %)"), strict=True):
        ax.set_xlabel("training seconds (2-core CPU)")
        ax.set_ylabel(what)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "learning.png", dpi=100)
    plt.close(fig)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-dir", default="runs/demo", type=Path)
    ap.add_argument("--variants", nargs="+", default=["all-layers", "top8-cached-cosine"], choices=sorted(VARIANTS))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--points", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/learning"))
    a = ap.parse_args(argv)
    if not (a.demo_dir / "models" / "base" / "config.json").is_file():
        raise SystemExit(f"{a.demo_dir}: run `make demo` first (it writes the data and the base model)")
    a.out.mkdir(parents=True, exist_ok=True)
    curves, lines = {}, ["variant  step  train_s  val_CPT_F1  val_ICD_F1"]
    for name in a.variants:
        run = a.out / name
        times = train(a.demo_dir, run, VARIANTS[name], a.steps, a.points)
        curves[name] = []
        for step, secs in times.items():
            cpt, icd = score(a.demo_dir, run / f"checkpoint-{step}", run / f"score-{step}")
            curves[name].append((secs, cpt, icd))
            lines.append(f"{name}  {step}  {secs:.0f}  {100 * cpt:.1f}  {100 * icd:.1f}")
            print(lines[-1], flush=True)
    (a.out / "learning.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot(curves, a.out)
    base = curves.get(a.variants[0], [])
    rows = []
    for name, pts in curves.items():
        if not pts:
            continue
        secs, cpt, icd = pts[-1]
        rows.append({"name": f"learning {name} ({a.steps} steps)", "baseline": f"{base[-1][0]:.0f} s" if base else "",
                     "value": f"{secs:.0f} s", "ratio": f"{base[-1][0] / secs:.2f}x" if base else "",
                     "unit": "train s", "note": f"val CPT F1 {100 * cpt:.1f}, ICD F1 {100 * icd:.1f}"})
    return rows


if __name__ == "__main__":
    from bench import print_table

    print_table(main())
