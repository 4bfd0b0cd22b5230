"""Prompt templates: the study's Phi-3 format, generic chat-template fallback, tokenisation pitfalls."""

import pytest

import prompts
from opclaim.claim import Claim
from opclaim.errors import InputError

CLAIM = Claim.from_dict({"icd10": ["K80.20"], "providers": [
    {"name": "Dr. A. Rivera", "lines": [{"cpt": "47562", "modifiers": ["RT"], "description": "Lap chole"}]}]})
NOTE = "PREOPERATIVE DIAGNOSIS: Gallstones.\nPROCEDURE: Laparoscopic cholecystectomy."

STUDY_FINETUNED = (
    "<s><|system|>\nYou are an expert on medical coding and procedural billing in the United States. "
    "Your task is to assist in creating an appropriate billing claim given the provided operative report. "
    "Every claim should include ICD-10-CM codes, CPT codes from the American Medical Association, and the "
    "modifiers for each CPT code.<|end|>\n<|user|>\nWhat ICD-10-CM diagnosis codes, CPT codes, and CPT "
    "modifiers could be added to the billing claim for the following procedure?<|placeholder1|>\n"
    "Operative Report:\n" + NOTE + "<|placeholder1|><|end|>\n<|assistant|>\n")


def test_finetuned_prompt_is_the_study_template():
    assert prompts.prompt(NOTE, "finetuned", fmt="phi3") == STUDY_FINETUNED


def test_base_and_rag_add_instruction_and_examples():
    base = prompts.prompt(NOTE, "base", fmt="phi3")
    assert "in exactly this format" in base and "Relevant Example" not in base
    rag = prompts.prompt(NOTE, "rag", fmt="phi3", examples=[CLAIM, CLAIM])
    assert rag.count("Relevant Example Claim 1:") == 1 and rag.count("Relevant Example Claim 2:") == 1
    assert rag.count("CPT 1: 47562 | Modifiers: RT | Description: Lap chole") == 2
    assert rag.endswith("<|end|>\n<|assistant|>\n")
    with pytest.raises(InputError):
        prompts.prompt(NOTE, "rag", fmt="phi3")
    with pytest.raises(InputError):
        prompts.prompt(NOTE, "sideways", fmt="phi3")


def test_special_tokens_are_single_ids(tiny_tokenizer):
    for tok in prompts.PHI3_TOKENS + ["<s>", "<|endoftext|>"]:
        assert len(prompts.encode(tiny_tokenizer, tok)) == 1, tok
    assert prompts.detect_format(tiny_tokenizer).name == "phi3"


def test_newline_after_special_token_survives(tiny_tokenizer):
    pair = prompts.training_pair(NOTE, CLAIM, fmt="phi3")
    text = pair["prompt"] + pair["completion"]
    ids = prompts.encode(tiny_tokenizer, text)
    assert tiny_tokenizer.decode(ids) == text
    toks = tiny_tokenizer.convert_ids_to_tokens(ids)
    for special in ("<|system|>", "<|user|>", "<|assistant|>"):
        i = toks.index(special)
        assert tiny_tokenizer.decode(ids[i + 1:i + 2]).startswith("\n"), special
    # the prompt's tokens are a prefix of the full text's: masking by prompt length is exact
    p_ids = prompts.encode(tiny_tokenizer, pair["prompt"])
    assert ids[:len(p_ids)] == p_ids
    assert pair["completion"].endswith("<|placeholder5|><|end|>")


def test_generic_format_uses_chat_template(tiny_tokenizer):
    p = prompts.prompt(NOTE, "finetuned", fmt="generic", tokenizer=tiny_tokenizer)
    assert p.startswith("<s><|system|>\nYou are an expert") and p.endswith("<|assistant|>\n")
    assert "Operative Report:\n" + NOTE in p and "<|placeholder1|>" not in p
    t = prompts.target(CLAIM, "generic")
    assert "<|placeholder" not in t and t.startswith("ICD-10-CM Diagnoses:\nK80.20\n\nCPT Codes")
    assert prompts.end_of_claim("generic", tiny_tokenizer) == "<|end|>"
    assert prompts.end_of_claim_ids("phi3", tiny_tokenizer)[0] == tiny_tokenizer.convert_tokens_to_ids("<|end|>")
    with pytest.raises(InputError):
        prompts.prompt(NOTE, "finetuned", fmt="generic")


def test_prompt_note_is_not_template_code():
    note = "{{ system }} {% for x in y %} <|end|>"
    assert note in prompts.prompt(note, "finetuned", fmt="phi3")
