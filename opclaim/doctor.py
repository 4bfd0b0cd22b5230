"""`opclaim doctor`: the preflight a site runs on its GPU machine before a long training run.

Three parts, each a list of ok / warning / error lines with the fix:
  environment  opclaim/environment.py (torch build, GPUs, NCCL, library versions, kernels, offline)
  shape        train/preflight.py: the recipe's model from its config (random weights), its
               quantisation, LoRA targets and attention; a few measured optimizer steps on the
               longest example under the recipe's accelerate/DeepSpeed config; peak memory per
               rank against train/memory.py's estimate; tokens/s; projected wall time; the fit
               against --gpu-gb (or the smallest visible GPU), with the knobs that would make it fit
  inference    infer/smoke.py: merge the few-step adapter, batched == one-at-a-time, constrained

Exit 0: everything ok (warnings allowed); 2: something the recipe needs is missing or would not fit
(named in the report), or bad input; 1: internal error. Files: only --json and the scratch folder
(a temporary folder removed at the end unless --scratch names one to keep).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import opclaim  # noqa: F401
from opclaim.environment import ERROR, OK, WARNING, Check
from opclaim.errors import InputError

SCHEMA = "opclaim.doctor/1"
PROBE_STEPS = 3
GiB = 1024**3


def _gib(n) -> str:
    return f"{n / GiB:.3f} GiB" if n < 10 * GiB else f"{n / GiB:.1f} GiB"


class Report:
    def __init__(self):
        self.checks: list[tuple[str, Check]] = []
        self.data: dict = {"schema": SCHEMA}

    def add(self, section: str, name: str, status: str, detail: str, fix: str = "") -> Check:
        c = Check(name, status, detail, fix)
        self.checks.append((section, c))
        return c

    @property
    def errors(self) -> list[Check]:
        return [c for _, c in self.checks if c.status == ERROR]

    def to_dict(self) -> dict:
        return {**self.data, "checks": [{"section": s, **c.to_dict()} for s, c in self.checks]}

    def text(self) -> str:
        lines, last = [], None
        for section, c in self.checks:
            if section != last:
                lines.append(f"{section}:")
                last = section
            mark = {OK: "ok", WARNING: "WARNING", ERROR: "ERROR"}[c.status]
            lines.append(f"  [{mark:^7}] {c.name}: {c.detail}" + (f" -- fix: {c.fix}" if c.fix else ""))
        return "\n".join(lines)


def check_inputs(args) -> dict:
    """Everything cheap, before torch loads: files exist and parse; InputError names file and field."""
    from opclaim.io import read_cases
    from opclaim.registry import check_model_dir
    from train import preflight

    got = {"recipe": None, "accel": preflight.read_accelerate_config(None), "cases": None, "model": None}
    if args.gpu_gb is not None and args.gpu_gb <= 0:
        raise InputError("must be > 0", field="--gpu-gb", from_command_line=True)
    if args.recipe:
        recipe = Path(args.recipe)
        if not recipe.is_file():
            raise InputError("recipe not found", file=recipe, field="--recipe")
        from opclaim.io import read_yaml

        doc = read_yaml(recipe, "recipe")
        if not isinstance(doc, dict):
            raise InputError("recipe is not a YAML mapping", file=recipe)
        got["recipe"], got["recipe_doc"] = recipe, doc
        model = args.model or doc.get("model_name_or_path")
        if not model or not isinstance(model, str):
            raise InputError("no model: give --model DIR (a folder with config.json and the tokenizer)",
                             file=recipe, field="model_name_or_path")
        got["model"] = check_model_dir(model, need_weights=False)
    elif args.accelerate_config:
        got["accel"] = preflight.read_accelerate_config(args.accelerate_config)
    elif args.model:
        got["model"] = check_model_dir(args.model, need_weights=False)
    if args.train_file:
        if not Path(args.train_file).is_file():
            raise InputError("training file not found", file=args.train_file, field="--train-file")
        got["cases"] = read_cases(args.train_file)
        if not got["cases"]:
            raise InputError("no cases", file=args.train_file, field="--train-file")
    if args.recipe:  # relative paths in accelerate configs are relative to the checkout, as for training
        accel = args.accelerate_config or preflight.recipe_accelerate_config(got["recipe"])
        got["accel"] = preflight.read_accelerate_config(accel)
    return got


def needs_of(margs, dargs, targs, accel) -> dict:
    return {"gpu": not targs.use_cpu, "bf16": bool(targs.bf16), "load_in_4bit": bool(margs.load_in_4bit),
            "attn": margs.attn_implementation, "deepspeed": accel["deepspeed"],
            "rag": dargs.prompt_mode in ("rag", "mixed")}


def run(args) -> int:
    got = check_inputs(args)
    keep = bool(args.scratch)
    scratch = Path(args.scratch) if keep else Path(tempfile.mkdtemp(prefix="opclaim-doctor-"))
    scratch.mkdir(parents=True, exist_ok=True)
    rep = Report()
    rep.data["scratch"] = str(scratch) if keep else None
    try:
        code = _run(args, got, scratch, rep)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
    rep.data["exit"] = code
    print(rep.text())
    n = {s: sum(1 for _, c in rep.checks if c.status == s) for s in (OK, WARNING, ERROR)}
    verdict = "ready" if code == 0 else "NOT ready: fix the ERROR lines above"
    print(f"doctor: {n[OK]} ok, {n[WARNING]} warnings, {n[ERROR]} errors -> {verdict} (exit {code})")
    if args.json:
        from opclaim.io import atomic_write

        with atomic_write(args.json) as fh:
            json.dump(rep.to_dict(), fh, indent=2)
        print(f"wrote {args.json}")
    return code


def _say(msg: str) -> None:
    sys.stderr.write(f"doctor: {msg}\n")
    sys.stderr.flush()


def _run(args, got, scratch: Path, rep: Report) -> int:
    import os

    from opclaim import environment
    from train import preflight

    for k, v in preflight.child_env(scratch).items():  # this process's caches go there too
        if k not in ("PYTHONUNBUFFERED",):
            os.environ[k] = v
    margs = dargs = targs = None
    accel = got["accel"]
    if got["recipe"]:
        overrides = ["--model_name_or_path", str(got["model"]), "--output_dir", str(scratch / "run")]
        margs, dargs, targs = preflight.read_recipe(got["recipe"], overrides)
    needs = needs_of(margs, dargs, targs, accel) if margs else {}
    _say("collecting the environment")
    facts = environment.collect()
    rep.data["environment"] = facts
    for c in environment.judge(facts, needs):
        rep.checks.append(("environment", c))
    if not got["recipe"]:
        return 2 if rep.errors else 0
    env_ok = not rep.errors
    _shape(args, got, margs, dargs, targs, accel, facts, scratch, rep, env_ok)
    return 2 if rep.errors else 0


def _shape(args, got, margs, dargs, targs, accel, facts, scratch, rep, env_ok):
    from opclaim.registry import load_tokenizer
    from train import model as model_mod
    from train import preflight
    from train.data import choose_format
    from train.memory import shape_from_dir

    recipe, model_dir = got["recipe"], got["model"]
    padding_free = model_mod.is_padding_free(targs)
    shape = preflight.model_shape(model_dir, margs, padding_free)
    rep.data["shape"] = shape
    targets = ", ".join(f"{t} x{n}" for t, n in shape["lora"]["targets"].items())
    rep.add("shape", "model", OK, f"{shape['model_type']} from {model_dir / 'config.json'}: "
            f"{shape['parameters'] / 1e6:.1f} M parameters, {shape['layers']} layers (meta device, no weights read)")
    rep.add("shape", "quantisation", OK, f"{shape['quantisation']}, compute {shape['compute_dtype']}")
    rep.add("shape", "LoRA", OK, f"r={margs.lora_r} alpha={margs.lora_alpha}: {targets}")
    rep.add("shape", "attention", OK, shape["attention"] + (" (padding-free)" if padding_free else ""))
    tok = load_tokenizer(model_dir)
    fmt = choose_format(tok, dargs.prompt_format)
    max_len = targs.max_length or shape["max_position_embeddings"] or 4096
    if got["cases"]:
        case, p_tok, c_tok = preflight.longest_case(got["cases"], fmt, tok)
        source = f"longest of {len(got['cases'])} cases in {args.train_file}"
    else:
        case, p_tok, c_tok = preflight.synthetic_case(fmt, tok, max_len)
        source = f"synthetic case at the recipe's max_length {max_len}"
    seq = min(p_tok + c_tok, max_len)
    kept_claim = max(0, min(c_tok, max_len - p_tok))
    trunc = p_tok + c_tok > max_len
    rep.add("shape", "longest example", WARNING if trunc and kept_claim < c_tok else OK,
            f"{p_tok + c_tok} tokens ({p_tok} prompt + {c_tok} claim; {source})"
            + (f", truncated to max_length {max_len}" if trunc else ""),
            "raise max_length or the claim is cut in training" if trunc and kept_claim < c_tok else "")
    lm_head = "lm_head" in shape["lora"]["targets"]  # then logits only at claim positions (train/trainer.py)
    mshape = shape_from_dir(model_dir)
    devices = accel["processes"] * accel["machines"]
    batch = targs.per_device_train_batch_size
    device = "gpu" if not targs.use_cpu else "cpu"
    settings = {"seq_len": seq, "batch": batch, "devices": devices, "zero": accel["zero_stage"],
                "grad_ckpt": bool(targs.gradient_checkpointing), "lora_r": margs.lora_r,
                "load_in_4bit": bool(margs.load_in_4bit), "device": device,
                "logit_tokens": batch * max(1, kept_claim) if lm_head else None}
    est = preflight.estimate_for(mshape, **settings)
    gpus = facts["gpus"]
    budget_gb = args.gpu_gb if args.gpu_gb is not None else (min(g["memory_gib"] for g in gpus) if gpus else None)
    mem = {"settings": settings, "estimate_bytes": est, "budget_gib": budget_gb}
    rep.data["memory"] = mem
    where = (f"{devices} x {device.upper()}, ZeRO-{accel['zero_stage']}" if accel["deepspeed"]
             else f"{devices} x {device.upper()}, no DeepSpeed")
    if budget_gb is None:
        rep.add("fit", "estimate", OK, f"{_gib(est)} per device ({where}); no GPU and no --gpu-gb: fit not checked")
    else:
        fits = est <= budget_gb * GiB
        mem["fits"] = fits
        if fits:
            rep.add("fit", "estimate", OK, f"{_gib(est)} per device of {budget_gb:g} GiB ({where}, "
                    f"sequence {seq}, batch {batch})")
        else:
            mem["knobs"] = preflight.knobs(mshape, settings, budget_gb * GiB)
            fixes = "; ".join(f"{k['knob']}: {k['change']} -> {k['estimate_gib']:g} GiB"
                              f"{' fits' if k['fits'] else ' (still too big)'}" for k in mem["knobs"])
            rep.add("fit", "estimate", ERROR, f"would NOT fit: {_gib(est)} per device > {budget_gb:g} GiB "
                    f"({where}, sequence {seq}, batch {batch})", fixes)
    if not env_ok:
        rep.add("steps", "optimizer steps", WARNING, "skipped: fix the environment errors first")
        return
    dtype_bytes = 2 if device == "gpu" else 4
    if not preflight.fits_in_host_memory(shape["parameters"], dtype_bytes):
        rep.add("steps", "optimizer steps", WARNING, "skipped: a random-weight copy of the model does not fit "
                "in this machine's free memory (shape checked on the meta device only)")
        return
    _say(f"writing a random-weight copy of the model to {scratch / 'model'}")
    rand = preflight.random_copy(model_dir, scratch / "model")
    from opclaim.io import write_cases

    world = accel["processes"]
    n = world * batch * targs.gradient_accumulation_steps * PROBE_STEPS
    write_cases(scratch / "probe-train.jsonl", [replace(case, id=f"doctor-{i}") for i in range(n)])
    _say(f"{PROBE_STEPS} optimizer steps on {world} rank(s)"
         + (f" via accelerate launch ({accel['file']})" if accel["file"] else "") + " ...")
    probe = preflight.run_probe(recipe, accel, model_dir=rand, train_file=scratch / "probe-train.jsonl",
                                run_dir=scratch / "run", steps=PROBE_STEPS, scratch=scratch)
    rep.data["steps"] = probe
    if probe["returncode"] != 0 or len(probe["ranks"]) != world:
        if probe["out_of_memory"]:
            rep.add("steps", "optimizer steps", ERROR, "out of memory during the steps",
                    "see the knobs under fit; log: " + probe["log"])
        else:
            raise RuntimeError(f"the training steps failed (exit {probe['returncode']}); log: {probe['log']}")
        return
    step_s = preflight.step_seconds(probe["ranks"])
    tokens = world * batch * targs.gradient_accumulation_steps * seq
    rep.add("steps", "optimizer steps", OK, f"{PROBE_STEPS} steps on {world} rank(s) "
            f"({'DeepSpeed ZeRO-' + str(accel['zero_stage']) if accel['deepspeed'] else 'no DeepSpeed'}), "
            f"{step_s:.2f} s/step after warm-up, {tokens / step_s:,.0f} tokens/s at sequence {seq}")
    probe_dev = probe["ranks"][0]["device"]
    est_probe = preflight.estimate_for(mshape, **{**settings, "devices": world, "device": probe_dev,
                                                  "zero": accel["zero_stage"] if accel["deepspeed"] else 0})
    runtime = 0.5 * GiB if probe_dev == "gpu" else 0
    peak = max(r["peak_bytes"] for r in probe["ranks"]) + runtime
    off = (est_probe - peak) / peak
    mem.update(measured_peak_bytes_per_rank=[r["peak_bytes"] for r in probe["ranks"]],
               measured_compared_bytes=int(peak), estimate_measured_bytes=est_probe,
               relative_error=round(off, 4), tolerance=preflight.TOLERANCE)
    within = abs(off) <= preflight.TOLERANCE
    what = "peak allocated + 0.5 GiB runtime" if probe_dev == "gpu" else "peak live tensor bytes"
    rep.add("steps", "memory", OK if within else WARNING,
            f"measured {_gib(peak)} per rank ({what}), estimate {_gib(est_probe)}: {off:+.0%} "
            f"({'within' if within else 'outside'} the documented {preflight.TOLERANCE:.0%})",
            "" if within else "trust the measured peak; report the recipe and numbers (docs/training.md)")
    if budget_gb is not None and probe_dev == "gpu" and peak > budget_gb * GiB:
        rep.add("fit", "measured", ERROR, f"measured {_gib(peak)} per GPU > {budget_gb:g} GiB",
                "see the knobs under fit")
    n_train = None
    if got["cases"]:
        n_train = len(got["cases"])
        if not dargs.eval_file and dargs.val_fraction > 0:
            n_train -= max(1, round(n_train * dargs.val_fraction))
    per_step = batch * targs.gradient_accumulation_steps * devices
    steps = preflight.planned_steps(targs, n_train, per_step)
    if steps:
        wall = steps * step_s
        mem_note = "" if devices == world else f" (measured on {world} rank(s), the job uses {devices})"
        rep.add("steps", "projected wall time", OK, f"{steps} steps x {step_s:.2f} s = {wall / 3600:.2f} h "
                f"at the longest example's length (an upper bound){mem_note}")
        rep.data["projection"] = {"steps": steps, "step_s": step_s, "wall_h": round(wall / 3600, 3)}
    else:
        rep.add("steps", "projected wall time", WARNING, "unknown: the recipe trains by epochs",
                "give --train-file to count the steps")
    _inference(got, case, rand, scratch, rep)


def _inference(got, case, model_dir, scratch, rep):
    from infer import smoke

    cases = list(got["cases"][:3]) if got["cases"] else [replace(case, id=f"doctor-{i}") for i in range(1)]
    if len(cases) < 2:
        from opclaim.synth import generate_cases

        cases += generate_cases(3 - len(cases), seed=1, style="terse", length="short")
    _say("merging the few-step adapter and generating")
    res = smoke.run(model_dir, scratch / "run", scratch / "merged", cases, grammar_cache=scratch / "grammars")
    rep.data["inference"] = res
    rep.add("inference", "merge", OK, f"adapter merged into the {res['merge']['merged_into']} weights "
            f"({res['merge']['seconds']:.1f} s)")
    for engine in ("hf", "vllm"):
        if engine not in res:
            continue
        for kind, r in res[engine].items():
            same = r["batched_equals_single"]
            rep.add("inference", f"{engine} {kind}", OK if same else ERROR,
                    f"{r['prompts']} prompts batched in {r['batched_s']:.2f} s; batched "
                    f"{'==' if same else '!='} one-at-a-time", "" if same else
                    "batched decoding differs: report it (infer/engines.py)")
    if "vllm" not in res:
        rep.add("inference", "vllm", OK, "not run (needs vllm and a GPU)")
