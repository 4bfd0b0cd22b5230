"""`make demo`: the study end to end on a CPU, every stage through its public CLI.

    python -m opclaim.demo --config demo.yaml [--fresh]

Each stage records what it was computed from (runs/demo/stages/<stage>.json, artifacts.DemoStage):
the config values it reads and the fingerprints of the stages it depends on. A stage whose record
matches and whose outputs exist is skipped; otherwise it runs again, and so does everything
downstream (their inputs hold its fingerprint), and the demo prints why. Editing
`train_overrides` therefore re-trains, re-merges, re-runs the fine-tuned inference and re-scores,
but keeps the data, the base model, the RAG index and the base/RAG predictions. `--fresh` deletes
the output folder first. Prints the headline table and the report's path.

An optional `golden:` key scores the hand-written golden cases of the demo's department(s) as a
third test set, `golden`, beside the same-style and cross-style sets.
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

import opclaim  # noqa: F401  (offline environment)
from opclaim import artifacts, shipped
from opclaim.artifacts import DemoStage
from opclaim.errors import InputError
from opclaim.io import atomic_write, iter_jsonl, read_yaml

BIN = Path(sys.executable).parent
GOLDEN = "golden"
SET_LABELS = {GOLDEN: "golden (hand-written)"}
# The study's four configurations: the default when a demo config names no `configs:`.
STUDY_CONFIGS = {"base": {"weights": "base", "mode": "base"}, "rag": {"weights": "base", "mode": "rag"},
                 "finetuned": {"weights": "tuned", "mode": "finetuned"},
                 "finetuned+constrained": {"weights": "tuned", "mode": "finetuned", "constrain": True}}
CONFIG_KEYS = {"weights", "mode", "constrain", "scope", "cases", "sets"}
RAG_TRAINING = ("rag", "mixed")
# Seconds per unit on a 2-core CPU (SmolLM2-135M; the full run of 2026-12-08, runs/demo/timings.json),
# for the plan and ETA the demo prints; a run rescales them by how fast its finished stages went.
RATE_S = {"infer_case": 2.1, "constrained_x": 1.25, "golden_x": 1.5, "base_x": 1.05, "rag_x": 1.6,
          "train_step": {"every": 3.2, "top": 1.2, "cached": 0.75}, "rag_prompt_x": 1.5,
          "cache_example": 0.45}
FIXED_S = {"data": 5, "golden": 1, "model": 30, "rag": 20, "merge": 12, "scope": 20, "calibrate": 5,
           "knn": 15, "eval": 15, "card": 2}


class Demo:
    def __init__(self, cfg: dict, fresh: bool = False, config_name: str = "demo.yaml"):
        self.cfg, self.config_name = cfg, config_name
        self.out = Path(cfg["out"])
        if fresh and self.out.exists():
            shutil.rmtree(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.t0 = time.perf_counter()
        self.timings: list[tuple[str, float, bool]] = []
        self.ran: list[str] = []
        self.fp: dict[str, str] = {}  # stage name -> fingerprint of its inputs
        self.planning = False  # True while plan() walks the stages without running them
        self.planned: dict[str, tuple[str, float, str | None]] = {}  # key -> (name, estimate s, why it runs)
        self.env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")

    def p(self, *parts) -> Path:
        return self.out.joinpath(*parts)

    # ------------------------------------------------------------------ stage bookkeeping
    def _record(self, key: str) -> Path:
        return self.p("stages", f"{key.replace('/', '__')}.json")

    def why_run(self, key: str, inputs: dict, outputs: list[Path]) -> str | None:
        """None when the stage is up to date; else the reason it must run."""
        rec = self._record(key)
        if not rec.is_file():
            return "no record of a previous run"
        try:
            old = artifacts.load(DemoStage, rec)
        except InputError as e:
            return f"its record is unreadable ({e.reason})"
        if old.fingerprint != artifacts.fingerprint(inputs):
            changed = sorted(k for k in set(old.inputs) | set(inputs)
                             if json.dumps(old.inputs.get(k), sort_keys=True, default=str)
                             != json.dumps(inputs.get(k), sort_keys=True, default=str))
            return "changed: " + ", ".join(changed or ["inputs"])
        missing = [o for o in outputs if not o.exists()]
        if missing:
            return f"output missing: {missing[0].relative_to(self.out)}"
        return None

    def stage(self, key: str, name: str, inputs: dict, outputs: list[Path], *cmds, clear=(), after=None) -> str:
        """Run `cmds` unless the stage is up to date; record its inputs. Returns its fingerprint.
        `clear`: outputs removed before a re-run (stale results must not survive)."""
        fp = artifacts.fingerprint(inputs)
        self.fp[key] = fp
        why = self.why_run(key, inputs, outputs)
        if self.planning:
            self.planned[key] = (name, self.estimate(key, inputs), why)
            return fp
        if why is None:
            self.timings.append((name, 0.0, True))
            print(f"[demo] {name}: up to date", flush=True)
            return fp
        print(f"[demo] {name}: running ({why}) ...", flush=True)
        self._record(key).unlink(missing_ok=True)  # a stage that fails half-way is not up to date
        for c in clear:
            if c.is_dir():
                shutil.rmtree(c)
            else:
                c.unlink(missing_ok=True)
        t = time.perf_counter()
        for cmd in cmds:
            cmd = [str(c) for c in cmd]
            r = subprocess.run(cmd, env=self.env)
            if r.returncode != 0:
                raise SystemExit(f"[demo] {name} failed (exit {r.returncode}): {' '.join(cmd)}")
        if after is not None:
            after()
        artifacts.save(DemoStage(stage=key, fingerprint=fp, inputs=inputs, finished=artifacts.now_utc()),
                       self._record(key))
        took = time.perf_counter() - t
        self.timings.append((name, took, False))
        self.ran.append(key)
        print(f"[demo] {name}: {took:.0f} s (total {time.perf_counter() - self.t0:.0f} s){self.eta(key, took)}",
              flush=True)
        return fp

    # ------------------------------------------------------------------ plan and ETA
    def estimate(self, key: str, inputs: dict) -> float:
        """Seconds this stage should take on an idle 2-core CPU (RATE_S, FIXED_S): a guide, not a promise."""
        kind = key.split("/")[0]
        if kind == "train":
            return self.train_estimate()
        if kind == "infer":
            gold, name = key.split("/")[1], key.split("/")[2].partition("@")[0]
            c = self.configs().get(name, {})
            s = inputs.get("n", 0) * RATE_S["infer_case"]
            s *= RATE_S["constrained_x"] if c.get("constrain") else 1.0
            s *= RATE_S["golden_x"] if gold.startswith(GOLDEN) else 1.0
            s *= RATE_S["base_x"] if c.get("weights") == "base" else 1.0  # an untuned model runs to the limit
            s *= RATE_S["rag_x"] if c.get("mode") == "rag" else 1.0  # two example claims in every prompt
            return s
        return float(FIXED_S.get(kind, 10))

    def train_estimate(self) -> float:
        over = self.cfg.get("train_overrides") or {}
        try:
            recipe = {**read_yaml(shipped.resolve(self.cfg["recipe"]), "recipe"), **over}
        except InputError:
            return 0.0
        rate = RATE_S["train_step"]
        cached = recipe.get("cache_frozen_layers") in (True, "true")
        step = rate["cached"] if cached else rate["top"] if recipe.get("lora_top_layers") else rate["every"]
        if recipe.get("prompt_mode") in RAG_TRAINING:
            step *= RATE_S["rag_prompt_x"]
        cache = self.cfg["data"]["n"] * 0.6 * RATE_S["cache_example"] if cached else 0.0
        return float(recipe.get("max_steps") or 0) * step + cache

    def plan(self) -> None:
        """Walk every stage without running it; print what will run, each with its estimate."""
        self.planning = True
        try:
            self.run_stages()
        finally:
            self.planning = False
            self.fp.clear()
        todo = {k: v for k, v in self.planned.items() if v[2] is not None}
        total = sum(v[1] for v in todo.values())
        print(f"[demo] plan: {len(self.planned)} stages, {len(todo)} to run, about {total / 60:.0f} min "
              f"on an idle 2-core CPU (estimates; the ETA after each stage corrects them):", flush=True)
        for name, est, why in self.planned.values():
            print(f"[demo]   {name:<48} {'up to date' if why is None else f'~{est:.0f} s'}", flush=True)

    def eta(self, key: str, took: float) -> str:
        """', ETA ~N min': the estimates of the stages still to run, scaled by how this run compares."""
        if key not in self.planned:
            return ""
        done = set(self.ran)
        est_done = sum(self.planned[k][1] for k in done if k in self.planned)
        left = sum(est for k, (_, est, why) in self.planned.items() if why is not None and k not in done)
        spent = sum(s for _, s, skipped in self.timings if not skipped)
        scale = min(3.0, max(0.5, spent / est_done)) if est_done > 0 else 1.0
        return f"; ETA ~{left * scale / 60:.1f} min left"

    # ------------------------------------------------------------------ stages
    def data(self):
        d, c = self.cfg["data"], self.cfg
        opc = BIN / "opclaim"
        svc = ["--services", ",".join(d["services"])] if d.get("services") else []
        style = d.get("style", "dictation")
        if style == d["cross_style"]:
            raise InputError("the cross-style test set must be written in another style", field="data.cross_style")
        data_dir = self.p("data")

        def eval_subsets():
            artifacts.load(artifacts.SplitRecord, self.p("data", "split"))  # the split finished
            for name, n in (("val", d["val_eval"]), ("test", d["test_eval"])):
                rows = self.p("data", "split", f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
                with atomic_write(self.p("data", f"{name}_eval.jsonl"), private=True) as fh:  # note text
                    fh.write("\n".join(rows[:n]) + "\n")
            from opclaim.synth import catalog

            codes = sorted(catalog.all_cpt_codes())
            self.p("data", "cpt_catalog.txt").write_text("\n".join(codes) + "\n", encoding="utf-8")

        self.stage("data", "synthesize + split", {"seed": c["seed"], "data": d},
                   [self.p("data", "split", "split.json"), self.p("data", "test_eval.jsonl"),
                    self.p("data", "val_eval.jsonl"), self.p("data", f"{d['cross_style']}.jsonl"),
                    self.p("data", "cpt_catalog.txt")],
                   [opc, "data", "synth", "--n", d["n"], "--seed", c["seed"], "--style", style,
                    "--length", d["length"], *svc, "--out", self.p("data", f"{style}.jsonl")],
                   [opc, "data", "split", self.p("data", f"{style}.jsonl"), "--out", self.p("data", "split"),
                    "--seed", c["seed"]],
                   [opc, "data", "synth", "--n", d["cross_eval"], "--seed", c["seed"] + 1000,
                    "--style", d["cross_style"], "--length", d["length"], *svc, "--out",
                    self.p("data", f"{d['cross_style']}.jsonl")],
                   clear=[data_dir], after=eval_subsets)
        self.golden()

    def golden(self):
        """The golden cases of the demo's department(s), when `golden:` names files that exist."""
        g = self.cfg.get("golden") or {}
        files = [Path(f) for f in (g.get("files") or [])]
        self.has_golden = False
        if not files:
            return
        absent = [f for f in files if not f.is_file()]
        if absent:
            print(f"[demo] golden test set: skipped ({absent[0]} not found)", flush=True)
            return
        services = set(self.cfg["data"].get("services") or [])
        dst = self.p("golden", "golden.jsonl")

        def write():
            # Raw records (every field the golden files carry), filtered by service only.
            rows = [obj for f in files for _, obj in iter_jsonl(f)
                    if not services or obj.get("service") in services]
            if not rows:
                raise InputError(f"no golden case of {', '.join(sorted(services))}", file=files[0],
                                 field="service")
            with atomic_write(dst, private=True) as fh:
                for obj in rows:
                    fh.write(json.dumps(obj, ensure_ascii=False) + "\n")

        self.stage("golden", "golden test set", {"files": {str(f): artifacts.sha256_file(f) for f in files},
                                                 "services": sorted(services)},
                   [dst], clear=[dst], after=write)
        self.has_golden = True

    def model(self):
        self.stage("model", f"pull {self.cfg['model']}", {"model": self.cfg["model"]},
                   [self.p("models", "base", "config.json")],
                   [BIN / "opclaim", "models", "pull", self.cfg["model"], "--out", self.p("models", "base")],
                   clear=[self.p("models", "base")])

    def rag(self):
        self.stage("rag", "RAG index (MiniLM + FAISS)", {"data": self.fp["data"]}, [self.p("rag", "manifest.json")],
                   [BIN / "opclaim", "rag", "build", "--train", self.p("data", "split", "train.jsonl"),
                    "--out", self.p("rag")])

    def train(self):
        over = []
        for k, v in (self.cfg.get("train_overrides") or {}).items():
            over += [f"--{k}", v]
        recipe = shipped.resolve(self.cfg["recipe"])  # the installed copy when not in the working directory
        if not recipe.is_file():
            raise InputError("recipe not found", file=recipe, field="recipe")
        inputs = {"recipe": str(recipe), "recipe_sha256": artifacts.sha256_file(recipe),
                  "train_overrides": self.cfg.get("train_overrides") or {},
                  "model": self.fp["model"], "data": self.fp["data"]}
        seed = int(self.cfg.get("seed") or 0)
        if seed and "seed" not in (self.cfg.get("train_overrides") or {}):
            # another demo seed also draws another LoRA initialisation and data order
            over += ["--seed", 42 + seed]
            inputs["seed"] = seed
        if (self.cfg.get("train_overrides") or {}).get("prompt_mode") in RAG_TRAINING:
            over += ["--rag-index", self.p("rag")]  # retrieval-tuned: the training index of this data
            inputs["rag"] = self.fp["rag"]
        self.stage("train", "fine-tune (LoRA/QLoRA, CPU recipe)", inputs,
                   [self.p("adapter", "opclaim_run.json")],
                   [BIN / "opclaim", "train", "--config", recipe,
                    "--model-name-or-path", self.p("models", "base"),
                    "--train-file", self.p("data", "split", "train.jsonl"),
                    "--eval-file", self.p("data", "val_eval.jsonl"),
                    "--output-dir", self.p("adapter"), *over],
                   clear=[self.p("adapter")])  # a stale checkpoint would resume the old run
        self.stage("merge", "merge adapter", {"train": self.fp["train"]}, [self.p("merged", "config.json")],
                   [BIN / "opclaim", "merge", "--model", self.p("models", "base"), "--adapter", self.p("adapter"),
                    "--out", self.p("merged")])

    def sets(self) -> dict[str, Path]:
        d = self.cfg["data"]
        out = {"val": self.p("data", "val_eval.jsonl"), "test": self.p("data", "test_eval.jsonl"),
               d["cross_style"]: self.p("data", f"{d['cross_style']}.jsonl")}
        if getattr(self, "has_golden", False):
            out[GOLDEN] = self.p("golden", "golden.jsonl")
        return out

    def golden_configs(self) -> list[str]:
        """LLM configurations scored on the golden set (`golden: {configs: [...]}`; default all)."""
        return list((self.cfg.get("golden") or {}).get("configs") or list(self.configs()))

    def set_stage(self, gold: str) -> str:
        return GOLDEN if gold == GOLDEN else "data"

    def configs(self) -> dict[str, dict]:
        """name -> {weights: base|tuned, mode, constrain, scope, cases} for every LLM configuration
        (`configs:` in the demo config; default: the study's four)."""
        cfgs = self.cfg.get("configs") or STUDY_CONFIGS
        if not (self.cfg.get("infer") or {}).get("constrain", True):  # a quicker demo (tests/test_demo.py)
            cfgs = {k: v for k, v in cfgs.items() if not v.get("constrain")}
        for name, c in cfgs.items():
            bad = sorted(set(c) - CONFIG_KEYS)
            if bad or c.get("weights") not in ("base", "tuned") or c.get("mode") not in ("base", "rag", "finetuned"):
                raise InputError("a configuration needs weights base|tuned and mode base|rag|finetuned"
                                 + (f" (unknown key {bad[0]})" if bad else ""), field=f"configs.{name}")
            sets = c.get("sets", [])
            if not isinstance(sets, list) or not all(isinstance(x, str) for x in sets):
                raise InputError("a list of set names (test, the cross style, golden)", field=f"configs.{name}.sets")
        return cfgs

    def scope_of(self, c: dict) -> str:
        scope = c.get("scope", "prompt")
        return self.chosen_scope if scope == "val" else scope

    def infer_args(self, c: dict, scope: str) -> tuple[list, list[str]]:
        """(opclaim infer arguments, stages they depend on) for one configuration."""
        tuned = c["weights"] == "tuned"
        args = ["--model", self.p("merged") if tuned else self.p("models", "base"), "--mode", c["mode"]]
        deps = ["merge"] if tuned else ["model"]
        if c["mode"] == "rag":
            args += ["--rag-index", self.p("rag")]
            deps.append("rag")
        if c.get("constrain"):
            args += ["--constrain", "--cpt-ref", self.p("data", "cpt_catalog.txt")]
            deps.append("data")
        if scope != "prompt":
            args += ["--repetition-scope", scope]
        return args, deps

    def subset(self, gold: str, n: int | None) -> str:
        """The set a configuration limited to its first n cases is scored on ("test-16"), written once."""
        path = self.sets()[gold]
        if self.planning and not path.is_file():  # a fresh run's plan: the set is not written yet
            if not n:
                return gold
            self.extra_sets[f"{gold}-{n}"] = (self.p("data", "subsets", f"{gold}-{n}.jsonl"), gold)
            return f"{gold}-{n}"
        rows = path.read_text(encoding="utf-8").splitlines()
        if not n or n >= len(rows):
            return gold
        name = f"{gold}-{n}"
        dst = self.p("data", "subsets", f"{name}.jsonl")
        if not dst.is_file() or dst.read_text(encoding="utf-8").splitlines() != rows[:n]:
            with atomic_write(dst, private=True) as fh:  # note text
                fh.write("\n".join(rows[:n]) + "\n")
        self.extra_sets[name] = (dst, gold)
        return name

    def runs(self) -> list[tuple[str, str, list, list[str], str]]:
        """(gold set, configuration, infer arguments, stages it depends on, scope) for every test-set run."""
        out = []
        for gold in list(self.sets()):
            if gold == "val":
                continue  # val: the scope choice (choose_scope)
            for name, c in self.configs().items():
                if gold == GOLDEN and name not in self.golden_configs():
                    continue  # long hand-written notes cost most per case: only the configs asked for
                if c.get("sets") and gold not in c["sets"]:
                    continue  # `sets: [test]`: a reference row scored where it informs
                scope = self.scope_of(c)
                args, deps = self.infer_args(c, scope)
                out.append((self.subset(gold, c.get("cases")), name, args, deps, scope))
        return out

    def cases_of(self, gold: str) -> tuple[Path, str]:
        """(cases file, the set it was cut from) for a set or a `-N` subset of one."""
        return self.extra_sets.get(gold, (self.sets().get(gold), gold))

    def n_cases(self, cases_file: Path, gold: str) -> int:
        """Cases in a set; while planning a fresh run, the number the config asks for."""
        if Path(cases_file).is_file():
            return len(Path(cases_file).read_text(encoding="utf-8").splitlines())
        d, head = self.cfg["data"], gold.partition("-")
        if head[2].isdigit():
            return int(head[2])
        return {"val": d["val_eval"], "test": d["test_eval"], d["cross_style"]: d["cross_eval"]}.get(gold, 42)

    def run_infer(self, gold: str, name: str, args: list, deps: list[str], scope: str) -> None:
        i = self.cfg["infer"]
        cases_file, base_set = self.cases_of(gold)
        pred = self.p("preds", gold, f"{name}.jsonl")
        inputs = {"infer": i, "cases": self.fp[self.set_stage(base_set)], "scope": scope,
                  "n": self.n_cases(cases_file, gold), **{d: self.fp[d] for d in deps}}
        self.stage(f"infer/{gold}/{name}", f"infer {name} on {gold}", inputs, [pred],
                   [BIN / "opclaim", "infer", *args, "--cases", cases_file, "--out", pred,
                    "--config-name", name, "--batch-size", i["batch_size"],
                    "--max-new-tokens", i["max_new_tokens"],
                    "--repetition-penalty", i["repetition_penalty"], "--force-new"])

    def choose_scope(self) -> None:
        """The repetition-penalty scope of `scope: val` configurations: each candidate scope of the
        `scope_choice.config` configuration scored on val, the best CPT F1 (then ICD-10-CM F1) kept."""
        choice = self.cfg.get("scope_choice") or {}
        self.chosen_scope = "prompt"
        name = choice.get("config")
        if not name:
            return
        c = self.configs().get(name)
        if c is None:
            raise InputError("names no configuration of configs", field="scope_choice.config")
        scopes = list(choice.get("scopes") or ["prompt", "generated"])
        preds = []
        for scope in scopes:
            args, deps = self.infer_args(c, scope)
            self.run_infer("val", f"{name}@{scope}", args, deps, scope)
            preds.append((scope, self.p("preds", "val", f"{name}@{scope}.jsonl")))
        out = self.p("scope")
        self.stage("scope", "choose the repetition scope on val",
                   {s: self.fp[f"infer/val/{name}@{s}"] for s in scopes}, [out / "metrics.json"],
                   [BIN / "opclaim", "eval", "--out", out, "--bootstrap", 0, "--gold", f"val={self.sets()['val']}",
                    *[a for s, p in preds for a in ("--predictions", f"val/{name}@{s}={p}")], "--cpt-ref", self.p("data", "cpt_catalog.txt")],
                   clear=[out])
        if self.planning:
            return  # nothing scored yet: the plan takes the first scope
        m = artifacts.load(artifacts.EvalMetrics, out / "metrics.json").blocks()["val"]
        score = {cfg.rpartition("@")[2]: (b["cpt"]["f1"] or 0.0, b["icd10"]["f1"] or 0.0) for cfg, b in m}
        self.chosen_scope = max(scopes, key=lambda s: (score[s], -scopes.index(s)))
        print(f"[demo] repetition scope for {name}: {self.chosen_scope} (val CPT/ICD F1: "
              + ", ".join(f"{s} {100 * score[s][0]:.1f}/{100 * score[s][1]:.1f}" for s in scopes) + ")", flush=True)

    def calibrate(self) -> None:
        """`routing: {config, target_precision}`: that configuration on val (reusing the scope
        choice's run when it is the same), `opclaim calibrate` on it, and eval routes its codes."""
        r = self.cfg.get("routing") or {}
        self.cal = None
        name = r.get("config")
        if not name:
            return
        c = self.configs().get(name)
        if c is None:
            print(f"[demo] routing: skipped ({name} is not among this run's configurations)", flush=True)
            return
        scope = self.scope_of(c)
        val_name = f"{name}@{scope}"
        if f"infer/val/{val_name}" not in self.fp:
            args, deps = self.infer_args(c, scope)
            self.run_infer("val", val_name, args, deps, scope)
        target = float(r.get("target_precision", 0.95))
        out = self.p("calibration", "cal.json")
        self.stage("calibrate", f"calibrate {name} on val", {"val": self.fp[f"infer/val/{val_name}"],
                                                            "target_precision": target}, [out],
                   [BIN / "opclaim", "calibrate", "--predictions", self.p("preds", "val", f"{val_name}.jsonl"),
                    "--gold", self.sets()["val"], "--out", out, "--target-precision", target],
                   clear=[self.p("calibration")])
        self.cal = (name, out, target)

    def infer(self):
        self.extra_sets: dict[str, tuple[Path, str]] = {}
        self.choose_scope()
        self.calibrate()
        for gold, name, args, deps, scope in self.runs():
            self.run_infer(gold, name, args, deps, scope)
        for gold in [*self.sets(), *self.extra_sets]:
            if gold == "val":
                continue
            cases_file, base_set = self.cases_of(gold)
            pred = self.p("preds", gold, "knn.jsonl")
            self.stage(f"knn/{gold}", f"kNN baseline on {gold}",
                       {"rag": self.fp["rag"], "data": self.fp["data"], "cases": self.fp[self.set_stage(base_set)],
                        "set": gold},
                       [pred],
                       [BIN / "opclaim", "knn", "--index", self.p("rag"), "--cases", cases_file,
                        "--val", self.p("data", "split", "val.jsonl"), "--out", pred], clear=[pred])

    def evaluate(self):
        args = [BIN / "opclaim", "eval", "--out", self.p("report"), "--bootstrap", self.cfg["eval"]["bootstrap"],
                "--seed", self.cfg["seed"], "--cpt-ref", self.p("data", "cpt_catalog.txt"),
                "--title", self.cfg.get("title", "opclaim demo: SmolLM2-135M-Instruct on the synthetic benchmark")]
        every = {**self.sets(), **{k: v[0] for k, v in self.extra_sets.items()}}
        for gold, path in every.items():
            args += ["--gold", f"{gold}={path}"]
        if self.cfg.get("headline_config"):
            args += ["--headline-config", self.cfg["headline_config"]]
        cal = getattr(self, "cal", None)
        if cal is not None:
            args += ["--calibration", f"{cal[0]}={cal[1]}", "--target-precision", cal[2],
                     "--train", self.p("data", "split", "train.jsonl")]
        preds = {}
        for gold in every:
            for pred in sorted(self.p("preds", gold).glob("*.jsonl")):
                args += ["--predictions", f"{gold}/{pred.stem}={pred}"]
                preds[f"{gold}/{pred.stem}"] = self.fp.get(f"infer/{gold}/{pred.stem}") or self.fp.get(f"knn/{gold}")
        self.stage("eval", "evaluate + report", {"eval": self.cfg["eval"], "seed": self.cfg["seed"],
                                                 "predictions": preds, "headline": self.cfg.get("headline_config"),
                                                 **({"calibrate": self.fp["calibrate"]} if cal else {})},
                   [self.p("report", "metrics.json")], args)
        self.stage("card", "model card", {"train": self.fp["train"], "eval": self.fp["eval"]},
                   [self.p("adapter", "README.md")],
                   [BIN / "opclaim", "card", "--model", self.p("adapter"), "--metrics", self.p("report", "metrics.json")])

    def headline(self) -> str:
        return headline_table(artifacts.load(artifacts.EvalMetrics, self.p("report", "metrics.json")))

    def run_stages(self):
        self.data()
        self.model()
        self.rag()
        self.train()
        self.infer()
        self.evaluate()

    def run(self):
        self.plan()
        self.run_stages()
        table = self.headline()
        total = time.perf_counter() - self.t0
        print("\n" + table)
        self.write_table(table, total)
        print(f"\nreport: {self.p('report', 'report.html')}   worklist: {self.p('report', 'cases.csv')}")
        print(f"model card: {self.p('adapter', 'README.md')}   wall time: {total / 60:.1f} min")
        (self.p("timings.json")).write_text(json.dumps(
            {"total_s": round(total, 1), "ran": self.ran,
             "steps": [{"step": n, "seconds": round(s, 1), "skipped": k} for n, s, k in self.timings]},
            indent=2) + "\n")


    def write_table(self, table: str, total_s: float) -> Path:
        """runs/demo/table.md: the printed table with when, from what and how it was made; the
        README's demo table is this file spliced in (`--readme`), never copied by hand."""
        d = self.cfg["data"]
        try:
            commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                    cwd=Path(__file__).resolve().parent.parent, timeout=10).stdout.strip()
        except OSError:
            commit = ""
        sizes = f"test and {d['cross_style']} {d['test_eval']} and {d['cross_eval']} cases, val {d['val_eval']}"
        if getattr(self, "has_golden", False):
            sizes += f", golden {sum(1 for _ in iter_jsonl(self.p('golden', 'golden.jsonl')))}"
        limited = sorted({f"{name} on the first {c['cases']}" for name, c in self.configs().items()
                          if c.get("cases")})
        if limited:
            sizes += "; " + ", ".join(limited) + " cases of each (sets `-N`)"
        if getattr(self, "chosen_scope", None) and (self.cfg.get("scope_choice") or {}).get("config"):
            sizes += (f"; repetition-penalty scope of the `scope: val` configurations chosen on val: "
                      f"{self.chosen_scope}")
        steps = sum(1 for _, _, skipped in self.timings if not skipped)
        stages = len(self.planned) or steps
        took = (f"a full run, all {stages} stages, {total_s / 60:.1f} min wall" if steps >= stages else
                f"{total_s / 60:.1f} min for {steps} of {stages} stages (not a full run: the others were up to date)")
        text = (f"Measured {time.strftime('%Y-%m-%d')} (commit {commit or 'unknown'}) with "
                f"`python -m opclaim.demo --config {self.config_name}`: {took}, "
                f"on a {os.cpu_count()}-core CPU. Values in %; `fab.` = fabricated "
                f"codes; `n/a` = no codes generated; {sizes}.\n\n```\n{table}\n```\n")
        out = self.p("table.md")
        with atomic_write(out) as fh:
            fh.write(text)
        return out


