"""Ingest real EHR exports (JSONL, CSV, Parquet) into Case records: map columns, clean labels,
validate, and account for every record (kept, flagged or rejected with its reason).

Messages name file, line (or row) and field only: note text never appears in a reason (the
redaction rule of opclaim.errors). JSONL lines go through the one JSONL reader in opclaim.io, CSV
rows and Parquet rows through the same limits (docs/limits.md); types are strict (Case.from_dict).
Unknown fields are kept under `extra` and counted; an input without records is an InputError.

Patient age and sex come from a `patient` object or from `patient_age`/`age` and
`patient_sex`/`sex`/`gender` columns (Female/male/unknown/other... mapped to F/M/U, counted).

Flat exports (CSV/Parquet) carry the claim either as a JSON `claim` column or as `icd10` and
`cpt` columns (lists separated by `,` `;` or `|`; CPT items may carry modifiers, `47562-80`),
with an optional `provider` column for the billing surgeon's name.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from opclaim import io as oio
from opclaim.claim import CASE_FIELDS, Case
from opclaim.codes import CPT_PREFIX_RE, CPT_RE, ICD_RE, MODIFIERS
from opclaim.errors import CodeFormatError, InputError, require_file, show, type_name

FIELDS = ("id", "date", "service", "note", "claim", "icd10", "cpt", "provider", "style", "patient", "age", "sex",
          "rationale", "source")
# Export columns read as the patient's age and sex when no mapping names them (PLAN "Interfaces").
AGE_COLUMNS = ("patient_age", "age")
SEX_COLUMNS = ("patient_sex", "sex", "gender")
_SEX_VALUES = {"f": "F", "female": "F", "woman": "F", "m": "M", "male": "M", "man": "M",
               "u": "U", "unknown": "U", "other": "U", "not recorded": "U", "unspecified": "U", "x": "U",
               "o": "U", "nonbinary": "U", "non-binary": "U", "undisclosed": "U", "n/a": "U"}
DEFAULT_MAX_TOKENS = 3000
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_SPLIT_RE = re.compile(r"[,;|]")
_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%Y/%m/%d", "%m/%d/%y", "%d-%b-%Y", "%Y%m%d")


# ---------------------------------------------------------------- column mapping
def load_mapping(path: str | Path | None = None, pairs: list[str] | None = None) -> dict[str, str]:
    """canonical field -> source column, from a small YAML file and/or `field=column` flags."""
    mapping: dict[str, str] = {}
    if path:
        data = oio.read_yaml(path, "column mapping") or {}
        if not isinstance(data, dict):
            raise InputError(f"must be a mapping of field: column, got {type_name(data)}", file=path)
        for k, v in data.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise InputError(f"field and column must be strings, got {type_name(k)}: {type_name(v)} "
                                 "(quote numbers)", file=path, field=oio.key_label(k))
        mapping.update(data)
    for pair in pairs or []:
        key, sep, col = pair.partition("=")
        if not sep or not key.strip() or not col.strip():
            raise InputError("--map expects FIELD=COLUMN", field="--map")
        mapping[key.strip()] = col.strip()
    unknown = sorted(set(mapping) - set(FIELDS))
    if unknown:
        names = ", ".join(oio.key_label(k) for k in unknown)
        raise InputError(f"unknown field(s) in column mapping: {names}; known: {', '.join(FIELDS)}")
    return mapping


def _apply_mapping(raw: dict, mapping: dict[str, str]) -> dict:
    if not mapping:
        return raw
    out = dict(raw)
    for canon, col in mapping.items():
        if col in raw:
            out[canon] = raw[col]
            if col != canon:
                out.pop(col, None)
    return out


# ---------------------------------------------------------------- readers
@dataclass
class RawRecord:
    where: int  # line number (JSONL, CSV) or 1-based row (Parquet)
    data: dict | None
    problem: tuple[str, str | None, str] | None = None  # (reason, field, kind) when unreadable


def _bad_bytes_field(row: dict) -> str | None:
    for k, v in row.items():
        if isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v):
            return oio.key_label(k)
    return None


def _row_problem(row: dict) -> tuple[str, str | None, str] | None:
    """Undecodable bytes, then the io limits (string length, NUL, row size) for a flat row."""
    bad = _bad_bytes_field(row)
    if bad:
        return "bytes that are not UTF-8", bad, "non_utf8"
    size = sum(len(v) for v in row.values() if isinstance(v, str))
    if size > oio.MAX_RECORD_BYTES:
        return f"row of {size} characters, over the limit of {oio.MAX_RECORD_BYTES}", None, "over_limit"
    try:
        oio.check_values(row)
    except InputError as e:
        return e.reason, e.field, e.kind
    return None


def read_jsonl(path: Path):
    """The one JSONL reader (opclaim.io), lenient: every bad line becomes a problem record."""
    for n, obj, problem in oio.iter_jsonl_records(path):
        if problem is not None:
            yield RawRecord(n, None, (problem.reason, problem.field, problem.kind or "malformed_record"))
        else:
            yield RawRecord(n, obj)


def read_csv(path: Path):
    # surrogateescape keeps undecodable bytes visible per field instead of failing the file;
    # utf-8-sig drops a BOM. Streams: the file is never held in memory whole.
    csv.field_size_limit(oio.MAX_RECORD_BYTES + 1)
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as fh:
        reader = csv.reader(fh)
        try:
            header = next(reader, None)
        except csv.Error as e:
            raise InputError(f"unreadable CSV header ({e})", file=path, line=1) from None
        if not header or not any(h.strip() for h in header):
            raise InputError("CSV has no header row", file=path, line=1)
        if _bad_bytes_field({str(i): h for i, h in enumerate(header)}):
            raise InputError("CSV header has bytes that are not UTF-8", file=path, line=1)
        dups = sorted({h for h in header if header.count(h) > 1})
        if dups:
            raise InputError(f"duplicate column name(s) in the header: {', '.join(oio.key_label(h) for h in dups)}",
                             file=path, line=1, kind="duplicate_key")
        end = reader.line_num  # the header's last line
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                n, end = end + 1, reader.line_num
                if "field larger" in str(e):
                    yield RawRecord(n, None, (f"cell over the limit of {oio.MAX_RECORD_BYTES} characters", None,
                                              "over_limit"))
                else:
                    yield RawRecord(n, None, ("malformed CSV row", None, "malformed_record"))
                continue
            # Report the line a row starts on (quoted cells may span lines).
            n, end = end + 1, reader.line_num
            if not cells or (len(cells) == 1 and not cells[0].strip()):
                continue  # a blank line
            if len(cells) > len(header):
                yield RawRecord(n, None, ("row has more cells than the header", None, "malformed_record"))
                continue
            row = dict(zip(header, cells, strict=False))  # short rows: missing cells are absent
            problem = _row_problem(row)
            if problem:
                yield RawRecord(n, None, problem)
                continue
            yield RawRecord(n, row)


def read_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        cols = table.column_names
        if len(set(cols)) != len(cols):
            raise InputError("duplicate column names", file=path, kind="duplicate_key")
        data = {c: table.column(c).to_pylist() for c in cols}
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - any pyarrow failure means an unreadable file
        raise InputError(f"unreadable Parquet file ({type(e).__name__})", file=path) from None
    for i in range(table.num_rows):
        row = {}
        bad = None
        for c in cols:
            v = data[c][i]
            if isinstance(v, bytes):  # binary columns: decode, reporting bad bytes per field
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    bad = bad or oio.key_label(c)
            row[c] = v
        if bad:
            yield RawRecord(i + 1, None, ("bytes that are not UTF-8", bad, "non_utf8"))
            continue
        try:
            oio.check_values(row)
        except InputError as e:
            yield RawRecord(i + 1, None, (e.reason, e.field, e.kind))
            continue
        yield RawRecord(i + 1, row)


def detect_format(path: Path, fmt: str | None = None) -> str:
    if fmt:
        return fmt
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise InputError("unknown file type; use .jsonl, .csv or .parquet (or --format)", file=path)


def read_raw(path: str | Path, fmt: str | None = None):
    path = require_file(Path(path))
    kind = detect_format(path, fmt)
    return {"jsonl": read_jsonl, "csv": read_csv, "parquet": read_parquet}[kind](path), kind


# ---------------------------------------------------------------- clean-up rules
RULES = {
    "whitespace": "stripped surrounding or inner whitespace from a code",
    "case": "upper-cased a code or modifier",
    "icd_dot": "added the dot to an undotted ICD-10-CM code",
    "cpt_prefix": "removed a 'CPT'/'HCPCS' prefix",
    "cpt_modifier_split": "split 'CODE-MOD' into the code and its modifier",
    "duplicate_code": "removed a repeated ICD-10-CM code",
    "date_format": "rewrote the date as YYYY-MM-DD",
    "claim_from_columns": "built the claim from flat icd10/cpt columns",
    "cpt_number": "read a CPT code given as a JSON number as text",
    "modifiers_from_text": "split a modifier string ('80, 51') into a list",
    "patient_from_columns": "built patient {age, sex} from export columns",
    "age_from_text": "read an age written as text or a whole-number float",
    "sex_code": "mapped a sex/gender value to F, M or U",
}


def _clean_icd(code, changes: Counter) -> object:
    if not isinstance(code, str):
        return code
    s = code.strip()
    if s != code or " " in s:
        changes["whitespace"] += 1
        s = s.replace(" ", "")
    if s != s.upper():
        changes["case"] += 1
        s = s.upper()
    m = ICD_RE.match(s)
    if m and m.group(2) and "." not in s:
        changes["icd_dot"] += 1
        s = f"{m.group(1)}.{m.group(2)}"
    return s


def _trim_upper(value: str, changes: Counter) -> str:
    """Strip surrounding whitespace and upper-case, counting each kind of change."""
    s = value.strip()
    if s != value:
        changes["whitespace"] += 1
    if s != s.upper():
        changes["case"] += 1
        s = s.upper()
    return s


def _clean_cpt(code, mods: list, changes: Counter) -> tuple[object, list]:
    if isinstance(code, int) and not isinstance(code, bool) and 10000 <= code <= 99999:
        changes["cpt_number"] += 1
        code = str(code)
    if not isinstance(code, str):
        return code, mods
    s = _trim_upper(code, changes)
    stripped = CPT_PREFIX_RE.sub("", s)
    if stripped != s:
        changes["cpt_prefix"] += 1
        s = stripped
    if "-" in s:
        head, *tail = [x.strip() for x in s.split("-")]
        if CPT_RE.match(head) and tail and all(t for t in tail):
            changes["cpt_modifier_split"] += 1
            s = head
            mods = list(mods) + tail
    return s, mods


def _clean_mods(mods, changes: Counter) -> object:
    if isinstance(mods, str):
        changes["modifiers_from_text"] += 1
        mods = [m for m in re.split(r"[,\s]+", mods) if m]
    if not isinstance(mods, list):
        return mods
    out = []
    for m in mods:
        out.append(_trim_upper(m, changes) if isinstance(m, str) else m)
    return out


def _split_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, list):
        return value
    if hasattr(value, "tolist"):
        return list(value.tolist())
    if not isinstance(value, str):
        return [value]  # a number or object: Claim.from_dict rejects it with its type
    return [x for x in (p.strip() for p in _SPLIT_RE.split(value)) if x]


def clean_claim(claim, changes: Counter):
    """Normalise codes in place of a claim dict; count every change per rule."""
    if not isinstance(claim, dict):
        return claim
    icd = claim.get("icd10", [])
    if isinstance(icd, list):
        cleaned, seen = [], set()
        for c in icd:
            c2 = _clean_icd(c, changes)
            if isinstance(c2, str) and c2 in seen:
                changes["duplicate_code"] += 1
                continue
            seen.add(c2) if isinstance(c2, str) else None
            cleaned.append(c2)
        claim["icd10"] = cleaned
    for p in claim.get("providers") or []:
        if not isinstance(p, dict):
            continue
        for ln in p.get("lines") or []:
            if not isinstance(ln, dict):
                continue
            if "modifiers" in ln and ln["modifiers"] is None:
                continue  # null is not an empty list: Claim.from_dict rejects it
            mods = _clean_mods(ln.get("modifiers"), changes)
            if mods is not None and not isinstance(mods, list):
                continue  # a wrong type: Claim.from_dict rejects it, naming the types
            cpt, mods = _clean_cpt(ln.get("cpt", ""), mods or [], changes)
            ln["cpt"], ln["modifiers"] = cpt, mods
    return claim


def _claim_from_columns(rec: dict, changes: Counter):
    icd = _split_list(rec.get("icd10"))
    cpts = _split_list(rec.get("cpt"))
    if not icd and not cpts:
        return None
    changes["claim_from_columns"] += 1
    lines = [{"cpt": c, "modifiers": [], "description": ""} for c in cpts]
    name = rec.get("provider")
    name = (name.strip() or "Unknown") if isinstance(name, str) else ("Unknown" if name is None else name)
    return {"icd10": icd, "providers": [{"name": name, "role": "surgeon", "lines": lines}] if lines else []}


def clean_date(value, changes: Counter):
    """-> (iso date or None, error reason or None)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, (dt.date, dt.datetime)):
        return (value.date() if isinstance(value, dt.datetime) else value).isoformat(), None
    if not isinstance(value, str):
        return None, f"date must be a string, got {type_name(value)}"
    s = value.strip()
    for i, fmt in enumerate(_DATE_FORMATS):
        try:
            d = dt.datetime.strptime(s[:10] if i == 0 and len(s) > 10 and s[10] in "T " else s, fmt).date()
        except ValueError:
            continue
        if d.isoformat() != s:
            changes["date_format"] += 1
        return d.isoformat(), None
    return None, "unparseable date"


