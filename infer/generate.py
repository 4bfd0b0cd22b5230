"""Batched greedy generation with the study's settings, streamed to a resumable predictions file.

Decoding: one beam, no sampling, repetition penalty 1.1, at most 512 new tokens (the study's
settings), stopping on the end-of-claim token. Prompts are sorted by token length and cut into
batches (left padding), so a batch holds prompts of similar length and little compute goes to
padding; rows are written back in input order when the run completes. A batch decodes with
infer.decode's loop, which drops rows as they finish (`decoder="generate"`: HF generate()).

Output files (`preds.jsonl`):
- `preds.jsonl.partial` grows while the run goes (0600, one row per finished case);
- `preds.jsonl.run.json` records the run configuration and whether the run completed;
- `preds.jsonl` appears atomically, in input order, only when every case is done.
A rerun with the same configuration skips ids already written; a different configuration is
refused, so one file never mixes outputs of two setups.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import opclaim  # noqa: F401  (offline environment before transformers)
from opclaim.errors import InputError
from opclaim.io import atomic_write, iter_jsonl, open_private_append

# The study's decoding settings.
STUDY = {"num_beams": 1, "do_sample": False, "repetition_penalty": 1.1, "max_new_tokens": 512}
FLAG_TOO_LONG = "prompt_exceeds_context"      # empty output: the prompt alone fills the context
FLAG_TRUNCATED = "max_new_tokens_reached"     # no end-of-claim token within the budget
FLAG_CAPPED = "new_tokens_capped_by_context"  # budget cut so prompt + output fit the context


# ---------------------------------------------------------------- loading
@dataclass
class Loaded:
    model: object
    tokenizer: object
    fmt: object  # prompts.PromptFormat
    stop_ids: list[int]
    info: dict = field(default_factory=dict)  # what identifies the weights, for the run config

    @property
    def context(self) -> int:
        cfg = self.model.config
        return int(getattr(cfg, "max_position_embeddings", 0) or getattr(self.tokenizer, "model_max_length", 0))


def _fingerprint(folder: Path) -> str:
    """Cheap identity of a model/adapter folder: config plus weight file names and sizes."""
    h = hashlib.sha256()
    for f in sorted(folder.iterdir()):
        if f.name.endswith((".json", ".safetensors")) and not f.name.startswith("."):
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            if f.suffix == ".json" and f.stat().st_size < 1_000_000:
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def read_run_info(adapter: Path) -> dict:
    p = adapter / "opclaim_run.json"
    if not p.is_file():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable ({e})", file=p) from None


def find_key(d, key):
    """First value of `key` anywhere in a nested dict (opclaim_run.json nests its sections)."""
    if isinstance(d, dict):
        if key in d:
            return d[key]
        for v in d.values():
            found = find_key(v, key)
            if found is not None:
                return found
    return None


def check_adapter(adapter: str | Path, model) -> Path:
    """Refuse an adapter folder that is incomplete or made for another base (shapes must fit)."""
    from safetensors import safe_open

    a = Path(adapter)
    if not a.is_dir():
        raise InputError("adapter folder not found", file=a)
    if not (a / "adapter_config.json").is_file():
        raise InputError("no adapter_config.json: not a PEFT adapter folder", file=a)
    weights = a / "adapter_model.safetensors"
    if not weights.is_file():
        raise InputError("no adapter_model.safetensors (safetensors only)", file=a)
    modules = dict(model.named_modules())
    with safe_open(str(weights), framework="pt") as f:
        for key in f.keys():
            if ".lora_A" not in key and ".lora_B" not in key:
                continue
            # base_model.model.<module path>.lora_A.weight -> <module path>
            path = key.split(".lora_")[0].removeprefix("base_model.model.")
            mod = modules.get(path)
            shape = f.get_slice(key).get_shape()
            if mod is None or not hasattr(mod, "in_features"):
                raise InputError(f"adapter targets module '{path}', which this base model lacks: "
                                 "the adapter was trained on another base", file=weights)
            want = (shape[1] == mod.in_features) if ".lora_A" in key else (shape[0] == mod.out_features)
            if not want:
                raise InputError(f"adapter shape {tuple(shape)} does not fit '{path}' "
                                 f"({mod.in_features}->{mod.out_features}): the adapter was trained on "
                                 "another base", file=weights)
    return a


def load(model_dir: str | Path, adapter: str | Path | None = None, *, load_4bit: bool = False,
         merge: bool = True) -> Loaded:
    """Model (+ adapter, merged in memory unless 4-bit) and tokenizer, ready for generation."""
    import torch

    import prompts
    from opclaim.registry import check_model_dir, load_model, load_tokenizer

    mdir = check_model_dir(model_dir)
    tok = load_tokenizer(mdir)
    tok.padding_side = "left"  # decoder-only batches: prompts end where generation starts
    kwargs = {"dtype": torch.float32}
    if not torch.cuda.is_available():
        from infer import attention

        kwargs["attn_implementation"] = attention.register()  # SDPA, with faster CPU decode steps
    if load_4bit:
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.float32)
    model = load_model(mdir, **kwargs)
    info = {"model": str(mdir.resolve()), "model_fingerprint": _fingerprint(mdir), "load_4bit": load_4bit}
    fmt = prompts.detect_format(tok)
    merged_fmt = find_key(read_run_info(mdir), "prompt_format")  # a merged model keeps its training format
    if merged_fmt in prompts.FORMATS:
        fmt = prompts.get_format(merged_fmt)
    if adapter:
        from peft import PeftModel

        from infer.merge import untie_adapted_head

        a = check_adapter(adapter, model)
        run = read_run_info(a)
        if merge and not load_4bit:
            untie_adapted_head(model, a)  # a tied head would carry the merge into the input embeddings
        model = PeftModel.from_pretrained(model, str(a), is_trainable=False)
        if merge and not load_4bit:  # merging into 4-bit layers would re-quantise: keep it separate
            model = model.merge_and_unload()
        info.update(adapter=str(a.resolve()), adapter_fingerprint=_fingerprint(a))
        trained_fmt = find_key(run, "prompt_format")
        if trained_fmt in prompts.FORMATS:
            fmt = prompts.get_format(trained_fmt)
    model.eval()
    return Loaded(model, tok, fmt, prompts.end_of_claim_ids(fmt, tok), info)


# ---------------------------------------------------------------- prompts
def build_prompts(cases, mode: str, loaded: Loaded, retriever=None, k: int = 2) -> list[str]:
    import prompts

    if mode == "rag":
        if retriever is None:
            raise InputError("rag mode needs --rag-index")
        examples = retriever.examples_batch([c.note for c in cases], k=k, exclude_ids=[c.id for c in cases])
    else:
        examples = [None] * len(cases)
    return [prompts.prompt(c.note, mode, fmt=loaded.fmt, tokenizer=loaded.tokenizer, examples=ex)
            for c, ex in zip(cases, examples, strict=False)]


# ---------------------------------------------------------------- decoding
class PaddingAwareRepetitionPenalty:
    """The study's repetition penalty (HF's formula) that ignores left padding.

    HF's RepetitionPenaltyLogitsProcessor also penalises the pad token in padded rows; with
    pad == eos that delays the stop in a batch but not alone, so batched and one-at-a-time
    outputs would differ. Pad positions are replaced by a token already in the row (penalising
    a token twice is the same as once)."""

    def __init__(self, penalty: float, pad_lengths):
        import torch

        self.penalty = penalty
        self.pad = torch.as_tensor(pad_lengths)

    def __call__(self, input_ids, scores):
        import torch

        if self.penalty == 1.0:
            return scores
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        padded = pos[None, :] < self.pad.to(input_ids.device)[:, None]
        first = input_ids.gather(1, self.pad.to(input_ids.device)[:, None].clamp(max=input_ids.shape[1] - 1))
        ids = torch.where(padded, first, input_ids)
        score = scores.gather(1, ids)
        score = torch.where(score < 0, score * self.penalty, score / self.penalty)
        return scores.scatter(1, ids, score)


DECODERS = ("loop", "generate")  # loop: infer.decode (drops finished rows); generate: HF generate()


def generate_batch(loaded: Loaded, prompts_text: list[str], *, max_new_tokens: int = STUDY["max_new_tokens"],
                   repetition_penalty: float = STUDY["repetition_penalty"], processor_factory=None,
                   decoder: str = "loop") -> tuple[list[str], list[bool]]:
    """Greedy outputs for one batch of prompts (left-padded), and whether each ran out of new
    tokens before its stop token. Text from the stop token on is cut. `decoder="generate"` is
    HF generate(), the study's call; models the loop does not support use it too."""
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    from infer import decode

    tok, model = loaded.tokenizer, loaded.model
    enc = tok(prompts_text, add_special_tokens=False, padding=True, return_tensors="pt")
    pad_lengths = (enc["attention_mask"] == 0).sum(dim=1)
    procs = [PaddingAwareRepetitionPenalty(repetition_penalty, pad_lengths)]
    if processor_factory is not None:
        procs.append(processor_factory(len(prompts_text)))  # the grammar mask goes last
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else loaded.stop_ids[0]
    with torch.inference_mode():
        if decoder == "loop" and decode.supported(model):
            prompts_ids = [ids[n:] for ids, n in zip(enc["input_ids"].tolist(), pad_lengths.tolist(), strict=True)]
            new = decode.greedy(model, prompts_ids, max_new_tokens=max_new_tokens, stop_ids=loaded.stop_ids,
                                pad_id=pad_id, processors=procs)
        else:
            gen = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens,
                                   eos_token_id=list(loaded.stop_ids), pad_token_id=pad_id,
                                   bos_token_id=tok.bos_token_id)
            out = model.generate(**enc, generation_config=gen, logits_processor=LogitsProcessorList(procs))
            new = out[:, enc["input_ids"].shape[1]:]
    texts, truncated = [], []
    stops = set(loaded.stop_ids)
    for row in new.tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), None)
        truncated.append(cut is None)
        texts.append(tok.decode(row[:cut], skip_special_tokens=False))
    return texts, truncated


