"""The claim model (DESIGN.md "Records") and the target text the model learns to write.

Case -> Claim -> Provider -> Line. Codes are normalised on construction from dicts, so
everything downstream sees dotted upper-case ICD-10-CM, five-character CPT, two-character
modifiers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from opclaim.codes import normalize_cpt, normalize_icd10, normalize_modifier
from opclaim.errors import CodeFormatError, InputError


def _clean(text) -> str:
    """Single-line free text: the target format is line- and '|'-delimited."""
    return re.sub(r"\s+", " ", str(text).replace("|", "/")).strip()


@dataclass
class Line:
    cpt: str
    modifiers: list[str] = field(default_factory=list)
    description: str = ""

    def to_dict(self) -> dict:
        return {"cpt": self.cpt, "modifiers": list(self.modifiers), "description": self.description}


@dataclass
class Provider:
    name: str
    role: str = "surgeon"
    lines: list[Line] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "role": self.role, "lines": [x.to_dict() for x in self.lines]}


@dataclass
class Claim:
    icd10: list[str] = field(default_factory=list)
    providers: list[Provider] = field(default_factory=list)

    # --- code sets used by evaluation (DESIGN.md "Evaluation definitions")
    def icd10_set(self) -> set[str]:
        return set(self.icd10)

    def cpt_set(self) -> set[str]:
        return {ln.cpt for p in self.providers for ln in p.lines}

    def modifier_set(self) -> set[str]:
        return {f"{ln.cpt}-{m}" for p in self.providers for ln in p.lines for m in ln.modifiers}

    def to_dict(self) -> dict:
        return {"icd10": list(self.icd10), "providers": [p.to_dict() for p in self.providers]}

    @classmethod
    def from_dict(cls, d, *, where: str = "claim") -> Claim:
        """Build and normalise; errors carry the field path (e.g. claim.providers[0].lines[1].cpt)."""
        if not isinstance(d, dict):
            raise InputError("must be an object", field=where)
        icd = d.get("icd10", [])
        if not isinstance(icd, list):
            raise InputError("must be a list", field=f"{where}.icd10")
        codes = []
        for i, c in enumerate(icd):
            try:
                n = normalize_icd10(c)
            except CodeFormatError as e:
                raise CodeFormatError(e.reason, field=f"{where}.icd10[{i}]") from None
            if n not in codes:
                codes.append(n)
        provs = d.get("providers", [])
        if not isinstance(provs, list):
            raise InputError("must be a list", field=f"{where}.providers")
        providers = []
        for pi, p in enumerate(provs):
            pw = f"{where}.providers[{pi}]"
            if not isinstance(p, dict):
                raise InputError("must be an object", field=pw)
            lines = []
            for li, ln in enumerate(p.get("lines") or []):
                lw = f"{pw}.lines[{li}]"
                if not isinstance(ln, dict):
                    raise InputError("must be an object", field=lw)
                try:
                    cpt = normalize_cpt(ln.get("cpt", ""))
                except CodeFormatError as e:
                    raise CodeFormatError(e.reason, field=f"{lw}.cpt") from None
                mods = ln.get("modifiers") or []
                if isinstance(mods, str):
                    mods = [m for m in re.split(r"[,\s]+", mods) if m]
                nm = []
                for mi, m in enumerate(mods):
                    try:
                        nm.append(normalize_modifier(m))
                    except CodeFormatError as e:
                        raise CodeFormatError(e.reason, field=f"{lw}.modifiers[{mi}]") from None
                lines.append(Line(cpt, nm, _clean(ln.get("description", ""))))
            providers.append(Provider(_clean(p.get("name", "")) or "Unknown",
                                      _clean(p.get("role", "surgeon")) or "surgeon", lines))
        return cls(codes, providers)


@dataclass
class Case:
    id: str
    note: str
    claim: Claim
    date: str | None = None
    service: str | None = None
    style: str | None = None

    def to_dict(self) -> dict:
        d = {"id": self.id, "date": self.date, "service": self.service, "note": self.note,
             "claim": self.claim.to_dict()}
        if self.style is not None:
            d["style"] = self.style
        return d

    @classmethod
    def from_dict(cls, d) -> Case:
        if not isinstance(d, dict):
            raise InputError("record must be a JSON object")
        for key in ("id", "note"):
            v = d.get(key)
            if v is None or (isinstance(v, str) and not v.strip()):
                raise InputError("missing or empty", field=key)
            if not isinstance(v, (str, int)):
                raise InputError("must be a string", field=key)
        if d.get("claim") is None:
            raise InputError("missing", field="claim")
        return cls(id=str(d["id"]), note=str(d["note"]), claim=Claim.from_dict(d["claim"]),
                   date=d.get("date"), service=d.get("service"), style=d.get("style"))


# ---------------------------------------------------------------- target text
@dataclass(frozen=True)
class Markers:
    """Section delimiters of the target text: Phi-3's unused special tokens, or none."""

    icd_open: str = ""
    icd_close: str = ""
    cpt_open: str = ""
    cpt_close: str = ""
    between: str = "\n"


