"""Contract of infer/constrain.py, in-process and small: which codes `code_lists` admits from each
source and how bad list files are refused; where compiled grammars are cached and when a cached
one is reused (same vocabulary and grammar text) or not; what `tokenizer_info` hands xgrammar;
how `GrammarProcessor` masks the logits row by row. Expected values are worked out here, from the
files the test writes and from xgrammar's own view of the tokenizer, not read back from the module.
"""

import hashlib
import re
import time

import pytest

import prompts
from opclaim.claim import Case, Claim
from opclaim.codes import MODIFIERS
from opclaim.errors import InputError
from opclaim.io import write_cases

ICD = ["K80.20", "R10.11"]
CPT = ["47562", "44970"]
MODS = ["51", "80"]
CLAIM = Claim.from_dict({"icd10": ["K80.20", "R10.11"], "providers": [
    {"name": "Dr. A. Rivera", "role": "surgeon",
     "lines": [{"cpt": "47562", "modifiers": ["51"], "description": "Lap chole"},
               {"cpt": "44970", "modifiers": [], "description": "Appendectomy"}]}]})
KEY_RE = re.compile(r"[0-9a-f]{16}-[0-9a-f]{16}")


def _write(path, text):
    path.write_bytes(text.encode("utf-8"))
    return path


def _catalog():
    from opclaim.synth.catalog import PROCEDURES

    return {p.cpt for p in PROCEDURES}


def _cases_file(path, cpt_codes):
    claim = Claim.from_dict({"icd10": ["K80.20"], "providers": [
        {"name": "Dr. A", "role": "surgeon", "lines": [{"cpt": c, "modifiers": []} for c in cpt_codes]}]
        if cpt_codes else []})
    write_cases(path, [Case(id="c1", note="note one", claim=claim), Case(id="c2", note="note two", claim=claim)])
    return path