def trim_incomplete(text: str) -> str:
    """Drop the unfinished item after the last separator: a constrained output cut off by the
    token budget could otherwise end in half a code (e.g. 'K80.2' of 'K80.20')."""
    cut = max(text.rfind(","), text.rfind("\n"))
    return text[:cut] if cut >= 0 else ""


# ---------------------------------------------------------------- output files
def sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".run.json")


def partial(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def read_rows(path: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    if path.is_file():
        for n, row in iter_jsonl(path):
            if "id" not in row:
                raise InputError("prediction row without id", file=path, line=n, field="id")
            rows.setdefault(str(row["id"]), row)
    return rows


def check_resume(out: Path, config: dict) -> dict[str, dict]:
    """Rows already done for this configuration; refuse an output made with another one."""
    out, side = Path(out), sidecar(Path(out))
    have = {**read_rows(out), **read_rows(partial(out))}
    if side.is_file():
        try:
            old = json.loads(side.read_text(encoding="utf-8")).get("config")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            raise InputError("unreadable run record; remove it and the output to start over", file=side) from None
        if old != config:
            diff = sorted(k for k in set(old or {}) | set(config) if (old or {}).get(k) != config.get(k))
            raise InputError(f"output was written by a different run configuration (differs in: "
                             f"{', '.join(diff)}); refusing to resume into it. Use another --out",
                             file=out)
    elif have:
        raise InputError("output exists without its run record (.run.json); refusing to resume into it",
                         file=out)
    return have


def write_sidecar(out: Path, config: dict, complete: bool, n_rows: int = 0, extra: dict | None = None) -> None:
    with atomic_write(sidecar(out)) as fh:
        json.dump({"config": config, "complete": complete, "rows": n_rows, **(extra or {})}, fh, indent=2)
        fh.write("\n")


def finalize(out: Path, order: list[str], rows: dict[str, dict], config: dict, extra: dict | None = None) -> int:
    """Write the complete file in input order (atomically), then drop the partial file."""
    ordered = [rows[i] for i in order if i in rows] + [r for i, r in rows.items() if i not in set(order)]
    with atomic_write(out, private=True) as fh:
        for r in ordered:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    write_sidecar(out, config, True, len(ordered), extra)
    partial(out).unlink(missing_ok=True)
    return len(ordered)


# ---------------------------------------------------------------- the run
def buckets(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by prompt length (longest first: memory problems show up at once), in batches."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


class HFEngine:
    """transformers models on CPU/GPU: the row-dropping loop (default) or generate(); the grammar
    (if any) masks each batch row."""

    name = "hf"

    def __init__(self, loaded: Loaded, *, repetition_penalty: float = STUDY["repetition_penalty"], grammar=None,
                 decoder: str = "loop"):
        self.loaded, self.repetition_penalty, self.grammar = loaded, repetition_penalty, grammar
        self.decoder = decoder
        self.context = loaded.context

    def count_tokens(self, text: str) -> int:
        return len(self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, prompts_text: list[str], max_new_tokens: int):
        return generate_batch(self.loaded, prompts_text, max_new_tokens=max_new_tokens,
                              repetition_penalty=self.repetition_penalty,
                              processor_factory=self.grammar.processor if self.grammar else None,
                              decoder=self.decoder)


def run(cases, prompts_text: list[str], engine, out: str | Path, config: dict, *,
        batch_size: int = 8, max_new_tokens: int = STUDY["max_new_tokens"], progress: bool = True,
        on_batch=None) -> dict:
    """Generate for every case not already in `out`; returns counts. The file is 0600: outputs
    can echo note text."""
    from tqdm import tqdm

    out = Path(out)
    constrained = bool(config.get("constrain"))
    have = check_resume(out, config)
    write_sidecar(out, config, False, len(have))
    todo = [i for i, c in enumerate(cases) if c.id not in have]
    lengths = [engine.count_tokens(prompts_text[i]) for i in todo]
    ctx = engine.context
    too_long = {j for j, n in enumerate(lengths) if ctx and n >= ctx}
    ok = [j for j in range(len(todo)) if j not in too_long]
    label = config.get("config_name") or config.get("mode")
    n_done = 0
    # The bar shows counts only: never case ids or text.
    bar = tqdm(total=len(todo), desc=f"infer {label}", unit="case", disable=not progress, leave=False)
    with open_private_append(partial(out)) as fh:
        for j in sorted(too_long):
            row = {"id": cases[todo[j]].id, "config": label, "output": "", "latency_s": 0.0,
                   "flags": [FLAG_TOO_LONG]}
            fh.write(json.dumps(row) + "\n")
            have[row["id"]] = row
            bar.update(1)
        fh.flush()
        for batch in buckets([lengths[j] for j in ok], batch_size):
            idx = [todo[ok[b]] for b in batch]
            longest = max(lengths[ok[b]] for b in batch)
            budget = min(max_new_tokens, ctx - longest) if ctx else max_new_tokens
            t0 = time.perf_counter()
            texts, truncated = engine.generate([prompts_text[i] for i in idx], budget)
            # Amortised per-case cost: the batch's wall time shared by its cases.
            latency = round((time.perf_counter() - t0) / len(idx), 4)
            for i, text, cut in zip(idx, texts, truncated, strict=False):
                flags = []
                if cut:
                    flags.append(FLAG_TRUNCATED)
                    if constrained:
                        text = trim_incomplete(text)
                if budget < max_new_tokens:
                    flags.append(FLAG_CAPPED)
                row = {"id": cases[i].id, "config": label, "output": text, "latency_s": latency}
                if flags:
                    row["flags"] = flags
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                have[row["id"]] = row
            fh.flush()
            n_done += len(idx)
            bar.update(len(idx))
            if on_batch is not None:
                on_batch(n_done)
    bar.close()
    n = finalize(out, [c.id for c in cases], have, config)
    return {"rows": n, "generated": n_done, "skipped": len(cases) - len(todo), "too_long": len(too_long)}
