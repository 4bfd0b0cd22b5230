"""The claim model (docs/design.md "Records") and the target text the model learns to write.

Case -> Claim -> Provider -> Line. Codes are normalised on construction from dicts, so
everything downstream sees dotted upper-case ICD-10-CM, five-character CPT, two-character
modifiers.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from opclaim.codes import check_icd10_known, normalize_cpt, normalize_icd10, normalize_modifier
from opclaim.errors import CodeFormatError, InputError, type_name


def _clean(text) -> str:
    """Single-line free text: the target format is line- and '|'-delimited."""
    return re.sub(r"\s+", " ", text.replace("|", "/")).strip()


def _list(d: dict, key: str, field: str, types=list) -> list:
    """d[key] as a list: an absent key is an empty list, a null or any other type is a reject
    (never a conversion: `"icd10": null` is not the same as no diagnoses)."""
    if key not in d:
        return []
    v = d[key]
    if v is None:
        raise InputError("must be a list, got null", field=field, kind="wrong_type")
    return _typed(d, key, types, field, [], "list")


def _typed(d: dict, key: str, types, field: str, default=None, expected: str = "string"):
    """d[key] when it has one of `types` (bool never counts as a number); absent/null -> default.

    A wrong type is an InputError naming the expected and actual type: never a coercion."""
    v = d.get(key)
    if v is None:
        return default
    if isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise InputError(f"must be a {expected}, got boolean", field=field, kind="wrong_type")
    if not isinstance(v, types):
        raise InputError(f"must be a {expected}, got {type_name(v)}", field=field, kind="wrong_type")
    return v


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

    # --- code sets used by evaluation (docs/design.md "Evaluation definitions")
    def icd10_set(self) -> set[str]:
        return set(self.icd10)

    def cpt_set(self) -> set[str]:
        return {ln.cpt for p in self.providers for ln in p.lines}

    def modifier_set(self) -> set[str]:
        return {f"{ln.cpt}-{m}" for p in self.providers for ln in p.lines for m in ln.modifiers}

    def to_dict(self) -> dict:
        return {"icd10": list(self.icd10), "providers": [p.to_dict() for p in self.providers]}

    @classmethod
    def from_dict(cls, d, *, where: str = "claim", allow_unknown_icd: bool | None = True) -> Claim:
        """Build and normalise; errors carry the field path (e.g. claim.providers[0].lines[1].cpt).

        Types are strict (a list where a list belongs, strings for names and descriptions).
        With allow_unknown_icd False (or None: the OPCLAIM_ALLOW_UNKNOWN_ICD environment variable
        decides), ICD-10-CM codes must exist in the shipped release: Case.from_dict asks for that
        for every case record; a bare claim (a rendered prediction, say) may hold invented codes."""
        if not isinstance(d, dict):
            raise InputError(f"must be an object, got {type_name(d)}", field=where, kind="wrong_type")
        icd = _list(d, "icd10", f"{where}.icd10")
        codes = []
        for i, c in enumerate(icd):
            try:
                n = normalize_icd10(c)
                if allow_unknown_icd is not True:
                    check_icd10_known(n, allow_unknown_icd)
            except CodeFormatError as e:
                raise CodeFormatError(e.reason, field=f"{where}.icd10[{i}]", kind=e.kind) from None
            if n not in codes:
                codes.append(n)
        provs = _list(d, "providers", f"{where}.providers")
        providers = []
        for pi, p in enumerate(provs):
            pw = f"{where}.providers[{pi}]"
            if not isinstance(p, dict):
                raise InputError(f"must be an object, got {type_name(p)}", field=pw, kind="wrong_type")
            lines = []
            for li, ln in enumerate(_list(p, "lines", f"{pw}.lines")):
                lw = f"{pw}.lines[{li}]"
                if not isinstance(ln, dict):
                    raise InputError(f"must be an object, got {type_name(ln)}", field=lw, kind="wrong_type")
                try:
                    cpt = normalize_cpt(ln.get("cpt", ""))
                except CodeFormatError as e:
                    raise CodeFormatError(e.reason, field=f"{lw}.cpt") from None
                mods = _list(ln, "modifiers", f"{lw}.modifiers", (list, str))
                if isinstance(mods, str):  # "80, 51": a documented shorthand for a list
                    mods = [m for m in re.split(r"[,\s]+", mods) if m]
                nm = []
                for mi, m in enumerate(mods):
                    if not isinstance(m, str):  # [59] is not "59": a number is a reject
                        raise InputError(f"must be a string, got {type_name(m)}", field=f"{lw}.modifiers[{mi}]",
                                         kind="wrong_type")
                    try:
                        nm.append(normalize_modifier(m))
                    except CodeFormatError as e:
                        raise CodeFormatError(e.reason, field=f"{lw}.modifiers[{mi}]") from None
                desc = _typed(ln, "description", str, f"{lw}.description", "")
                lines.append(Line(cpt, nm, _clean(desc)))
            name = _typed(p, "name", str, f"{pw}.name", "")
            role = _typed(p, "role", str, f"{pw}.role", "surgeon")
            providers.append(Provider(_clean(name) or "Unknown", _clean(role) or "surgeon", lines))
        return cls(codes, providers)


def _iso_date(s: str) -> bool:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", s):
        return False
    try:
        dt.date.fromisoformat(s)
    except ValueError:
        return False
    return True


CASE_FIELDS = ("id", "date", "service", "note", "claim", "style", "patient", "rationale", "source", "extra",
               "evidence")
EVIDENCE_SYSTEMS = ("icd10", "cpt", "modifiers")
SEXES = ("F", "M", "U")
MAX_AGE = 120


def _patient(v) -> dict | None:
    """{"age": int 0..120, "sex": "F" | "M" | "U"}, either key optional (PLAN "Interfaces")."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InputError(f"must be an object, got {type_name(v)}", field="patient", kind="wrong_type")
    unknown = sorted(k for k in v if k not in ("age", "sex"))
    if unknown:
        raise InputError(f"unknown key(s) {len(unknown)}; allowed: age, sex", field="patient", kind="invalid_record")
    out = {}
    age = _typed(v, "age", int, "patient.age", None, "integer")
    if age is not None:
        if not 0 <= age <= MAX_AGE:  # the value is not shown: ages over 89 are identifying
            raise InputError(f"must be an integer from 0 to {MAX_AGE}", field="patient.age", kind="invalid_value")
        out["age"] = age
    sex = _typed(v, "sex", str, "patient.sex", None)
    if sex is not None:
        if sex not in SEXES:
            raise InputError("must be one of F, M, U", field="patient.sex", kind="invalid_value")
        out["sex"] = sex
    return out