# ---------------------------------------------------------------- validation
@dataclass
class Problem:
    where: int
    field: str | None
    reason: str
    kind: str  # defect class
    id: str | None = None


@dataclass
class Report:
    file: str
    fmt: str
    read: int = 0
    kept: list[Case] = field(default_factory=list)
    rejected: list[tuple[Problem, dict | None]] = field(default_factory=list)
    flagged: list[tuple[Problem, str]] = field(default_factory=list)  # (problem, case id)
    changes: Counter = field(default_factory=Counter)
    unknown_fields: Counter = field(default_factory=Counter)  # field name -> records carrying it

    def defect_counts(self) -> Counter:
        return Counter(p.kind for p, _ in self.rejected) + Counter(p.kind for p, _ in self.flagged)

    def summary(self) -> dict:
        return {"file": self.file, "format": self.fmt, "records": self.read, "valid": len(self.kept),
                "rejected": len(self.rejected), "flagged": len(self.flagged),
                "defects": dict(sorted(self.defect_counts().items())),
                "cleanup": {k: self.changes[k] for k in RULES if self.changes[k]},
                "unknown_fields": dict(sorted(self.unknown_fields.items()))}


def _kind(reason: str, fld: str | None) -> str:
    """Defect class for problems that carry no kind of their own."""
    if "not UTF-8" in reason:
        return "non_utf8"
    if "JSON" in reason or "more cells" in reason:
        return "malformed_record"
    if fld in ("id", "note", "claim") and ("missing" in reason or "empty" in reason):
        return f"missing_{fld}"
    if "duplicate id" in reason:
        return "duplicate_id"
    if "date" in reason:
        return "bad_date"
    if "unknown modifier" in reason:
        return "unknown_modifier"
    if "malformed" in reason or (fld and (".icd10" in fld or ".cpt" in fld or "modifiers" in fld)):
        return "malformed_code"
    return "invalid_record"


