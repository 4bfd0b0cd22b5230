"""Code systems: ICD-10-CM (CMS release via simple-icd-10-cm), CPT/HCPCS lists, modifiers.

Normalisers raise CodeFormatError naming the offending string; lookups never raise.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from opclaim.errors import CodeFormatError, InputError

ICD_RE = re.compile(r"^([A-Z][0-9][0-9A-Z])\.?([0-9A-Z]{1,4})?$")
# CPT Category I (5 digits), II (4 digits + F), III (4 digits + T), PLA (4 digits + U),
# and HCPCS Level II (letter + 4 digits), which surgical claims also carry.
CPT_RE = re.compile(r"^(?:\d{5}|\d{4}[FTU]|[A-V]\d{4})$")
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
}


# ---------------------------------------------------------------- ICD-10-CM
def normalize_icd10(code: str) -> str:
    """'k8020' / 'K80.20 ' -> 'K80.20'. Raises CodeFormatError on anything else."""
    s = str(code).strip().upper().replace(" ", "")
    m = ICD_RE.match(s)
    if not m:
        raise CodeFormatError(f"malformed ICD-10-CM code {code!r}")
    head, tail = m.group(1), m.group(2)
    return f"{head}.{tail}" if tail else head


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


def icd10_release() -> str:
    from importlib.metadata import version

    return f"CMS ICD-10-CM via simple-icd-10-cm {version('simple-icd-10-cm')}"


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
    s = CPT_PREFIX_RE.sub("", str(code).strip().upper()).strip()
    if not CPT_RE.match(s):
        raise CodeFormatError(f"malformed CPT/HCPCS code {code!r}")
    return s


def normalize_modifier(mod: str) -> str:
    s = str(mod).strip().upper()
    if not MOD_RE.match(s):
        raise CodeFormatError(f"malformed modifier {mod!r}")
    return s


def load_code_list(path: str | Path, normalize=normalize_cpt) -> dict[str, str]:
    """A user code list: one code per line, optional TAB + description; '#' comments."""
    path = Path(path)
    if not path.is_file():
        raise InputError("code list not found", file=path)
    out: dict[str, str] = {}
    with path.open(encoding="utf-8", errors="strict") as fh:
        for n, raw in enumerate(fh, 1):
            line = raw.rstrip("\n")
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
