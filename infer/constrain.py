"""Decoding constrained to valid codes: an xgrammar grammar of the claim format.

The grammar spells out the claim target text (docs/design.md, "Claim target text"); its code slots
admit only codes from the reference lists — billable ICD-10-CM codes (or a site's cohort list),
the CPT list, the modifier table — so a fabricated code cannot be generated at all. Free text
(provider names, descriptions) stays free.

Phi-3's section markers are single special tokens. xgrammar sees tokens as text, so in the
vocabulary handed to it each marker token is renamed to one private-use character, and the
grammar asks for that character: the marker can then only be produced as its special token,
never spelled out in pieces.

Compiling the grammar over all 74,736 billable codes takes about a minute; compiled grammars
are cached on disk, keyed by a hash of the tokenizer's vocabulary and of the grammar text.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import opclaim  # noqa: F401
from opclaim.claim import CPT_HEADER, ICD_HEADER
from opclaim.errors import InputError

# Phi-3 marker token -> the private-use character standing for it inside xgrammar.
PRIVATE = {f"<|placeholder{i}|>": chr(0xE000 + i) for i in range(1, 7)}
PRIVATE_RANGE = "\ue000-\ue0ff"
# Byte-level vocabularies write byte 0xEE (lead byte of U+E0xx in UTF-8) as "î"; tokens holding it
# could spell a private character byte by byte, so they are left out of xgrammar's vocabulary.
_LEAD_BYTE_LEVEL, _LEAD_BYTE_FALLBACK = "\u00ee", "<0xEE>"


def cache_dir() -> Path:
    base = os.environ.get("OPCLAIM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "opclaim")
    return Path(base) / "grammars"


# ---------------------------------------------------------------- reference lists
@dataclass
class CodeLists:
    icd10: list[str]
    cpt: list[str]
    modifiers: list[str]
    sources: dict  # which list each came from (for the run config and the report)

    def digest(self) -> str:
        h = hashlib.sha256()
        for name in ("icd10", "cpt", "modifiers"):
            h.update(name.encode())
            h.update("\n".join(sorted(getattr(self, name))).encode())
        return h.hexdigest()[:16]


def synth_cpt_codes() -> list[str]:
    """The synthetic catalog's CPT codes (eval counts against them too)."""
    from opclaim.synth import catalog

    return sorted(catalog.all_cpt_codes())


def code_lists(icd_ref=None, cpt_ref=None, cpt_from=None, mod_ref=None) -> CodeLists:
    """ICD: --icd-ref or every billable CMS code; CPT: --cpt-ref, else the synthetic catalog plus
    the CPT codes of --cpt-from (a cases file, e.g. the training set); modifiers: the table."""
    from opclaim.codes import icd10_billable, icd10_release, load_code_list, modifier_table, normalize_icd10
    from opclaim.io import read_cases

    sources = {}
    if icd_ref:
        icd = sorted(load_code_list(icd_ref, normalize_icd10))
        sources["icd10"] = f"--icd-ref {Path(icd_ref).name} ({len(icd)} codes)"
    else:
        icd = sorted(icd10_billable())
        sources["icd10"] = f"{icd10_release()}, billable codes ({len(icd)})"
    if cpt_ref:
        cpt = sorted(load_code_list(cpt_ref))
        sources["cpt"] = f"--cpt-ref {Path(cpt_ref).name} ({len(cpt)} codes)"
    else:
        cpt_set, parts = set(), []
        catalog = synth_cpt_codes()
        if catalog:
            cpt_set |= set(catalog)
            parts.append(f"synthetic catalog ({len(catalog)})")
        if cpt_from:
            seen = {code for c in read_cases(cpt_from) for code in c.claim.cpt_set()}
            cpt_set |= seen
            parts.append(f"codes in {Path(cpt_from).name} ({len(seen)})")
        if not cpt_set:
            raise InputError("constrained decoding needs a CPT list: give --cpt-ref FILE or "
                             "--cpt-from TRAIN_CASES", field="--cpt-ref")
        cpt = sorted(cpt_set)
        sources["cpt"] = " + ".join(parts)
    mods = sorted(modifier_table(mod_ref))
    sources["modifiers"] = f"--mod-ref {Path(mod_ref).name}" if mod_ref else f"opclaim modifier table ({len(mods)})"
    return CodeLists(icd, cpt, mods, sources)