def _age(value, changes: Counter):
    """An age cell -> int, or the value unchanged for Case.from_dict to reject by type."""
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,3}", value.strip()):
        changes["age_from_text"] += 1
        return int(value.strip())
    if isinstance(value, float) and value.is_integer() and 0 <= value <= 1000:
        changes["age_from_text"] += 1
        return int(value)
    return value


def _sex(value, changes: Counter):
    if isinstance(value, str) and value not in ("F", "M", "U"):
        code = _SEX_VALUES.get(value.strip().lower())
        if code is None:
            raise InputError("unrecognised value; expected F, M or U (or female, male, unknown, other)",
                             field="patient.sex", kind="invalid_value")
        changes["sex_code"] += 1
        return code
    return value


def _blank(v) -> bool:
    return v is None or (isinstance(v, str) and not v.strip())


def _patient(rec: dict, consumed: set, changes: Counter):
    """The patient object: a `patient` field as given (sex words mapped), or age/sex columns."""
    if isinstance(rec.get("patient"), dict):
        p = dict(rec["patient"])
        if "sex" in p:
            p["sex"] = _sex(p["sex"], changes)
        if "age" in p and isinstance(p["age"], str):
            p["age"] = _age(p["age"], changes)
        return p
    if rec.get("patient") is not None:
        return rec["patient"]  # a wrong type: rejected by Case.from_dict
    age_col = next((c for c in ("age", *AGE_COLUMNS) if c in rec), None)
    sex_col = next((c for c in ("sex", *SEX_COLUMNS) if c in rec), None)
    consumed.update(c for c in (age_col, sex_col) if c)
    p = {}
    if age_col and not _blank(rec[age_col]):
        p["age"] = _age(rec[age_col], changes)
    if sex_col and not _blank(rec[sex_col]):
        p["sex"] = _sex(rec[sex_col], changes)
    if p:
        changes["patient_from_columns"] += 1
    return p or None


