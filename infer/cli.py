"""`opclaim infer` and `opclaim merge`. The same arguments work under
`accelerate launch --num_processes N -m infer ...` (see infer/__main__.py)."""

from __future__ import annotations

from pathlib import Path

from infer.engines import DECODERS, REPETITION_SCOPES
from opclaim.cli import verb
from opclaim.errors import InputError

INFER_EXAMPLES = """
opclaim infer --model runs/merged --mode finetuned --cases test.jsonl --out preds.jsonl --batch-size 16
opclaim infer --model models/phi3 --adapter runs/qlora/adapter --mode finetuned --cases test.jsonl --out preds.jsonl --load-4bit
opclaim infer --model models/smollm2 --mode rag --rag-index runs/rag --cases test.jsonl --out rag.jsonl
opclaim infer --model runs/merged --mode finetuned --cases test.jsonl --out c.jsonl --constrain --cpt-from train.jsonl
accelerate launch --num_processes 2 -m infer --model runs/merged --mode finetuned --cases test.jsonl --out preds.jsonl
"""
MERGE_EXAMPLES = """
opclaim merge --model models/phi3 --adapter runs/qlora/adapter --out runs/merged
opclaim merge --model models/phi3 --adapter runs/qlora/adapter --out runs/merged-bf16 --from-bf16
"""


def add_infer_arguments(p) -> None:
    p.add_argument("--model", required=True, help="base or merged model folder (safetensors)")
    p.add_argument("--adapter", help="PEFT adapter folder from `train` (merged in memory unless --load-4bit); "
                   "a signed bundle's adapter/ is used without it")
    p.add_argument("--mode", required=True, choices=["base", "rag", "finetuned"], help="the study's prompt configuration")
    p.add_argument("--cases", required=True, help="cases JSONL (validated strictly)")
    p.add_argument("--out", required=True, help="predictions JSONL (0600); reruns with the same cases and "
                   "settings resume into it")
    p.add_argument("--force-new", action="store_true",
                   help="start --out over (deletes its rows) instead of refusing another cases file or setup")
    p.add_argument("--rag-index", help="index folder from `opclaim rag build` (rag mode)")
    p.add_argument("--k", type=int, default=2, help="example claims per RAG prompt (study: 2)")
    p.add_argument("--allow-mode-mismatch", action="store_true",
                   help="run weights in a prompt mode (or k) other than the one they were trained with")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per generate call (1 = the study's loop)")
    p.add_argument("--decoder", choices=DECODERS, default="loop",
                   help="hf engine: loop drops finished rows from the batch (infer.decode); generate is HF generate()")
    p.add_argument("--max-new-tokens", type=int, default=512, help="study: 512")
    p.add_argument("--repetition-penalty", type=float, default=1.1, help="study: 1.1")
    p.add_argument("--repetition-scope", choices=REPETITION_SCOPES, default="prompt",
                   help="tokens the penalty sees: prompt = prompt and generated, as HF generate and the study; "
                   "generated = generated tokens only (lets a RAG model copy its examples); off")
    p.add_argument("--load-4bit", action="store_true", help="load the base in nf4 (bitsandbytes), as the study")
    p.add_argument("--constrain", action="store_true", help="decode with the claim grammar: only listed codes")
    p.add_argument("--icd-ref", help="ICD-10-CM list (one per line) instead of all billable CMS codes")
    p.add_argument("--cpt-ref", help="CPT/HCPCS list (one per line)")
    p.add_argument("--cpt-from", help="cases file (e.g. the training set) whose CPT codes are allowed")
    p.add_argument("--mod-ref", help="modifier list replacing the built-in table")
    p.add_argument("--grammar-cache", help="folder for compiled grammars (default ~/.cache/opclaim/grammars)")
    p.add_argument("--config-name", help="the 'config' value of every row (default: the mode)")
    p.add_argument("--calibration", help="cal.json from `opclaim calibrate`: each code also gets p_cal and "
                   "route (auto/review at the validation-chosen threshold)")
    p.add_argument("--engine", choices=["hf", "vllm"], default="hf", help="vllm: GPU only, extra [vllm]")
    p.add_argument("--tensor-parallel", type=int, default=1, help="GPUs per model (vllm engine)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: all cores / ranks)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--bundle-key", help="public key: verify a signed bundle before loading it")


def register(subs) -> None:
    p = verb(subs, "infer", "Generate claims for cases (batched greedy, resumable, optional grammar).",
             INFER_EXAMPLES, main)
    add_infer_arguments(p)
    m = verb(subs, "merge", "Merge a LoRA adapter into its base model and save a plain model folder.",
             MERGE_EXAMPLES, merge_main)
    m.add_argument("--model", required=True, help="base model folder the adapter was trained on")
    m.add_argument("--adapter", required=True, help="PEFT adapter folder")
    m.add_argument("--out", required=True, help="output model folder")
    m.add_argument("--from-bf16", action="store_true",
                   help="merge into the original weights, not the NF4-dequantised ones of a 4-bit-trained adapter")
    m.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="saved dtype (default: the base's torch_dtype, float32 if unknown)")
    m.add_argument("--bundle-key", help="public key: verify a signed bundle before loading it")


