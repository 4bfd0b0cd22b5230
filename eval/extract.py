"""Codes from raw model output: the study's regular-expression extraction, made robust.

Sections are found by their headers ("ICD-10-CM Diagnoses:", "CPT Codes with Modifiers:" and
common variants); billing lines (`CPT 1: ... |`, `Provider Name:`) that follow the diagnoses
without the CPT header start the CPT section themselves. Inside a section only lines shaped like a code list / billing line count;
descriptions and prose are never scanned for codes. Without any header a conservative pattern
fallback applies (dotted ICD-10-CM codes; CPT codes only with an explicit "CPT" label or a
`CODE-MOD` suffix). Anything unextractable simply yields no codes: it is scored as wrong.

`extract()` never raises (a property test feeds it arbitrary text).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from opclaim.codes import MODIFIERS

# ---------------------------------------------------------------- normalising the text
# Closing markers end a section; any other special token is just a line break. Mangled tokens
# ("<|placeholder3|", "placeholder5|>", "<placeholder 3>") are recognised by their name.
_CLOSE_RE = re.compile(r"<?\|?\s*placeholder\s*[35]\s*\|?>?|<\|?\s*(?:end|endoftext|eot_id|im_end)\s*\|?>|</s>",
                       re.I)
_TOKEN_RE = re.compile(r"<?\|?\s*placeholder\s*\d+\s*\|?>?|<\|[^|<>\n]{0,40}\|>|</?s>", re.I)
_END = "\x00END\x00"

# ---------------------------------------------------------------- headers
_MARKUP_RE = re.compile(r"^[\s#>*_•·\-–—=]*")
_ICD_HEADER_RE = re.compile(
    r"^(?:ICD[-\s]?10(?:[-\s]?CM)?|ICD)(?:\s+(?:diagnos[ie]s|dx))?(?:\s+codes?)?(?:\s+used)?\s*(?::|$)"
    r"|^diagnos(?:is|es)(?:\s+codes?)?\s*\(\s*ICD[-\s]?10(?:[-\s]?CM)?\s*\)\s*(?::|$)"
    r"|^diagnosis\s+codes?\s*(?::|$)", re.I)
_CPT_HEADER_RE = re.compile(
    r"^(?:CPT(?:\s*/\s*HCPCS)?|HCPCS|procedure)\s+codes?(?:\s+(?:with|and|&|\+)\s+modifiers?)?\s*(?::|$)"
    r"|^CPTs?\s*(?::|$)", re.I)

# ---------------------------------------------------------------- codes
_ICD_TOKEN_RE = re.compile(r"([A-Za-z]\d[0-9A-Za-z])(?:\.([0-9A-Za-z]{1,4})|([0-9A-Za-z]{1,4}))?(?![0-9A-Za-z])\.?")
_ICD_DOTTED_RE = re.compile(r"(?<![\w.])([A-Z]\d[0-9A-Z]\.[0-9A-Z]{1,4})(?![\w])")
_ICD_LABELLED_RE = re.compile(r"\bICD[-\s]?(?:10)?(?:[-\s]?CM)?(?:\s+codes?)?\s*[:#]?\s*(?=[A-Za-z]\d)", re.I)
_CPT_CODE_RE = re.compile(r"(\d{4}[0-9FTUftu]|[A-Va-v]\d{4})(?![0-9A-Za-z])")
_BULLET_RE = re.compile(r"^\s*(?:[-*•·–—+>]+|\(?\d{1,3}[.)]|\(\d{1,3}\)|[a-z][.)](?=\s))?\s*")
_ICD_LABEL_RE = re.compile(r"^(?:(?:ICD[-\s]?(?:10)?(?:[-\s]?CM)?|diagnosis|dx|code)(?:\s*code)?\s*#?\s*\d{0,3}\s*[:.)\-]\s*)",
                           re.I)
_CPT_LABEL_RE = re.compile(r"^(?:CPT|HCPCS|code|procedure)(?:\s+codes?)?\s*(?:#?\s*\d{1,3}\s*[:.)]|[:#])?\s*", re.I)
_CPT_LABELLED_RE = re.compile(r"\b(?:CPT|HCPCS)(?:\s+codes?)?\s*(?:#?\s*\d{1,3}\s*[:.)]|[:#])?\s*(?=\d{4}|[A-Va-v]\d{4})",
                              re.I)
_CPT_WITH_MOD_RE = re.compile(r"(?<![\w-])(\d{5})-([0-9A-Z]{2})(?![\w])")
_PROVIDER_RE = re.compile(r"^(?:provider|surgeon|assistant|physician)(?:\s+name)?\s*:\s*(.*)$", re.I)
# A billing line or provider line inside the ICD section means the CPT header was left out.
_CLAIM_LINE_RE = re.compile(r"^[\s#>*_•·\-–—]*(?:CPT(?:\s+code)?\s*#?\s*\d{1,3}\s*[:.)]\s*"
                            r"(?:\S.*\||(?:\d{4}[0-9FTUftu]|[A-Va-v]\d{4})(?![0-9A-Za-z]))"
                            r"|provider\s+(?:name|billables)\s*:)", re.I)
_SKIP_RE = re.compile(r"^(?:provider\s+billables|billables|none|n/?a)\s*:?\s*$", re.I)
_DESC_RE = re.compile(r"\bdesc(?:ription)?\s*:", re.I)
_MODS_LABEL_RE = re.compile(r"\bmod(?:ifier\(s\)|ifiers?|s)?\.?(?![A-Za-z])\s*[:#=]?\s*", re.I)
_MOD_TOKEN_RE = re.compile(r"([0-9A-Za-z]{2})(?![0-9A-Za-z])")
_MOD_SEP_RE = re.compile(r"\s*(?:,|/|;|&|\band\b|\s)\s*", re.I)
_NONE_RE = re.compile(r"\s*(?:none|n/a|n\.a\.|nil|null|-+|—|–)(?![0-9A-Za-z])", re.I)
_ITEM_SEP_RE = re.compile(r"[\s,;|+]*(?:(?:and|&)(?![A-Za-z]))?[\s,;|+]*", re.I)
_ICD_SEP_RE = re.compile(r"\s+(?:(?:and|&)\s+)?")
_ICD_PIECES_RE = re.compile(r"[,;]|\s[•·]\s|\s\|\s")
_PARENS_RE = re.compile(r"\([^()]*\)")
_ATTACHED_RE = re.compile(r"-([0-9A-Za-z]{2})(?![0-9A-Za-z])")     # 47562-80
_SPACED_RE = re.compile(r"\s+-\s*([0-9A-Z]{2})(?![0-9A-Za-z])")   # 47562 - 80 (digits or known only)
_NEXT_CODE_RE = re.compile(r"[,;]\s*(?=(?:\d{4}[0-9FTUftu]|[A-Va-v]\d{4})(?![0-9A-Za-z]))")
# Headers or items run together on one line (lost newlines) are split apart first.
_SPLIT_RE = re.compile(r"(?=(?:ICD-10-CM Diagnoses|CPT Codes with Modifiers|Provider Name|Provider Billables)\s*:)"
                       r"|(?<=\S)\s+(?=CPT(?: Code)? \d{1,3}\s*:)", re.I)
# Two-letter words that would otherwise read as modifiers when written in lower case.
_WORDS = {"as", "at", "to", "in", "on", "or", "of", "no", "an", "by", "is", "it", "be", "we", "he",
          "me", "my", "so", "up", "us", "do", "go", "if", "na"}


@dataclass
class Extraction:
    icd10: list[str] = field(default_factory=list)
    cpt: list[str] = field(default_factory=list)
    modifiers: list[str] = field(default_factory=list)
    # (provider, cpt, [mods]) in order, for showing the predicted claim to a coder
    lines: list[tuple[str, str, list[str]]] = field(default_factory=list)
    headers: bool = False  # were section headers found (False: pattern fallback only)

    def to_dict(self) -> dict:
        return {"icd10": list(self.icd10), "cpt": list(self.cpt), "modifiers": list(self.modifiers)}

    def add_icd(self, code: str) -> None:
        if code not in self.icd10:
            self.icd10.append(code)

    def add_line(self, provider: str, cpt: str, mods: list[str]) -> None:
        if cpt not in self.cpt:
            self.cpt.append(cpt)
        for m in mods:
            pair = f"{cpt}-{m}"
            if pair not in self.modifiers:
                self.modifiers.append(pair)
        self.lines.append((provider, cpt, list(mods)))


def _as_text(output) -> str:
    if output is None:
        return ""
    if isinstance(output, (bytes, bytearray)):
        return bytes(output).decode("utf-8", errors="replace")
    return output if isinstance(output, str) else str(output)


def _normalise(text: str) -> list[str]:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", " ")
    text = text.replace("**", "").replace("__", "").replace("\u00a0", " ")
    text = _CLOSE_RE.sub(f"\n{_END}\n", text)
    text = _TOKEN_RE.sub("\n", text)
    text = _SPLIT_RE.sub("\n", text)
    return text.split("\n")


def _header(line: str):
    """('icd'|'cpt', rest of the line after the header) or None."""
    s = _MARKUP_RE.sub("", line, count=1)
    for kind, rx in (("icd", _ICD_HEADER_RE), ("cpt", _CPT_HEADER_RE)):
        m = rx.match(s)
        if m:
            return kind, s[m.end():]
    return None


# ---------------------------------------------------------------- ICD-10-CM
def _icd_from_token(m) -> str | None:
    head, dotted, plain = m.group(1).upper(), m.group(2), m.group(3)
    tail = (dotted or plain or "").upper()
    return f"{head}.{tail}" if tail else head


def _icd_line(line: str, out: Extraction) -> None:
    """A line of the ICD section: codes separated by , ; bullets or spaces; text after a code
    (its description) is ignored up to the next separator."""
    line = _PARENS_RE.sub(" ", line)  # parenthesised descriptions
    for piece in _ICD_PIECES_RE.split(line):
        s = _ICD_LABEL_RE.sub("", _BULLET_RE.sub("", piece, count=1), count=1)
        pos = 0
        while True:
            m = _ICD_TOKEN_RE.match(s, pos)
            if not m:
                break
            out.add_icd(_icd_from_token(m))
            sep = _ICD_SEP_RE.match(s, m.end())
            if not sep:
                break
            pos = sep.end()


# ---------------------------------------------------------------- CPT lines
def _mod_ok(tok: str) -> bool:
    if tok.isdigit():
        return True
    if tok.upper() == "NA":
        return False
    if tok == tok.upper():  # written in capitals: LT, XS, E1
        return True
    return tok.upper() in MODIFIERS and tok.lower() not in _WORDS


def _mod_list(s: str, pos: int) -> tuple[list[str], int]:
    """Modifiers listed from `pos` ('80, 51', 'None', 'N/A', '-'); returns (mods, end)."""
    m = _NONE_RE.match(s, pos)
    if m:
        return [], m.end()
    mods = []
    while True:
        m = _MOD_TOKEN_RE.match(s, pos)
        if not m or not _mod_ok(m.group(1)):
            break
        mods.append(m.group(1).upper())
        pos = m.end()
        sep = _MOD_SEP_RE.match(s, pos)
        if not sep or sep.end() == pos:
            break
        # only continue if the next token is another modifier
        nxt = _MOD_TOKEN_RE.match(s, sep.end())
        if not nxt or not _mod_ok(nxt.group(1)):
            break
        pos = sep.end()
    return mods, pos


def _cpt_items(s: str, pos: int, provider: str, out: Extraction) -> bool:
    """Parse 'CODE[-MOD...] [| Modifiers: ...]' items starting at `pos`; True if any found."""
    found = False
    while True:
        m = _CPT_CODE_RE.match(s, pos)
        if not m:
            return found
        code = m.group(1).upper()
        pos = m.end()
        mods: list[str] = []
        # attached modifiers: 47562-80, 47562-80-51, 47562 -80
        while True:
            a = _ATTACHED_RE.match(s, pos)
            if a and _mod_ok(a.group(1)):
                mods.append(a.group(1).upper())
                pos = a.end()
                continue
            a = _SPACED_RE.match(s, pos)
            if a and (a.group(1).isdigit() or a.group(1) in MODIFIERS):
                mods.append(a.group(1))
                pos = a.end()
                continue
            break
        # an explicit modifier field later on the line, before the description
        rest_end = len(s)
        d = _DESC_RE.search(s, pos)
        if d:
            rest_end = d.start()
        nxt_code = _next_code_start(s, pos, rest_end)
        lab = _MODS_LABEL_RE.search(s, pos, nxt_code)
        if lab:
            listed, end = _mod_list(s, lab.end())
            mods += [x for x in listed if x not in mods]
            pos = max(pos, end)
        out.add_line(provider, code, list(dict.fromkeys(mods)))
        found = True
        if d and d.start() <= pos:
            return found
        sep = _ITEM_SEP_RE.match(s, pos)
        pos = sep.end() if sep else pos
        if d and pos >= d.start():
            return found


def _next_code_start(s: str, pos: int, end: int) -> int:
    """Where the next comma/semicolon-separated CPT code begins (so 'mod' search stays on this item)."""
    m = _NEXT_CODE_RE.search(s, pos, end)
    return m.start() if m else end


def _cpt_line(line: str, provider: str, out: Extraction) -> str:
    """A line of the CPT section. Returns the current provider name."""
    s = line.strip()
    p = _PROVIDER_RE.match(_MARKUP_RE.sub("", s, count=1))
    if p:
        return p.group(1).strip() or provider
    if not s or _SKIP_RE.match(s):
        return provider
    s = _BULLET_RE.sub("", s, count=1)
    s = _CPT_LABEL_RE.sub("", s, count=1)
    _cpt_items(s, 0, provider, out)
    return provider


# ---------------------------------------------------------------- fallback
def _fallback_icd(line: str, out: Extraction) -> None:
    for m in _ICD_LABELLED_RE.finditer(line):
        t = _ICD_TOKEN_RE.match(line, m.end())
        if t:
            out.add_icd(_icd_from_token(t))
    for m in _ICD_DOTTED_RE.finditer(line):
        out.add_icd(m.group(1))


def _fallback_cpt(line: str, out: Extraction) -> None:
    d = _DESC_RE.search(line)
    scan = line[:d.start()] if d else line
    for m in _CPT_LABELLED_RE.finditer(scan):
        _cpt_items(scan, m.end(), "", out)
    for m in _CPT_WITH_MOD_RE.finditer(scan):
        if m.group(1) not in out.cpt or f"{m.group(1)}-{m.group(2)}" not in out.modifiers:
            out.add_line("", m.group(1), [m.group(2)])


# ---------------------------------------------------------------- entry point
def extract(output) -> Extraction:
    """Codes in one model output (str; bytes are decoded leniently; None is empty)."""
    text = _as_text(output)
    lines = _normalise(text)
    out = Extraction()
    # tag each line with its section: 'icd', 'cpt' or None (outside any section)
    tagged: list[tuple[str | None, str]] = []
    section = None
    kinds = set()
    for line in lines:
        if line == _END:
            section = None
            continue
        h = _header(line)
        if h:
            section, rest = h
            kinds.add(section)
            tagged.append((section, rest))
            continue
        if section == "icd" and _CLAIM_LINE_RE.match(line):
            section = "cpt"  # claim lines after the diagnoses without their header
        tagged.append((section, line))
    out.headers = bool(kinds)
    provider = ""
    for sec, line in tagged:
        if sec == "icd":
            _icd_line(line, out)
        elif sec == "cpt":
            provider = _cpt_line(line, provider, out)
        else:
            # outside sections: pattern fallback only for a kind that has no header at all
            if "icd" not in kinds:
                d = _DESC_RE.search(line)
                _fallback_icd(line[:d.start()] if d else line, out)
            if "cpt" not in kinds:
                _fallback_cpt(line, out)
    return out


def extract_codes(output) -> dict:
    """`{"icd10": [...], "cpt": [...], "modifiers": ["47562-80", ...]}` for one output."""
    return extract(output).to_dict()