# ---------------------------------------------------------------- cache_dir
def test_cache_dir_is_opclaim_cache_else_home(monkeypatch, tmp_path):
    from infer.constrain import cache_dir

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("OPCLAIM_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" / "grammars"
    monkeypatch.setenv("OPCLAIM_CACHE", "")  # empty: as if unset
    assert cache_dir() == tmp_path / "home" / ".cache" / "opclaim" / "grammars"
    monkeypatch.delenv("OPCLAIM_CACHE")
    assert cache_dir() == tmp_path / "home" / ".cache" / "opclaim" / "grammars"


# ---------------------------------------------------------------- code_lists
def test_code_lists_from_reference_files(tmp_path):
    from infer.constrain import code_lists

    icd = _write(tmp_path / "cohort.txt", "\ufeffk8020\n# a comment\n\nK80.10\tCalculus of gallbladder\nK80.20\n")
    cpt = _write(tmp_path / "cpt.txt", "47563\ncpt 47562\t Lap chole \n47562\n")
    mods = _write(tmp_path / "mods.tsv", "rt\tRight\n59\n")
    lists = code_lists(icd, cpt, mod_ref=mods)
    assert lists.icd10 == ["K80.10", "K80.20"]  # normalised, deduplicated, sorted; BOM, comment, blank skipped
    assert lists.cpt == ["47562", "47563"]  # --cpt-ref alone: no catalog code added
    assert lists.modifiers == ["59", "RT"]  # the file replaces the table
    assert lists.sources == {"icd10": "--icd-ref cohort.txt (2 codes)", "cpt": "--cpt-ref cpt.txt (2 codes)",
                             "modifiers": "--mod-ref mods.tsv"}


def test_code_lists_default_icd_is_every_billable_code(tmp_path):
    from infer.constrain import code_lists
    from opclaim.codes import icd10_release

    lists = code_lists(cpt_ref=_write(tmp_path / "cpt.txt", "47562\n"))
    assert len(lists.icd10) > 70_000 and lists.icd10 == sorted(set(lists.icd10))
    assert "S52.521A" in lists.icd10 and "K80.20" in lists.icd10
    assert "S52.52" not in lists.icd10 and "K80" not in lists.icd10  # parents are not billable
    assert not any("-" in c for c in lists.icd10)  # no block ranges ("C00-C75")
    assert "simple-icd-10-cm" in icd10_release()
    assert lists.sources["icd10"] == f"{icd10_release()}, billable codes ({len(lists.icd10)})"
    assert lists.cpt == ["47562"]
    assert lists.modifiers == sorted(MODIFIERS) and "RT" in lists.modifiers
    assert lists.sources["modifiers"] == f"opclaim modifier table ({len(MODIFIERS)})"


def test_code_lists_catalog_plus_cpt_from(tmp_path):
    from infer.constrain import code_lists

    icd = _write(tmp_path / "icd.txt", "K80.20\n")
    catalog = _catalog()
    assert len(catalog) > 100 and "99999" not in catalog and "47562" in catalog
    alone = code_lists(icd)
    assert alone.cpt == sorted(catalog)
    assert alone.sources["cpt"] == f"synthetic catalog ({len(catalog)})"
    train = _cases_file(tmp_path / "train.jsonl", ["99999", "47562"])
    both = code_lists(icd, cpt_from=train)
    assert both.cpt == sorted(catalog | {"99999"})  # the union: a training-set code the catalog lacks too
    assert both.sources["cpt"] == f"synthetic catalog ({len(catalog)}) + codes in train.jsonl (2)"
    assert both.sources["icd10"] == "--icd-ref icd.txt (1 codes)"


def test_code_lists_without_a_catalog(tmp_path, monkeypatch):
    """A package without the synthetic catalog: --cpt-from alone, or a refusal naming --cpt-ref."""
    from infer.constrain import code_lists
    from opclaim.synth import catalog

    monkeypatch.setattr(catalog, "all_cpt_codes", set)
    icd = _write(tmp_path / "icd.txt", "K80.20\n")
    lists = code_lists(icd, cpt_from=_cases_file(tmp_path / "train.jsonl", ["99999", "47562"]))
    assert lists.cpt == ["47562", "99999"]
    assert lists.sources["cpt"] == "codes in train.jsonl (2)"
    for kwargs in ({}, {"cpt_from": _cases_file(tmp_path / "empty.jsonl", [])}):
        with pytest.raises(InputError) as e:
            code_lists(icd, **kwargs)
        assert e.value.field == "--cpt-ref" and e.value.file is None
        assert str(e.value) == ("field '--cpt-ref': constrained decoding needs a CPT list: give --cpt-ref FILE or "
                                "--cpt-from TRAIN_CASES")


@pytest.mark.parametrize("which, text, line, reason", [
    ("icd", "K80.20\n# c\nK8O.2O\n", 3, "letter O where a zero belongs in ICD-10-CM code 'K8O.2O' (did you mean "
                                         "'K80.20'?)"),
    ("icd", "K80.20\n47562\n", 2, "malformed ICD-10-CM code '47562'"),
    ("cpt", "47562\nK80.20\n", 2, "malformed CPT/HCPCS code 'K80.20'"),
    ("mod", "51\n5\n", 2, "malformed modifier <text of 1 characters>"),  # not code-shaped: not shown
])
def test_bad_code_in_a_list_file_names_file_line_field(tmp_path, which, text, line, reason):
    from infer.constrain import code_lists

    ok = {"icd": _write(tmp_path / "icd.txt", "K80.20\n"), "cpt": _write(tmp_path / "cpt.txt", "47562\n"),
          "mod": _write(tmp_path / "mod.txt", "51\n")}
    ok[which] = bad = _write(tmp_path / f"bad-{which}.txt", text)
    with pytest.raises(InputError) as e:
        code_lists(ok["icd"], ok["cpt"], mod_ref=ok["mod"])
    assert (e.value.file, e.value.line, e.value.field, e.value.reason) == (bad, line, "code", reason)


def test_empty_or_missing_list_file(tmp_path):
    from infer.constrain import code_lists

    empty = _write(tmp_path / "icd.txt", "# nothing\n\n")
    with pytest.raises(InputError) as e:
        code_lists(empty, _write(tmp_path / "cpt.txt", "47562\n"))
    assert (e.value.file, e.value.line, e.value.reason) == (empty, None, "code list is empty")
    with pytest.raises(InputError):
        code_lists(tmp_path / "absent.txt", tmp_path / "cpt.txt")


def test_digest_follows_contents_not_order():
    from infer.constrain import CodeLists

    def d(icd, cpt, mods, sources=None):
        return CodeLists(icd, cpt, mods, sources or {}).digest()

    base = d(ICD, CPT, MODS)
    assert re.fullmatch(r"[0-9a-f]{16}", base)
    assert d(ICD[::-1], CPT[::-1], MODS[::-1], {"icd10": "elsewhere"}) == base  # order and sources do not count
    assert len({base, d(ICD + ["K35.80"], CPT, MODS), d(ICD, CPT + ["49505"], MODS), d(ICD, CPT, MODS + ["59"]),
                d(ICD[:1], CPT, MODS), d(ICD, [], MODS + CPT), d(ICD, CPT + MODS, [])}) == 7


# ---------------------------------------------------------------- grammar text
@pytest.mark.parametrize("s", ["K80.20", 'a "quoted" back\\slash\nnew line', "\ue002ICD", "clef \U0001d11e",
                               "é"])
def test_lit_is_an_ebnf_literal_of_exactly_the_string(s):
    import xgrammar as xgr
    from xgrammar.testing import _is_grammar_accept_string as accepts

    from infer.constrain import _lit

    g = xgr.Grammar.from_ebnf(f"root ::= {_lit(s)}")
    assert accepts(g, s)
    assert not accepts(g, s + "x") and not accepts(g, s[:-1])


# ---------------------------------------------------------------- tokenizer_info
ADDED = ["\ue000", "\ue0ff", "a\ue002", "\ue002", "\ue100", "zqzq"]  # the first four hold a private-range character


@pytest.fixture
def marked_tokenizer(tiny_phi3_dir):
    """A fresh copy of the tiny Phi-3 tokenizer with tokens that spell private characters literally."""
    from opclaim.registry import load_tokenizer

    tok = load_tokenizer(tiny_phi3_dir)
    tok.add_tokens(ADDED)
    return tok


def test_tokenizer_info_renames_markers_and_leaves_out_private_spellings(marked_tokenizer):
    import xgrammar as xgr

    from infer.constrain import tokenizer_info

    tok = marked_tokenizer
    n, stop = len(tok), [tok.convert_tokens_to_ids("<|endoftext|>")]
    vocab_size = n + 7  # a padded embedding: ids without a token
    info = tokenizer_info(tok, vocab_size, stop)
    base = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=vocab_size, stop_token_ids=stop)
    assert base.vocab_type == xgr.VocabType.BYTE_LEVEL
    assert (info.vocab_type, info.add_prefix_space) == (base.vocab_type, base.add_prefix_space)
    assert list(info.stop_token_ids) == stop and info.vocab_size == vocab_size
    vocab = tok.get_vocab()
    expected = list(base.decoded_vocab)
    for i in range(1, 7):
        expected[vocab[f"<|placeholder{i}|>"]] = chr(0xE000 + i).encode()
    excluded = {i for t, i in vocab.items() if "\u00ee" in t} | {vocab[t] for t in ADDED[:4]}
    assert vocab["\u00ee"] in excluded  # the byte-level spelling of byte 0xEE
    for i in excluded:
        expected[i] = b""
    assert expected[vocab["\ue100"]] == "\ue100".encode()  # outside the private range: kept
    assert all(expected[i] == b"" for i in range(n, vocab_size))
    assert list(info.decoded_vocab) == expected
    # An embedding smaller than the tokenizer: ids at or past it are left out.
    small = tokenizer_info(tok, n - 1, stop)
    assert len(small.decoded_vocab) == n - 1 and list(small.decoded_vocab) == expected[:n - 1]