# ---------------------------------------------------------------- grammar text
def _lit(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid EBNF string literal here


def _alts(codes: list[str]) -> str:
    return " | ".join(_lit(c) for c in codes)


def claim_ebnf(fmt, lists: CodeLists, *, private_markers: bool = True) -> str:
    """EBNF (xgrammar dialect) of the claim target text for this prompt format. With
    private_markers, Phi-3 markers are written as the private characters of tokenizer_info()."""
    import prompts

    m = prompts.get_format(fmt).markers
    mark = {k: PRIVATE.get(v, v) if private_markers else v for k, v in vars(m).items()}
    free = f"[^\\n|{PRIVATE_RANGE}]"
    head = " ".join(_lit(x) for x in (mark["icd_open"] + ICD_HEADER + "\n",) if x)
    mid = _lit(mark["icd_close"] + mark["between"] + mark["cpt_open"] + CPT_HEADER + "\n")
    tail = f" {_lit(mark['cpt_close'])}" if mark["cpt_close"] else ""
    return "\n".join([
        f"root ::= {head} icds {mid} body{tail}",
        'icds ::= "None" | icd ("," " " icd)*',
        'body ::= "None" | provider ("\\n" provider)*',
        'provider ::= "Provider Name: " name "\\nProvider Billables:" ("\\n" line)*',
        'line ::= "CPT " [1-9] [0-9]* ": " cpt " | Modifiers: " mods " | Description: " desc',
        'mods ::= "None" | mod ("," " " mod)*',
        f"name ::= {free}+",
        f"desc ::= {free}*",
        f"icd ::= {_alts(lists.icd10)}",
        f"cpt ::= {_alts(lists.cpt)}",
        f"mod ::= {_alts(lists.modifiers)}",
    ]) + "\n"


# ---------------------------------------------------------------- tokenizer + compile
def tokenizer_info(tokenizer, vocab_size: int, stop_ids: list[int]):
    """xgrammar's view of the tokenizer, with Phi-3 markers renamed to private characters."""
    import xgrammar as xgr

    base = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
    vocab = [""] * vocab_size
    for tok, i in tokenizer.get_vocab().items():
        if i < vocab_size:
            vocab[i] = tok
    byte_level = base.vocab_type == xgr.VocabType.BYTE_LEVEL
    for i, tok in enumerate(vocab):
        if tok in PRIVATE:
            vocab[i] = PRIVATE[tok]
        elif (byte_level and _LEAD_BYTE_LEVEL in tok) or tok == _LEAD_BYTE_FALLBACK or any(
                "\ue000" <= ch <= "\ue0ff" for ch in tok):
            vocab[i] = ""  # never allowed by the grammar
    return xgr.TokenizerInfo(vocab, base.vocab_type, vocab_size=vocab_size, stop_token_ids=list(stop_ids),
                             add_prefix_space=base.add_prefix_space)


def _tokenizer_hash(info, vocab_size: int) -> str:
    h = hashlib.sha256(info.dump_metadata().encode())
    for b in info.decoded_vocab:
        h.update(b)
        h.update(b"\x00")
    h.update(str(vocab_size).encode())
    return h.hexdigest()[:16]


@dataclass
class Grammar:
    compiled: object  # xgrammar.CompiledGrammar
    vocab_size: int
    key: str          # tokenizer hash + grammar hash: part of the run configuration
    compile_s: float  # 0 when loaded from the cache... (load time then in load_s)
    load_s: float
    cached: bool
    ebnf: str

    def processor(self, batch_size: int):
        return GrammarProcessor(self.compiled, batch_size, self.vocab_size)


def compile_grammar(tokenizer, vocab_size: int, stop_ids: list[int], ebnf: str, *,
                    cache: Path | None = None, use_cache: bool = True) -> Grammar:
    import xgrammar as xgr

    info = tokenizer_info(tokenizer, vocab_size, stop_ids)
    key = f"{_tokenizer_hash(info, vocab_size)}-{hashlib.sha256(ebnf.encode()).hexdigest()[:16]}"
    path = (cache or cache_dir()) / f"{key}.json"
    t0 = time.perf_counter()
    if use_cache and path.is_file():
        try:
            compiled = xgr.CompiledGrammar.deserialize_json(path.read_text(encoding="utf-8"), info)
            return Grammar(compiled, vocab_size, key, 0.0, time.perf_counter() - t0, True, ebnf)
        except Exception:  # noqa: BLE001 - a stale or foreign cache entry: compile afresh
            pass
    compiled = xgr.GrammarCompiler(info, cache_enabled=False).compile_grammar(ebnf)
    took = time.perf_counter() - t0
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.part")
        tmp.write_text(compiled.serialize_json(), encoding="utf-8")
        os.replace(tmp, path)  # atomic: a concurrent rank never reads half a file
    return Grammar(compiled, vocab_size, key, took, 0.0, False, ebnf)


def for_model(loaded, lists: CodeLists, **kwargs) -> Grammar:
    vocab = int(loaded.model.get_output_embeddings().weight.shape[0])
    return compile_grammar(loaded.tokenizer, vocab, loaded.stop_ids, claim_ebnf(loaded.fmt, lists), **kwargs)


# ---------------------------------------------------------------- logits processor
class GrammarProcessor:
    """A transformers logits processor: one grammar matcher per batch row.

    Rows that reached the end of the grammar are left unmasked (generate pads them anyway)."""

    def __init__(self, compiled, batch_size: int, vocab_size: int):
        import xgrammar as xgr

        self.matchers = [xgr.GrammarMatcher(compiled) for _ in range(batch_size)]
        self.mask = xgr.allocate_token_bitmask(batch_size, vocab_size)
        self.vocab_size = vocab_size
        self.started = False

    def __call__(self, input_ids, scores):
        import xgrammar as xgr

        if self.started:
            for i, m in enumerate(self.matchers):
                if not m.is_terminated() and not m.accept_token(int(input_ids[i, -1])):
                    raise RuntimeError("grammar rejected a token it had allowed")  # a bug, not bad input
        self.started = True
        for i, m in enumerate(self.matchers):
            if m.is_terminated():
                self.mask[i].fill_(-1)
            else:
                m.fill_next_token_bitmask(self.mask, i)
        xgr.apply_token_bitmask_inplace(scores, self.mask.to(scores.device), vocab_size=self.vocab_size)
        return scores