def count_tokens(text: str, tokenizer=None) -> int:
    """A regex estimate (words and punctuation) unless a real tokenizer is given."""
    if tokenizer is not None:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])
    return len(_TOKEN_RE.findall(text))


def _check_modifiers(claim: dict, known: set[str]) -> tuple[str, str] | None:
    for pi, p in enumerate(claim.get("providers") or []):
        for li, ln in enumerate((p or {}).get("lines") or []):
            for mi, m in enumerate((ln or {}).get("modifiers") or []):
                if isinstance(m, str) and re.fullmatch(r"[0-9A-Z]{2}", m) and m not in known:
                    return (f"unknown modifier {show(m)}", f"claim.providers[{pi}].lines[{li}].modifiers[{mi}]",
                            "unknown_modifier")
    return None


def validate(path: str | Path, *, fmt: str | None = None, mapping: dict[str, str] | None = None,
             max_tokens: int = DEFAULT_MAX_TOKENS, tokenizer=None, modifiers: set[str] | None = None,
             allow_unknown_icd: bool | None = None, require_claim: bool = True) -> Report:
    """Read every record; keep, flag or reject each one. Never raises for a bad record.

    A kept record's claim bills at least one CPT line (a claim without one is rejected,
    `no_cpt_line`). With require_claim False (the service's queue), a record without any claim
    is kept with `claim` None; a claim that is given is validated in full.

    Raises InputError for a bad file (missing, a directory, no header) and for "no records"."""
    records, kind = read_raw(path, fmt)
    report = Report(str(path), kind)
    known_mods = set(modifiers or MODIFIERS)
    seen: dict[str, int] = {}
    for rr in records:
        report.read += 1
        if rr.data is None:
            reason, fld, pkind = rr.problem
            report.rejected.append((Problem(rr.where, fld, reason, pkind or _kind(reason, fld)), None))
            continue
        rec = _apply_mapping(rr.data, mapping or {})
        changes = Counter()

        def reject(reason, fld, kind=None, rec=rec, rr=rr):
            rid = rec.get("id")
            rid = str(rid) if isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid).strip() else None
            report.rejected.append((Problem(rr.where, fld, reason, kind or _kind(reason, fld), rid), rr.data))

        try:
            case, unknown = _record_to_case(rec, changes, allow_unknown_icd, require_claim)
        except CodeFormatError as e:
            reject(e.reason, e.field, e.kind)
            continue
        except InputError as e:
            reject(e.reason, e.field, e.kind)
            continue
        if case.claim is not None:
            bad_mod = _check_modifiers(case.claim.to_dict(), known_mods)
            if bad_mod:
                reject(*bad_mod)
                continue
            if not case.claim.cpt_set():  # empty providers, or providers without a line
                reject("no CPT line: a surgical claim bills at least one procedure", "claim.providers",
                       "no_cpt_line")
                continue
        if case.id in seen:
            reject(f"duplicate id (first on line {seen[case.id]})", "id", "duplicate_id")
            continue
        seen[case.id] = rr.where
        report.changes.update(changes)
        report.unknown_fields.update(oio.key_label(k) for k in unknown)
        n = count_tokens(case.note, tokenizer)
        if n > max_tokens:
            report.flagged.append((Problem(rr.where, "note", f"note is {n} tokens, over the limit of {max_tokens}",
                                           "over_token_limit", case.id), case.id))
        report.kept.append(case)
    if report.read == 0:
        raise InputError("no records", file=path, kind="no_records")
    return report