@pytest.fixture(scope="module")
def fallback_tokenizer():
    """A Llama-2-style byte-fallback tokenizer (<0xNN> tokens, a "▁" prefix space)."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for t in ["\u2581", "a", "b", "\u00ee", "K", "8", "0", ".", "2"]:
        vocab[t] = len(vocab)
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    bpe.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    bpe.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_tokenizer_info_byte_fallback(fallback_tokenizer):
    import xgrammar as xgr

    from infer.constrain import tokenizer_info

    tok = fallback_tokenizer
    info = tokenizer_info(tok, len(tok), [2])
    base = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok), stop_token_ids=[2])
    assert base.vocab_type == xgr.VocabType.BYTE_FALLBACK and base.add_prefix_space is True
    assert (info.vocab_type, info.add_prefix_space) == (base.vocab_type, True)
    vocab = tok.get_vocab()
    dv = info.decoded_vocab
    assert dv[vocab["<0xEE>"]] == b""  # the lead byte of U+E0xx
    assert dv[vocab["<0xE2>"]] == b"\xe2"  # other lead bytes stay
    assert dv[vocab["\u00ee"]] == "\u00ee".encode()  # here a real letter, not byte 0xEE
    assert [dv[i] for i in range(len(tok)) if i != vocab["<0xEE>"]] == \
        [base.decoded_vocab[i] for i in range(len(tok)) if i != vocab["<0xEE>"]]


# ---------------------------------------------------------------- compile_grammar and its cache
def _ebnf(icd=ICD):
    from infer.constrain import CodeLists, claim_ebnf

    return claim_ebnf("phi3", CodeLists(list(icd), CPT, MODS, {}))


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def _accepts(compiled, tok, text, stop):
    import xgrammar as xgr

    m = xgr.GrammarMatcher(compiled)
    return all(m.accept_token(t) for t in prompts.encode(tok, text)) and m.accept_token(stop) and m.is_terminated()


def test_compile_then_load_from_cache(tiny_tokenizer, tmp_path, monkeypatch):
    from infer.constrain import compile_grammar

    monkeypatch.setenv("OPCLAIM_CACHE", str(tmp_path / "env" / "deeper"))  # not there yet: made with parents
    tok, ebnf = tiny_tokenizer, _ebnf()
    stop, vocab_size = [tok.convert_tokens_to_ids("<|endoftext|>")], len(tok) + 7
    first, took = _timed(lambda: compile_grammar(tok, vocab_size, stop, ebnf))
    assert KEY_RE.fullmatch(first.key) and first.key[-16:] == hashlib.sha256(ebnf.encode()).hexdigest()[:16]
    assert first.cached is False and first.load_s == 0.0 and 0 < first.compile_s <= took
    assert (first.vocab_size, first.ebnf) == (vocab_size, ebnf)
    folder = tmp_path / "env" / "deeper" / "grammars"
    assert [p.name for p in folder.iterdir()] == [f"{first.key}.json"]  # no .part left behind
    again, took = _timed(lambda: compile_grammar(tok, vocab_size, stop, ebnf))
    assert again.cached is True and again.key == first.key
    assert again.compile_s == 0.0 and 0 <= again.load_s <= took
    assert (again.vocab_size, again.ebnf) == (vocab_size, ebnf)
    good = prompts.target(CLAIM, "phi3")
    assert _accepts(again.compiled, tok, good, stop[0]) and not _accepts(again.compiled, tok, good.replace(
        "44970", "47563"), stop[0])
    proc = again.processor(1)
    assert proc.vocab_size == vocab_size and len(proc.matchers) == 1
    fresh = compile_grammar(tok, vocab_size, stop, ebnf, use_cache=False)  # the file is there, but not read
    assert fresh.cached is False and fresh.key == first.key
    assert compile_grammar(tok, vocab_size, stop, _ebnf(ICD[:1]), use_cache=False).cached is False
    assert len(list(folder.iterdir())) == 1  # use_cache=False writes nothing either


def test_cache_key_changes_with_vocabulary_or_grammar(tiny_tokenizer, marked_tokenizer, tmp_path):
    from infer.constrain import compile_grammar

    cache = tmp_path / "a" / "b"
    stop, n = [tiny_tokenizer.convert_tokens_to_ids("<|endoftext|>")], len(marked_tokenizer)
    assert n > len(tiny_tokenizer)  # the same vocabulary size: ids the tiny one pads, the marked one fills
    first = compile_grammar(tiny_tokenizer, n, stop, _ebnf(), cache=cache)
    assert (cache / f"{first.key}.json").is_file()
    other_text = compile_grammar(tiny_tokenizer, n, stop, _ebnf(["K80.20", "K35.80"]), cache=cache)
    other_vocab = compile_grammar(marked_tokenizer, n, stop, _ebnf(), cache=cache)
    other_size = compile_grammar(tiny_tokenizer, n + 32, stop, _ebnf(), cache=cache)
    tok_half, text_half = first.key.split("-")
    assert other_text.key.split("-")[0] == tok_half and other_text.key.split("-")[1] != text_half
    for g in (other_vocab, other_size):
        assert g.key.split("-")[0] != tok_half and g.key.split("-")[1] == text_half
    assert not any(g.cached for g in (other_text, other_vocab, other_size))
    assert len({first.key, other_text.key, other_vocab.key, other_size.key}) == 4
    assert len(list(cache.glob("*.json"))) == 4


def test_stale_cache_entry_is_compiled_afresh(tiny_tokenizer, tmp_path):
    from infer.constrain import compile_grammar

    stop, n = [tiny_tokenizer.convert_tokens_to_ids("<|endoftext|>")], len(tiny_tokenizer)
    key = compile_grammar(tiny_tokenizer, n, stop, _ebnf(), use_cache=False).key
    (tmp_path / f"{key}.json").write_text("{not a grammar", encoding="utf-8")
    g = compile_grammar(tiny_tokenizer, n, stop, _ebnf(), cache=tmp_path)
    assert g.cached is False and g.compile_s > 0
    assert compile_grammar(tiny_tokenizer, n, stop, _ebnf(), cache=tmp_path).cached is True  # rewritten


# ---------------------------------------------------------------- GrammarProcessor
@pytest.fixture(scope="module")
def grammar(tiny_tokenizer, tmp_path_factory):
    from infer.constrain import compile_grammar

    tok = tiny_tokenizer
    return compile_grammar(tok, len(tok) + 7, [tok.convert_tokens_to_ids("<|endoftext|>")], _ebnf(),
                           cache=tmp_path_factory.mktemp("gc"))


def test_processor_masks_each_row_until_it_terminates(grammar, tiny_tokenizer):
    import torch

    tok, vocab_size = tiny_tokenizer, grammar.vocab_size
    stop = tok.convert_tokens_to_ids("<|endoftext|>")
    rows = [prompts.encode(tok, prompts.target(Claim(), "phi3")) + [stop],
            prompts.encode(tok, prompts.target(CLAIM, "phi3")) + [stop]]
    vocab = tok.get_vocab()
    padding, lead = set(range(len(tok), vocab_size)), vocab["\u00ee"]
    name_at = len(prompts.encode(tok, prompts.target(CLAIM, "phi3").split("Provider Name: ")[0] + "Provider Name: "))
    assert rows[1][:name_at] == prompts.encode(tok, prompts.target(CLAIM, "phi3"))[:name_at]
    proc = grammar.processor(2)
    gen = torch.Generator().manual_seed(0)
    ids = torch.tensor([[1], [1]])  # the prompt: never fed to the matchers
    for step in range(len(rows[1])):
        scores = torch.randn(2, vocab_size, generator=gen)
        out = proc(ids, scores.clone())
        for r, seq in enumerate(rows):
            if step >= len(seq):  # this row ended: left unmasked
                assert torch.equal(out[r], scores[r]), (r, step)
                continue
            allowed = torch.isfinite(out[r])
            assert torch.equal(out[r][allowed], scores[r][allowed])  # allowed tokens keep their logits
            assert torch.all(out[r][~allowed] == -torch.inf)
            assert allowed[seq[step]], (r, step)
            assert not allowed[sorted(padding)].any() and not allowed[lead]
            if step == 0:
                assert allowed.nonzero().flatten().tolist() == [vocab["<|placeholder2|>"]]
            if r == 1 and step == name_at:  # free text: most of the vocabulary, but no marker character
                assert allowed.sum() > len(tok) // 2
                assert not allowed[[vocab[f"<|placeholder{i}|>"] for i in range(1, 7)]].any()
        nxt = [seq[step] if step < len(seq) else stop for seq in rows]
        ids = torch.cat([ids, torch.tensor(nxt)[:, None]], dim=1)
    assert [m.is_terminated() for m in proc.matchers] == [True, False]  # row 1's stop not fed back yet
    last = torch.randn(2, vocab_size, generator=gen)
    out = proc(ids, last.clone())
    assert torch.equal(out, last) and all(m.is_terminated() for m in proc.matchers)


def test_processor_refuses_a_token_it_did_not_allow(grammar, tiny_tokenizer):
    import torch

    proc = grammar.processor(1)
    proc(torch.tensor([[1]]), torch.zeros(1, grammar.vocab_size))
    wrong = prompts.encode(tiny_tokenizer, "x")[0]  # only <|placeholder2|> may open the claim
    with pytest.raises(RuntimeError, match=r"^grammar rejected a token it had allowed$"):
        proc(torch.tensor([[1, wrong]]), torch.zeros(1, grammar.vocab_size))
