"""`make demo`: the study end to end on a CPU, every stage through its public CLI.

    python -m opclaim.demo --config demo.yaml [--fresh]

Stages whose outputs exist are skipped (delete runs/demo or pass --fresh to redo them), so a
second run only repeats what changed. Prints the headline table and the report's path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

import opclaim  # noqa: F401  (offline environment)
from opclaim.errors import InputError
from opclaim.io import atomic_write

BIN = Path(sys.executable).parent


class Demo:
    def __init__(self, cfg: dict, fresh: bool = False):
        self.cfg = cfg
        self.out = Path(cfg["out"])
        if fresh and self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.timings: list[tuple[str, float, bool]] = []
        self.env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")

    def p(self, *parts) -> Path:
        return self.out.joinpath(*parts)

    def step(self, name: str, done: Path | None, *cmds: list[str]) -> None:
        """Run `cmds` unless `done` exists (None: always run); log the wall time."""
        if done is not None and done.exists():
            self.timings.append((name, 0.0, True))
            print(f"[demo] {name}: done already ({done})", flush=True)
            return
        print(f"[demo] {name} ...", flush=True)
        t = time.perf_counter()
        for cmd in cmds:
            cmd = [str(c) for c in cmd]
            r = subprocess.run(cmd, env=self.env)
            if r.returncode != 0:
                raise SystemExit(f"[demo] {name} failed (exit {r.returncode}): {' '.join(cmd)}")
        took = time.perf_counter() - t
        self.timings.append((name, took, False))
        print(f"[demo] {name}: {took:.0f} s (total {time.perf_counter() - self.t0:.0f} s)", flush=True)

    # ------------------------------------------------------------------ stages
    def data(self):
        d, c = self.cfg["data"], self.cfg
        opc = BIN / "opclaim"
        svc = ["--services", ",".join(d["services"])] if d.get("services") else []
        style = d.get("style", "dictation")
        if style == d["cross_style"]:
            raise InputError("the cross-style test set must be written in another style", field="data.cross_style")
        self.step("synthesize + split", self.p("data", "split", "test.jsonl"),
                  [opc, "data", "synth", "--n", d["n"], "--seed", c["seed"], "--style", style,
                   "--length", d["length"], *svc, "--out", self.p("data", f"{style}.jsonl")],
                  [opc, "data", "split", self.p("data", f"{style}.jsonl"), "--out", self.p("data", "split"),
                   "--seed", c["seed"]],
                  [opc, "data", "synth", "--n", d["cross_eval"], "--seed", c["seed"] + 1000,
                   "--style", d["cross_style"], "--length", d["length"], *svc, "--out",
                   self.p("data", f"{d['cross_style']}.jsonl")])
        for name, n in (("val", d["val_eval"]), ("test", d["test_eval"])):
            dst = self.p("data", f"{name}_eval.jsonl")
            if not dst.exists():
                rows = self.p("data", "split", f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
                with atomic_write(dst, private=True) as fh:  # note text: owner-only
                    fh.write("\n".join(rows[:n]) + "\n")
        cat = self.p("data", "cpt_catalog.txt")
        if not cat.exists():
            from opclaim.synth import catalog

            codes = sorted(catalog.all_cpt_codes())
            cat.write_text("\n".join(codes) + "\n", encoding="utf-8")

    def model(self):
        self.step("pull SmolLM2-135M-Instruct", self.p("models", "base", "config.json"),
                  [BIN / "opclaim", "models", "pull", self.cfg["model"], "--out", self.p("models", "base")])

    def rag(self):
        self.step("RAG index (MiniLM + FAISS)", self.p("rag", "manifest.json"),
                  [BIN / "opclaim", "rag", "build", "--train", self.p("data", "split", "train.jsonl"),
                   "--out", self.p("rag")])

    def train(self):
        over = []
        for k, v in (self.cfg.get("train_overrides") or {}).items():
            over += [f"--{k}", v]
        self.step("fine-tune (LoRA/QLoRA, CPU recipe)", self.p("adapter", "adapter_model.safetensors"),
                  [sys.executable, "-m", "train", "--config", self.cfg["recipe"],
                   "--model_name_or_path", self.p("models", "base"),
                   "--train_file", self.p("data", "split", "train.jsonl"),
                   "--eval_file", self.p("data", "val_eval.jsonl"),
                   "--output_dir", self.p("adapter"), *over])
        self.step("merge adapter", self.p("merged", "config.json"),
                  [BIN / "opclaim", "merge", "--model", self.p("models", "base"), "--adapter", self.p("adapter"),
                   "--out", self.p("merged")])

    def sets(self) -> dict[str, Path]:
        d = self.cfg["data"]
        return {"val": self.p("data", "val_eval.jsonl"), "test": self.p("data", "test_eval.jsonl"),
                d["cross_style"]: self.p("data", f"{d['cross_style']}.jsonl")}

    def runs(self) -> list[tuple[str, str, list]]:
        """(gold set, configuration, infer arguments) for every LLM run."""
        base, merged = self.p("models", "base"), self.p("merged")
        cfgs = {"base": ["--model", base, "--mode", "base"],
                "rag": ["--model", base, "--mode", "rag", "--rag-index", self.p("rag")],
                "finetuned": ["--model", merged, "--mode", "finetuned"],
                "finetuned+constrained": ["--model", merged, "--mode", "finetuned", "--constrain",
                                          "--cpt-ref", self.p("data", "cpt_catalog.txt")]}
        out = []
        for gold in self.sets():
            for name, args in cfgs.items():
                if gold == "val" and name != "finetuned":
                    continue  # val is scored for the val-versus-test gap only
                out.append((gold, name, args))
        return out

    def infer(self):
        i = self.cfg["infer"]
        for gold, name, args in self.runs():
            pred = self.p("preds", gold, f"{name}.jsonl")
            done = self.p("preds", gold, f"{name}.done")
            self.step(f"infer {name} on {gold}", done,
                      [BIN / "opclaim", "infer", *args, "--cases", self.sets()[gold], "--out", pred,
                       "--config-name", name, "--batch-size", i["batch_size"],
                       "--max-new-tokens", i["max_new_tokens"],
                       "--repetition-penalty", i["repetition_penalty"]])
            done.touch()
        for gold in self.sets():
            if gold == "val":
                continue
            self.step(f"kNN baseline on {gold}", self.p("preds", gold, "knn.jsonl"),
                      [BIN / "opclaim", "knn", "--index", self.p("rag"), "--cases", self.sets()[gold],
                       "--val", self.p("data", "split", "val.jsonl"), "--out", self.p("preds", gold, "knn.jsonl")])

    def evaluate(self):
        args = [BIN / "opclaim", "eval", "--out", self.p("report"), "--bootstrap", self.cfg["eval"]["bootstrap"],
                "--seed", self.cfg["seed"], "--cpt-ref", self.p("data", "cpt_catalog.txt"),
                "--title", "opclaim demo: SmolLM2-135M-Instruct on the synthetic benchmark"]
        for gold, path in self.sets().items():
            args += ["--gold", f"{gold}={path}"]
        for pred in sorted(self.p("preds").glob("*/*.jsonl")):
            args += ["--predictions", f"{pred.parent.name}/{pred.stem}={pred}"]
        if self.p("report", "metrics.json").exists():
            self.p("report", "metrics.json").unlink()  # always re-score: predictions may have changed
        self.step("evaluate + report", self.p("report", "metrics.json"), args)
        self.step("model card", None,  # always: PEFT leaves a template README.md in the adapter
                  [BIN / "opclaim", "card", "--model", self.p("adapter"), "--metrics", self.p("report", "metrics.json")])

    def headline(self) -> str:
        m = json.loads(self.p("report", "metrics.json").read_text(encoding="utf-8"))
        return headline_table(m)

    def run(self):
        self.data()
        self.model()
        self.rag()
        self.train()
        self.infer()
        self.evaluate()
        table = self.headline()
        total = time.perf_counter() - self.t0
        print("\n" + table)
        print(f"\nreport: {self.p('report', 'report.html')}   worklist: {self.p('report', 'cases.csv')}")
        print(f"model card: {self.p('adapter', 'README.md')}   wall time: {total / 60:.1f} min")
        (self.p("timings.json")).write_text(json.dumps(
            {"total_s": round(total, 1), "steps": [{"step": n, "seconds": round(s, 1), "skipped": k}
                                                    for n, s, k in self.timings]}, indent=2) + "\n")


def headline_table(metrics: dict) -> str:
    """The study's Table 2 rows (F1, full match, fabricated) per gold set and configuration."""
    rows = [("set", "config", "ICD F1", "ICD full", "ICD fab.", "CPT F1", "CPT full", "CPT fab.", "Mod F1")]
    for gold, block in _blocks(metrics):
        for cfg, m in block:
            icd, cpt, mod = m["icd10"], m["cpt"], m["modifier"]
            rows.append((gold, cfg, _pct(icd["f1"]), _pct(icd["full_match"]), _pct(icd["fabricated"]),
                         _pct(cpt["f1"]), _pct(cpt["full_match"]), _pct(cpt["fabricated"]), _pct(mod["f1"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _blocks(metrics: dict):
    """Yield (gold set, [(config, metrics)]) whatever nesting eval wrote."""
    configs = metrics.get("configs", metrics)
    groups: dict[str, list] = {}
    for key, m in configs.items():
        if not isinstance(m, dict) or "icd10" not in m:
            continue
        gold, _, cfg = key.rpartition("/")
        groups.setdefault(gold or m.get("gold", ""), []).append((cfg, m))
    return groups.items()


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="demo.yaml")
    ap.add_argument("--fresh", action="store_true", help="delete the output folder first")
    args = ap.parse_args(argv)
    path = Path(args.config)
    if not path.is_file():
        raise InputError("demo config not found", file=path)
    Demo(yaml.safe_load(path.read_text(encoding="utf-8")), fresh=args.fresh).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
