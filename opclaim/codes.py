"""Code systems: ICD-10-CM (CMS release via simple-icd-10-cm), CPT/HCPCS lists, modifiers.

Normalisers raise CodeFormatError naming the field's problem; the offending string is shown only
when it is code-shaped (opclaim.errors.show), never free text. Lookups never raise.

ICD-10-CM codes must exist in the shipped release (`check_icd10_known`) unless the site allows a
newer release: `--allow-unknown-icd` on `opclaim data validate`, or OPCLAIM_ALLOW_UNKNOWN_ICD=1 for
every reader (docs/limits.md).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from opclaim.errors import CodeFormatError, InputError, require_file, show, type_name

ICD_RE = re.compile(r"^([A-Z][0-9][0-9A-Z])\.?([0-9A-Z]{1,4})?$")
# CPT Category I (5 digits), II (4 digits + F), III (4 digits + T), PLA (4 digits + U),
# and HCPCS Level II (letter + 4 digits), which surgical claims also carry.
CPT_RE = re.compile(r"^(?:\d{5}|\d{4}[FTU]|[A-V]\d{4})$", re.ASCII)  # ASCII: no other scripts' digits
MOD_RE = re.compile(r"^[0-9A-Z]{2}$")
CPT_PREFIX_RE = re.compile(r"^(?:CPT|HCPCS)[\s:#-]*")

# Modifiers used in surgical billing (CPT and HCPCS Level II), with short meanings.
MODIFIERS: dict[str, str] = {
    "22": "Increased procedural services",
    "23": "Unusual anesthesia",
    "24": "Unrelated E/M service during a postoperative period",
    "25": "Significant, separately identifiable E/M service",
    "26": "Professional component",
    "47": "Anesthesia by surgeon",
    "50": "Bilateral procedure",
    "51": "Multiple procedures",
    "52": "Reduced services",
    "53": "Discontinued procedure",
    "54": "Surgical care only",
    "55": "Postoperative management only",
    "56": "Preoperative management only",
    "57": "Decision for surgery",
    "58": "Staged or related procedure during the postoperative period",
    "59": "Distinct procedural service",
    "62": "Two surgeons",
    "66": "Surgical team",
    "73": "Discontinued outpatient procedure before anesthesia",
    "74": "Discontinued outpatient procedure after anesthesia",
    "76": "Repeat procedure by the same physician",
    "77": "Repeat procedure by another physician",
    "78": "Unplanned return to the OR for a related procedure during the postoperative period",
    "79": "Unrelated procedure during the postoperative period",
    "80": "Assistant surgeon",
    "81": "Minimum assistant surgeon",
    "82": "Assistant surgeon when a qualified resident is not available",
    "AS": "Non-physician assistant at surgery (PA, NP, CNS)",
    "LT": "Left side",
    "RT": "Right side",
    "E1": "Upper left eyelid",
    "E2": "Lower left eyelid",
    "E3": "Upper right eyelid",
    "E4": "Lower right eyelid",
    "FA": "Left hand, thumb",
    "F1": "Left hand, second digit",
    "F2": "Left hand, third digit",
    "F3": "Left hand, fourth digit",
    "F4": "Left hand, fifth digit",
    "F5": "Right hand, thumb",
    "F6": "Right hand, second digit",
    "F7": "Right hand, third digit",
    "F8": "Right hand, fourth digit",
    "F9": "Right hand, fifth digit",
    "TA": "Left foot, great toe",
    "T1": "Left foot, second digit",
    "T2": "Left foot, third digit",
    "T3": "Left foot, fourth digit",
    "T4": "Left foot, fifth digit",
    "T5": "Right foot, great toe",
    "T6": "Right foot, second digit",
    "T7": "Right foot, third digit",
    "T8": "Right foot, fourth digit",
    "T9": "Right foot, fifth digit",
    "XE": "Separate encounter",
    "XP": "Separate practitioner",
    "XS": "Separate structure or organ",
    "XU": "Unusual non-overlapping service",
    "GC": "Performed in part by a resident under a teaching physician",
    "QK": "Anesthesia: medical direction of 2-4 concurrent procedures",
    "QX": "CRNA service with medical direction by a physician",
    "QY": "Anesthesiologist medically directing one CRNA",
    "QZ": "CRNA service without medical direction",
    "AA": "Anesthesia services performed personally by anesthesiologist",
    "RA": "Replacement of a DME item",
    # Added 2026-12 (descriptions in our words). Keep new entries below this line: the ones above
    # are the tiny test tokenizer's corpus (opclaim/registry.py, TINY_TOKENIZER_MODIFIERS).
    "33": "Preventive service: patient cost sharing waived",
    "63": "Procedure on an infant weighing under 4 kg",
    "91": "Repeat clinical laboratory test on the same day",
    "95": "Synchronous (real-time audio and video) telemedicine service",
    "PT": "Screening colorectal test that became a diagnostic or therapeutic procedure",
    "Q5": "Substitute physician under a reciprocal billing arrangement",
    "Q6": "Substitute physician under a fee-for-time arrangement (locum tenens)",
    "Q0": "Investigational service in an approved clinical research study",
    "Q1": "Routine clinical service in an approved clinical research study",
    "KX": "Coverage requirements of the medical policy are met and documented",
    "GA": "Advance beneficiary notice (waiver of liability) on file",
    "GZ": "Expected to be denied as not reasonable and necessary; no advance notice on file",
    "GY": "Item or service excluded by statute or not a covered benefit",
    "GW": "Service unrelated to the patient's terminal condition under hospice",
    "FS": "Split or shared E/M visit (physician and non-physician practitioner)",
    "FT": "Unrelated E/M visit on the day of, or during the global period of, a procedure",
    "FY": "X-ray taken with computed radiography (cassette-based imaging)",
    "JW": "Drug amount discarded, not given to any patient",
    "JZ": "No amount of a single-dose drug was discarded",
    "TC": "Technical component",
    "LC": "Left circumflex coronary artery",
    "LD": "Left anterior descending coronary artery",
    "LM": "Left main coronary artery",
    "RC": "Right coronary artery",
    "RI": "Ramus intermedius coronary artery",
}
TINY_TOKENIZER_MODIFIERS = 65  # the first entries of MODIFIERS: what the tiny test tokenizer saw


# ---------------------------------------------------------------- ICD-10-CM
MAX_CODE_CHARS = 40  # longer than any code with a prefix and spaces: free text, not a code


def _code_text(code, what: str) -> str:
    """A code given as a string (or a plain integer); anything else is a type error."""
    if isinstance(code, bool) or not isinstance(code, (str, int)):
        raise CodeFormatError(f"{what} code must be a string, got {type_name(code)}")
    s = str(code)
    if len(s) > MAX_CODE_CHARS:
        raise CodeFormatError(f"malformed {what} code {show(s)}")
    return s


def normalize_icd10(code: str) -> str:
    """'k8020' / 'K80.20 ' -> 'K80.20'. Raises CodeFormatError on anything else.

    Letter O after the first character is never right in ICD-10-CM (no code of the release has
    one): it is a zero typed as a letter, rejected rather than passed on or silently fixed."""
    s = _code_text(code, "ICD-10-CM").strip().upper().replace(" ", "")
    m = ICD_RE.match(s)
    if not m:
        raise CodeFormatError(f"malformed ICD-10-CM code {show(s)}")
    head, tail = m.group(1), m.group(2)
    out = f"{head}.{tail}" if tail else head
    if "O" in out[1:]:
        fixed = out[0] + out[1:].replace("O", "0")
        raise CodeFormatError(f"letter O where a zero belongs in ICD-10-CM code {show(out)} "
                              f"(did you mean {show(fixed)}?)")
    return out


@functools.lru_cache(maxsize=1)
def _icd():
    import simple_icd_10_cm as cm

    return cm


@functools.lru_cache(maxsize=1)
def icd10_billable() -> frozenset[str]:
    """All billable (leaf) codes of the shipped CMS ICD-10-CM release, dotted.

    simple-icd-10-cm also reports 12 empty blocks as leaves ("C00-C75", "V00-V99", ...): ranges of
    codes, not codes, so they are left out."""
    cm = _icd()
    return frozenset(c for c in cm.get_all_codes(True) if cm.is_leaf(c) and cm.is_category_or_subcategory(c))


@functools.lru_cache(maxsize=1)
def icd10_release() -> str:
    from importlib.metadata import version

    return f"CMS ICD-10-CM via simple-icd-10-cm {version('simple-icd-10-cm')}"


def allow_unknown_icd_default() -> bool:
    """OPCLAIM_ALLOW_UNKNOWN_ICD=1: accept well-formed codes missing from the shipped release."""
    return os.environ.get("OPCLAIM_ALLOW_UNKNOWN_ICD", "").strip().lower() in ("1", "true", "yes")


def icd10_exists(code: str) -> bool:
    """A normalised code (billable or a parent category) that the shipped release contains."""
    cm = _icd()
    try:
        return bool(cm.is_valid_item(code)) and bool(cm.is_category_or_subcategory(code))
    except (ValueError, KeyError):
        return False


def check_icd10_known(code: str, allow_unknown: bool | None = None) -> None:
    """Raise CodeFormatError for a normalised code the shipped release does not contain."""
    if allow_unknown is None:
        allow_unknown = allow_unknown_icd_default()
    if not allow_unknown and not icd10_exists(code):
        raise CodeFormatError(f"ICD-10-CM code {show(code)} is not in the shipped release "
                              f"({icd10_release()}); --allow-unknown-icd or OPCLAIM_ALLOW_UNKNOWN_ICD=1 "
                              "accepts a newer release", kind="unknown_code")


def is_billable_icd10(code: str) -> bool:
    try:
        return normalize_icd10(code) in icd10_billable()
    except CodeFormatError:
        return False


def icd10_description(code: str) -> str | None:
    cm = _icd()
    try:
        c = normalize_icd10(code)
        return cm.get_description(c) if cm.is_valid_item(c) else None
    except (CodeFormatError, ValueError):
        return None


def nearest_billable_icd10(code: str, limit: int = 5) -> list[str]:
    """Billable codes nearest to `code`: itself if billable, else the billable descendants of
    its deepest valid ancestor (a non-billable parent like K80.2 -> K80.20, K80.21)."""
    cm = _icd()
    try:
        c = normalize_icd10(code)
    except CodeFormatError:
        return []
    if c in icd10_billable():
        return [c]
    probe = c
    while probe:
        if cm.is_valid_item(probe):
            leaves = [d for d in cm.get_descendants(probe) if cm.is_leaf(d)]
            if leaves:
                return leaves[:limit]
        probe = probe[:-1].rstrip(".")
        if len(probe) < 3:
            break
    return []


# ---------------------------------------------------------------- CPT / HCPCS
def normalize_cpt(code: str) -> str:
    """'cpt 47562' / '0042t' -> '47562' / '0042T'. Raises CodeFormatError otherwise."""
    s = CPT_PREFIX_RE.sub("", _code_text(code, "CPT/HCPCS").strip().upper()).strip()
    if not CPT_RE.match(s):
        raise CodeFormatError(f"malformed CPT/HCPCS code {show(s)}")
    return s


def normalize_modifier(mod: str) -> str:
    if isinstance(mod, bool) or not isinstance(mod, (str, int)):
        raise CodeFormatError(f"modifier must be a string, got {type_name(mod)}")
    s = str(mod).strip().upper()
    if not MOD_RE.match(s):
        raise CodeFormatError(f"malformed modifier {show(s)}")
    return s


def load_code_list(path: str | Path, normalize=normalize_cpt) -> dict[str, str]:
    """A user code list: one code per line, optional TAB + description; '#' comments."""
    path = require_file(path, "code list")
    out: dict[str, str] = {}
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as e:
                raise InputError(f"bytes that are not UTF-8 at offset {e.start}", file=path, line=n) from None
            if n == 1:
                line = line.removeprefix("\ufeff")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            code, _, desc = line.partition("\t")
            try:
                out[normalize(code)] = desc.strip()
            except CodeFormatError as e:
                raise InputError(e.reason, file=path, line=n, field="code") from None
    if not out:
        raise InputError("code list is empty", file=path)
    return out


def modifier_table(path: str | Path | None = None) -> dict[str, str]:
    """The default modifier table, or a user list that replaces it."""
    return load_code_list(path, normalize_modifier) if path else dict(MODIFIERS)