def _record_to_case(rec: dict, changes: Counter, allow_unknown_icd, require_claim: bool = True
                    ) -> tuple[Case, list[str]]:
    """One mapped raw record -> (Case, unknown field names); InputError names the field."""
    consumed = {"id", "note", "claim", "date", "service", "style", "rationale", "source", "patient", "extra"}
    claim = copy.deepcopy(rec.get("claim"))  # clean_claim edits in place; the reject keeps the original
    if isinstance(claim, str) and claim.strip():
        claim = oio.parse_json_text(claim, field="claim")
    if claim is None or (isinstance(claim, str) and not claim.strip()):
        claim = _claim_from_columns(rec, changes)
        consumed.update(("icd10", "cpt", "provider"))
    claim = clean_claim(claim, changes)
    date, date_err = clean_date(rec.get("date"), changes)
    if date_err:
        raise InputError(date_err, field="date", kind="bad_date")
    patient = _patient(rec, consumed, changes)
    obj = {"id": rec.get("id"), "note": rec.get("note"), "claim": claim, "date": date}
    for key in ("service", "style", "rationale", "source"):  # an empty cell is an absent value
        obj[key] = None if _blank(rec.get(key)) else rec.get(key)
    obj["patient"] = patient
    if isinstance(obj["id"], float) and obj["id"].is_integer():
        obj["id"] = int(obj["id"])
    no_claim = claim is None and not require_claim
    if no_claim:
        claim = {}  # a placeholder for Case.from_dict, dropped below
    elif isinstance(claim, dict) and not claim.get("icd10") and not claim.get("providers") and \
            not any(claim.get(k) is None and k in claim for k in ("icd10", "providers")):
        raise InputError("missing or empty", field="claim", kind="missing_claim")
    obj["claim"] = claim
    unknown = [k for k in rec if k not in consumed and k not in CASE_FIELDS]
    extra = rec.get("extra") if isinstance(rec.get("extra"), dict) else {}
    obj["extra"] = {**extra, **{k: rec[k] for k in unknown}} if unknown or extra else rec.get("extra")
    case = Case.from_dict(obj, allow_unknown_icd=allow_unknown_icd)
    if no_claim:
        case.claim = None
    return case, unknown


def reject_rows(report: Report) -> list[dict]:
    """Rows for the rejects file: where, field, reason, action; rejected records carry the
    original record (it holds note text, so the file is written owner-only)."""
    rows = []
    for p, rec in report.rejected:
        rows.append({"file": report.file, "line": p.where, "field": p.field, "defect": p.kind, "reason": p.reason,
                     "id": p.id, "action": "rejected", "record": rec})
    for p, cid in report.flagged:
        rows.append({"file": report.file, "line": p.where, "field": p.field, "defect": p.kind, "reason": p.reason,
                     "id": cid, "action": "flagged"})
    rows.sort(key=lambda r: r["line"])
    return rows