def _verify_bundles(args, *, use_bundle_adapter: bool = True) -> None:
    """Signed bundles are verified before anything loads; plain folders pass through.

    `--model BUNDLE` whose bundle carries an adapter/ loads that adapter (verified with the rest);
    naming another --adapter beside it is refused, so a bundle never silently loses its adapter."""
    from opclaim.bundle import bundle_root, verify_if_bundle

    given = args.model
    args.model = str(verify_if_bundle(args.model, args.bundle_key))
    root = bundle_root(given)
    if use_bundle_adapter and root is not None and Path(given).resolve() == root.resolve() \
            and (root / "adapter").is_dir():
        if args.adapter and Path(args.adapter).resolve() != (root / "adapter").resolve():
            raise InputError("this bundle carries its own adapter/; drop --adapter to use it, or pass "
                             "--model BUNDLE/model to pair the bundle's base with another adapter",
                             field="--adapter")
        args.adapter = str(root / "adapter")  # verified above: one manifest covers the whole bundle
        return
    if args.adapter:
        args.adapter = str(verify_if_bundle(args.adapter, args.bundle_key))


# ---------------------------------------------------------------- infer
def _check_inputs(args):
    """Everything cheap first, so bad input fails before a model loads."""
    from opclaim.io import read_cases
    from opclaim.registry import check_model_dir

    if args.batch_size < 1:
        raise InputError("must be >= 1", field="--batch-size")
    if args.max_new_tokens < 1:
        raise InputError("must be >= 1", field="--max-new-tokens")
    cases = read_cases(args.cases)
    _verify_bundles(args)
    if args.engine == "vllm" and args.adapter:
        raise InputError("--engine vllm takes a merged model: run `opclaim merge` first", field="--adapter")
    if args.mode == "rag":
        if not args.rag_index:
            raise InputError("rag mode needs --rag-index DIR (build one with `opclaim rag build`)",
                             field="--rag-index")
        if not Path(args.rag_index).is_dir():
            raise InputError("RAG index folder not found", file=args.rag_index)
    elif args.rag_index:
        raise InputError(f"--rag-index is only used in rag mode, not {args.mode}", field="--rag-index")
    check_model_dir(args.model)
    if args.adapter and not Path(args.adapter).is_dir():
        raise InputError("adapter folder not found", file=args.adapter)
    if args.k < 1:
        raise InputError("must be >= 1", field="--k")
    if args.engine == "vllm" and args.repetition_scope == "generated":
        raise InputError("vLLM's repetition penalty always sees the prompt: use --repetition-scope prompt "
                         "or off with --engine vllm", field="--repetition-scope")
    from infer.loading import check_mode, weights_mode

    check_mode(weights_mode(args.model, args.adapter), args.mode, args.k, allow=args.allow_mode_mismatch)
    return cases