TABLE_START, TABLE_END = "<!-- demo-table:start -->", "<!-- demo-table:end -->"


def splice_table(readme: Path, table_md: Path) -> None:
    """Put table.md between the README's demo-table markers (atomically); nothing else changes."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 or end < start:
        raise InputError(f"no {TABLE_START} ... {TABLE_END} block", file=readme)
    if not table_md.is_file():
        raise InputError("no demo table yet: run the demo first", file=table_md)
    new = text[:start + len(TABLE_START)] + "\n" + table_md.read_text(encoding="utf-8") + text[end:]
    with atomic_write(readme) as fh:
        fh.write(new)


def headline_table(metrics: artifacts.EvalMetrics) -> str:
    """The study's Table 2 rows (F1, full match, fabricated) per gold set and configuration."""
    rows = [("set", "config", "ICD F1", "ICD full", "ICD fab.", "CPT F1", "CPT full", "CPT fab.", "Mod F1")]
    for gold, block in metrics.blocks().items():
        for cfg, m in block:
            icd, cpt, mod = m["icd10"], m["cpt"], m["modifier"]
            rows.append((SET_LABELS.get(gold, gold), cfg, _pct(icd["f1"]), _pct(icd["full_match"]),
                         _pct(icd["fabricated"]), _pct(cpt["f1"]), _pct(cpt["full_match"]),
                         _pct(cpt["fabricated"]), _pct(mod["f1"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="demo.yaml")
    ap.add_argument("--fresh", action="store_true", help="delete the output folder first")
    ap.add_argument("--seed", type=int, help="override the config's seed (data, split and, when not 0, "
                    "training seed 42 + SEED): the same demo on another draw")
    ap.add_argument("--out", help="override the config's output folder (e.g. runs/demo-seed1)")
    ap.add_argument("--plan", action="store_true", help="print the stages that would run, with estimates, "
                    "and exit without running any")
    ap.add_argument("--readme", metavar="FILE", help="after the run, put its table.md into FILE's "
                    "demo-table block (how README.md's table is made)")
    args = ap.parse_args(argv)
    path = shipped.resolve(args.config)
    if not path.is_file():
        raise InputError("demo config not found", file=path)
    cfg = read_yaml(path, "demo config")
    if args.seed is not None:
        cfg["seed"] = args.seed
    if args.out:
        cfg["out"] = args.out
    name = path.as_posix() + (f" --seed {args.seed}" if args.seed is not None else "")
    demo = Demo(cfg, fresh=args.fresh and not args.plan, config_name=name)
    if args.plan:
        demo.plan()
        return 0
    demo.run()
    if args.readme:
        splice_table(Path(args.readme), demo.p("table.md"))
        print(f"demo table written into {args.readme}")
    return 0


if __name__ == "__main__":
    from opclaim.exits import call, take_debug_flag

    argv, debug = take_debug_flag(sys.argv[1:])
    sys.exit(call("demo", main, argv, debug=debug))