PHI3_MARKERS = Markers("<|placeholder2|>", "<|placeholder3|>", "<|placeholder4|>", "<|placeholder5|>")
PLAIN_MARKERS = Markers(between="\n\n")
SPECIAL_TOKEN_RE = re.compile(r"<\|[A-Za-z0-9_]+\|>|</?s>")

ICD_HEADER = "ICD-10-CM Diagnoses:"
CPT_HEADER = "CPT Codes with Modifiers:"


def render_target(claim: Claim, markers: Markers = PHI3_MARKERS) -> str:
    """The claim as the text the model learns to write (DESIGN.md "Claim target text")."""
    rows = []
    for p in claim.providers:
        rows += [f"Provider Name: {p.name}", "Provider Billables:"]
        for i, ln in enumerate(p.lines, 1):
            mods = ", ".join(ln.modifiers) if ln.modifiers else "None"
            rows.append(f"CPT {i}: {ln.cpt} | Modifiers: {mods} | Description: {ln.description}")
    icd = ", ".join(claim.icd10) if claim.icd10 else "None"
    body = "\n".join(rows) if rows else "None"
    m = markers
    return (f"{m.icd_open}{ICD_HEADER}\n{icd}{m.icd_close}{m.between}"
            f"{m.cpt_open}{CPT_HEADER}\n{body}{m.cpt_close}")


def strip_special_tokens(text: str) -> str:
    """Target or output text with special tokens removed (used for ROUGE/METEOR)."""
    return SPECIAL_TOKEN_RE.sub("", text).strip()


_LINE_RE = re.compile(r"^CPT \d+: (\S+) \| Modifiers: (.*?) \| Description: ?(.*)$")


def parse_target(text: str) -> Claim:
    """Strict inverse of render_target (either marker set). Raises InputError on bad text.

    Robust extraction from arbitrary model output lives in eval.extract."""
    plain = SPECIAL_TOKEN_RE.sub("", text)
    if ICD_HEADER not in plain or CPT_HEADER not in plain:
        raise InputError("target text lacks its section headers")
    icd_part, _, cpt_part = plain.partition(CPT_HEADER)
    icd_text = icd_part.split(ICD_HEADER, 1)[1].strip()
    icd = [] if icd_text in ("", "None") else [c.strip() for c in icd_text.split(",")]
    providers: list[dict] = []
    for raw in cpt_part.strip().splitlines():
        line = raw.strip()
        if not line or line == "None" or line == "Provider Billables:":
            continue
        if line.startswith("Provider Name:"):
            providers.append({"name": line.split(":", 1)[1].strip(), "lines": []})
            continue
        m = _LINE_RE.match(line)
        if not m or not providers:
            raise InputError(f"unexpected line in CPT section: {line[:40]!r}")
        mods = [] if m.group(2).strip() == "None" else [x.strip() for x in m.group(2).split(",")]
        providers[-1]["lines"].append({"cpt": m.group(1), "modifiers": mods, "description": m.group(3)})
    # Roles are not part of the target text: the first provider is taken as the surgeon.
    for i, p in enumerate(providers):
        p["role"] = "surgeon" if i == 0 else "assistant"
    return Claim.from_dict({"icd10": icd, "providers": providers})