def prepare(args):
    """(cases, prompts, engine, config) for a run; shared by one process and by N ranks."""
    from infer import loading, output
    from infer.engines import HFEngine
    from infer.render import build_prompts, examples_for
    from opclaim.artifacts import folder_fingerprint

    cases = _check_inputs(args)
    from eval.calibrate import Calibration
    from opclaim import artifacts

    cal = artifacts.load(Calibration, args.calibration) if args.calibration else None  # before the model
    if args.engine == "vllm":
        from infer.engines import VllmEngine

        engine_cls = VllmEngine.check()  # clear InputError when vllm or a GPU is missing
    else:
        engine_cls = None
    loaded = loading.load(args.model, args.adapter, load_4bit=args.load_4bit)
    config = {"config_name": args.config_name or args.mode, "mode": args.mode, "format": loaded.fmt.name,
              **loaded.info, "num_beams": 1, "do_sample": False,
              "repetition_penalty": args.repetition_penalty, "max_new_tokens": args.max_new_tokens,
              "engine": args.engine, "constrain": None}
    if args.repetition_scope != "prompt":  # absent = the study's (older records stay resumable)
        config["repetition_scope"] = args.repetition_scope
    if args.allow_mode_mismatch:
        config["mode_mismatch_allowed"] = True
    retriever = None
    if args.mode == "rag":
        from rag.retrieve import Retriever

        retriever = Retriever.load(args.rag_index)
        config.update(rag_index=str(Path(args.rag_index).resolve()), rag_fingerprint=folder_fingerprint(
            Path(args.rag_index)), k=args.k)
    examples = examples_for(cases, args.mode, retriever, k=args.k)
    prompts_text = build_prompts(cases, args.mode, loaded, examples=examples)
    grammar = ebnf = None
    if args.constrain:
        from infer import constrain

        lists = constrain.code_lists(args.icd_ref, args.cpt_ref, args.cpt_from, args.mod_ref)
        ebnf = constrain.claim_ebnf(loaded.fmt, lists, private_markers=False)  # for vllm's own xgrammar
        config.update(code_lists=lists.sources, code_lists_digest=lists.digest())
        if engine_cls is None:
            grammar = constrain.for_model(loaded, lists, cache=Path(args.grammar_cache) if args.grammar_cache else None)
            config["constrain"] = grammar.key
        else:
            config["constrain"] = lists.digest()
    if engine_cls is not None:
        penalty = 1.0 if args.repetition_scope == "off" else args.repetition_penalty
        engine = engine_cls(args.model, loaded, tensor_parallel=args.tensor_parallel,
                            repetition_penalty=penalty, ebnf=ebnf)
    else:
        engine = HFEngine(loaded, repetition_penalty=args.repetition_penalty, grammar=grammar,
                          decoder=args.decoder, repetition_scope=args.repetition_scope)
    if cal is not None:
        engine.calibration = cal
        config["calibration"] = artifacts.sha256_file(args.calibration)
    if args.mode == "rag":  # the examples each prompt showed: the neighbours' agreement per code
        engine.examples = {c.id: ex for c, ex in zip(cases, examples, strict=True)}
    return cases, prompts_text, engine, config, output.cases_identity(cases, args.cases)


def main(args) -> int:
    import contextlib
    import os

    from infer import output

    # The output lock first: a second run on the same --out stops before loading anything.
    first = int(os.environ.get("RANK", "0")) == 0
    with output.locked(Path(args.out)) if first else contextlib.nullcontext():
        stats = _infer(args)
    if stats is not None:
        print(f"wrote {args.out}: {stats['rows']} rows ({stats['generated']} generated, "
              f"{stats['skipped']} already done, {stats['too_long']} over the context)")
    return 0


def _infer(args):
    import os

    import torch

    from infer import parallel
    from infer.run import run

    world = parallel.world_size()
    torch.set_num_threads(args.threads or max(1, (torch.get_num_threads() if world == 1
                                                  else (os.cpu_count() or 1) // world)))
    cases, prompts_text, engine, config, cases_id = prepare(args)
    kwargs = {"batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
              "progress": not args.no_progress, "cases_id": cases_id, "force_new": args.force_new,
              "lock": False}
    if world > 1:
        return parallel.run_sharded(cases, prompts_text, engine, Path(args.out), config, **kwargs)
    return run(cases, prompts_text, engine, args.out, config, **kwargs)


# ---------------------------------------------------------------- merge
def merge_main(args) -> int:
    from infer.merge import merge

    _verify_bundles(args, use_bundle_adapter=False)
    info = merge(args.model, args.adapter, args.out, from_bf16=args.from_bf16, dtype=args.dtype)
    print(f"wrote {args.out} (merged into {info['merged_into']} weights)")
    return 0