def _evidence(v, note: str) -> dict | None:
    """{"icd10"|"cpt"|"modifiers": {code: [[start, end], ...]}}: gold evidence spans, character
    offsets (Python string indices) into the note, each 0 <= start < end <= len(note). Errors name
    the system and the code's position, never the key itself (a malformed key could be any text)."""
    if v is None:
        return None
    if not isinstance(v, dict):
        raise InputError(f"must be an object, got {type_name(v)}", field="evidence", kind="wrong_type")
    out = {}
    for system, codes in v.items():
        if system not in EVIDENCE_SYSTEMS:
            raise InputError(f"unknown code system; allowed: {', '.join(EVIDENCE_SYSTEMS)}", field="evidence",
                             kind="invalid_record")
        where = f"evidence.{system}"
        if not isinstance(codes, dict):
            raise InputError(f"must be an object (code -> spans), got {type_name(codes)}", field=where,
                             kind="wrong_type")
        out[system] = {}
        for ci, (code, spans) in enumerate(codes.items()):
            if not isinstance(spans, list):
                raise InputError(f"code #{ci + 1}: spans must be a list, got {type_name(spans)}", field=where,
                                 kind="wrong_type")
            for si, sp in enumerate(spans):
                ok = (isinstance(sp, list) and len(sp) == 2
                      and all(isinstance(x, int) and not isinstance(x, bool) for x in sp))
                if not ok:
                    raise InputError(f"code #{ci + 1}, span {si}: must be [start, end] integers", field=where,
                                     kind="wrong_type")
                if not 0 <= sp[0] < sp[1] <= len(note):
                    raise InputError(f"code #{ci + 1}, span {si}: offsets lie outside the note "
                                     f"(need 0 <= start < end <= {len(note)})", field=where, kind="invalid_value")
            out[system][code] = [list(sp) for sp in spans]
    return out


@dataclass
class Case:
    id: str
    note: str
    claim: Claim
    date: str | None = None
    service: str | None = None
    style: str | None = None
    patient: dict | None = None
    rationale: str | None = None
    source: str | None = None
    extra: dict = field(default_factory=dict)  # unknown fields, kept as they came
    evidence: dict | None = None  # gold evidence spans per code (synthetic writers); _evidence()

    def to_dict(self) -> dict:
        d = {"id": self.id, "date": self.date, "service": self.service, "note": self.note,
             "claim": self.claim.to_dict()}
        for key in ("style", "patient", "rationale", "source", "evidence"):
            if getattr(self, key) is not None:
                d[key] = getattr(self, key)
        if self.extra:
            d["extra"] = dict(self.extra)
        return d

    @classmethod
    def from_dict(cls, d, allow_unknown_icd: bool | None = None) -> Case:
        if not isinstance(d, dict):
            raise InputError(f"record must be a JSON object, got {type_name(d)}", kind="malformed_record")
        for key in ("id", "note"):
            v = d.get(key)
            if v is None or (isinstance(v, str) and not v.strip()):
                raise InputError("missing or empty", field=key, kind=f"missing_{key}")
        cid = _typed(d, "id", (str, int), "id", None, "string (or integer)")
        note = _typed(d, "note", str, "note", None)
        if d.get("claim") is None:
            raise InputError("missing", field="claim", kind="missing_claim")
        opt = {k: _typed(d, k, str, k) for k in ("date", "service", "style", "rationale", "source")}
        if opt["date"] is not None and not _iso_date(opt["date"]):
            raise InputError("must be a date written YYYY-MM-DD", field="date", kind="bad_date")
        extra = _typed(d, "extra", dict, "extra", {}, "object")
        extra = {**extra, **{k: v for k, v in d.items() if k not in CASE_FIELDS}}
        return cls(id=str(cid), note=note,
                   claim=Claim.from_dict(d["claim"], allow_unknown_icd=allow_unknown_icd),
                   patient=_patient(d.get("patient")), extra=extra, evidence=_evidence(d.get("evidence"), note),
                   **opt)


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
    """The claim as the text the model learns to write (docs/design.md "Claim target text")."""
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
            raise InputError("unexpected line in the CPT section")
        mods = [] if m.group(2).strip() == "None" else [x.strip() for x in m.group(2).split(",")]
        providers[-1]["lines"].append({"cpt": m.group(1), "modifiers": mods, "description": m.group(3)})
    # Roles are not part of the target text: the first provider is taken as the surgeon.
    for i, p in enumerate(providers):
        p["role"] = "surgeon" if i == 0 else "assistant"
    return Claim.from_dict({"icd10": icd, "providers": providers})
