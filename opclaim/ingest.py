"""Ingest real EHR exports (JSONL, CSV, Parquet) into Case records: map columns, clean labels,
validate, and account for every record (kept, flagged or rejected with its reason).

Messages name file, line (or row) and field only: note text never appears in a reason.

Flat exports (CSV/Parquet) carry the claim either as a JSON `claim` column or as `icd10` and
`cpt` columns (lists separated by `,` `;` or `|`; CPT items may carry modifiers, `47562-80`),
with an optional `provider` column for the billing surgeon's name.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from opclaim.claim import Case
from opclaim.codes import CPT_PREFIX_RE, CPT_RE, ICD_RE, MODIFIERS
from opclaim.errors import CodeFormatError, InputError

FIELDS = ("id", "date", "service", "note", "claim", "icd10", "cpt", "provider", "style")
DEFAULT_MAX_TOKENS = 3000
_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_SPLIT_RE = re.compile(r"[,;|]")
_DATE_FORMATS = ("%Y-%m-%d", "%m/%d/%Y", "%Y/%m/%d", "%m/%d/%y", "%d-%b-%Y", "%Y%m%d")


# ---------------------------------------------------------------- column mapping
def load_mapping(path: str | Path | None = None, pairs: list[str] | None = None) -> dict[str, str]:
    """canonical field -> source column, from a small YAML file and/or `field=column` flags."""
    mapping: dict[str, str] = {}
    if path:
        import yaml

        p = Path(path)
        if not p.is_file():
            raise InputError("mapping file not found", file=p)
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise InputError(f"not valid YAML ({type(e).__name__})", file=p) from None
        if not isinstance(data, dict):
            raise InputError("must be a mapping of field: column", file=p)
        mapping.update({str(k): str(v) for k, v in data.items()})
    for pair in pairs or []:
        key, sep, col = pair.partition("=")
        if not sep or not key.strip() or not col.strip():
            raise InputError(f"--map expects FIELD=COLUMN, got {pair!r}")
        mapping[key.strip()] = col.strip()
    unknown = sorted(set(mapping) - set(FIELDS))
    if unknown:
        raise InputError(f"unknown field(s) in column mapping: {', '.join(unknown)}; known: {', '.join(FIELDS)}")
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
    problem: tuple[str, str | None] | None = None  # (reason, field) when unreadable


def _bad_bytes_field(row: dict) -> str | None:
    for k, v in row.items():
        if isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v):
            return k
    return None


def _bad_json_field(raw: bytes) -> str | None:
    """The top-level field holding undecodable bytes, when the line is otherwise valid JSON."""
    try:
        obj = json.loads(raw.decode("utf-8", errors="surrogateescape"))
    except json.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    return _bad_bytes_field({k: json.dumps(v, ensure_ascii=False) for k, v in obj.items()})


def read_jsonl(path: Path):
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield RawRecord(n, None, (f"bytes that are not UTF-8 at offset {e.start}", _bad_json_field(raw)))
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                yield RawRecord(n, None, (f"malformed JSON ({e.msg}, column {e.colno})", None))
                continue
            if not isinstance(obj, dict):
                yield RawRecord(n, None, ("line is not a JSON object", None))
                continue
            yield RawRecord(n, obj)


def read_csv(path: Path):
    # surrogateescape keeps undecodable bytes visible per field instead of failing the file.
    text = path.read_bytes().decode("utf-8", errors="surrogateescape")
    if text.startswith("\ufeff"):
        text = text[1:]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not reader.fieldnames:
        raise InputError("CSV has no header row", file=path, line=1)
    end = reader.line_num  # the header's last line
    for row in reader:
        # Report the line a row starts on (quoted cells may span lines).
        n, end = end + 1, reader.line_num
        if None in row:
            yield RawRecord(n, None, ("row has more cells than the header", None))
            continue
        bad = _bad_bytes_field(row)
        if bad:
            yield RawRecord(n, None, ("bytes that are not UTF-8", bad))
            continue
        yield RawRecord(n, {k: v for k, v in row.items() if v is not None})


def read_parquet(path: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - any pyarrow failure means an unreadable file
        raise InputError(f"unreadable Parquet file ({type(e).__name__})", file=path) from None
    cols = table.column_names
    data = {c: table.column(c).to_pylist() for c in cols}
    for i in range(table.num_rows):
        row = {}
        bad = None
        for c in cols:
            v = data[c][i]
            if isinstance(v, bytes):  # binary columns: decode, reporting bad bytes per field
                try:
                    v = v.decode("utf-8")
                except UnicodeDecodeError:
                    bad = bad or c
            row[c] = v
        if bad:
            yield RawRecord(i + 1, None, ("bytes that are not UTF-8", bad))
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
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=path)
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
    if not isinstance(code, (str, int)):
        return code, mods
    s = _trim_upper(str(code), changes)
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
    return [x for x in (p.strip() for p in _SPLIT_RE.split(str(value))) if x]


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
            mods = _clean_mods(ln.get("modifiers") or [], changes)
            cpt, mods = _clean_cpt(ln.get("cpt", ""), mods if isinstance(mods, list) else [], changes)
            ln["cpt"], ln["modifiers"] = cpt, mods
    return claim


def _claim_from_columns(rec: dict, changes: Counter):
    icd = _split_list(rec.get("icd10"))
    cpts = _split_list(rec.get("cpt"))
    if not icd and not cpts:
        return None
    changes["claim_from_columns"] += 1
    lines = [{"cpt": c, "modifiers": [], "description": ""} for c in cpts]
    name = str(rec.get("provider") or "").strip() or "Unknown"
    return {"icd10": icd, "providers": [{"name": name, "role": "surgeon", "lines": lines}] if lines else []}


def clean_date(value, changes: Counter):
    """-> (iso date or None, error reason or None)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, None
    if isinstance(value, (dt.date, dt.datetime)):
        return (value.date() if isinstance(value, dt.datetime) else value).isoformat(), None
    s = str(value).strip()
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

    def defect_counts(self) -> Counter:
        return Counter(p.kind for p, _ in self.rejected) + Counter(p.kind for p, _ in self.flagged)

    def summary(self) -> dict:
        return {"file": self.file, "format": self.fmt, "records": self.read, "valid": len(self.kept),
                "rejected": len(self.rejected), "flagged": len(self.flagged),
                "defects": dict(sorted(self.defect_counts().items())),
                "cleanup": {k: self.changes[k] for k in RULES if self.changes[k]}}


def _kind(reason: str, fld: str | None) -> str:
    if "not UTF-8" in reason:
        return "non_utf8"
    if "JSON" in reason or "JSON object" in reason or "more cells" in reason:
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


_QUOTED_RE = re.compile(r"'([^']{13,})'")


def _redact(reason: str) -> str:
    """Quote short code strings; anything longer may be free text (a mis-mapped note column)."""
    return _QUOTED_RE.sub(lambda m: f"<{len(m.group(1))} characters>", reason)


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
                    return f"unknown modifier {m!r}", f"claim.providers[{pi}].lines[{li}].modifiers[{mi}]"
    return None


def validate(path: str | Path, *, fmt: str | None = None, mapping: dict[str, str] | None = None,
             max_tokens: int = DEFAULT_MAX_TOKENS, tokenizer=None, modifiers: set[str] | None = None) -> Report:
    """Read every record; keep, flag or reject each one. Never raises for a bad record."""
    records, kind = read_raw(path, fmt)
    report = Report(str(path), kind)
    known_mods = set(modifiers or MODIFIERS)
    seen: dict[str, int] = {}
    for rr in records:
        report.read += 1
        if rr.data is None:
            reason, fld = rr.problem
            report.rejected.append((Problem(rr.where, fld, reason, _kind(reason, fld)), None))
            continue
        rec = _apply_mapping(rr.data, mapping or {})
        changes = Counter()

        def reject(reason, fld, rec=rec, rr=rr):
            reason = _redact(reason)
            rid = rec.get("id")
            rid = str(rid) if isinstance(rid, (str, int)) and str(rid).strip() else None
            report.rejected.append((Problem(rr.where, fld, reason, _kind(reason, fld), rid), rr.data))

        claim = rec.get("claim")
        if isinstance(claim, str) and claim.strip():
            try:
                claim = json.loads(claim)
            except json.JSONDecodeError as e:
                reject(f"malformed JSON in claim ({e.msg})", "claim")
                continue
        if claim is None or (isinstance(claim, str) and not claim.strip()):
            claim = _claim_from_columns(rec, changes)
        claim = clean_claim(claim, changes)
        date, date_err = clean_date(rec.get("date"), changes)
        if date_err:
            reject(date_err, "date")
            continue
        obj = {"id": rec.get("id"), "note": rec.get("note"), "claim": claim, "date": date,
               "service": rec.get("service") or None, "style": rec.get("style") or None}
        if isinstance(obj["id"], float) and obj["id"].is_integer():
            obj["id"] = int(obj["id"])
        if isinstance(claim, dict) and not claim.get("icd10") and not claim.get("providers"):
            reject("missing or empty", "claim")
            continue
        try:
            case = Case.from_dict(obj)
        except CodeFormatError as e:
            reject(e.reason, e.field)
            continue
        except InputError as e:
            reject(e.reason, e.field)
            continue
        bad_mod = _check_modifiers(claim, known_mods)
        if bad_mod:
            reject(*bad_mod)
            continue
        if case.id in seen:
            reject(f"duplicate id (first on line {seen[case.id]})", "id")
            continue
        seen[case.id] = rr.where
        report.changes.update(changes)
        n = count_tokens(case.note, tokenizer)
        if n > max_tokens:
            report.flagged.append((Problem(rr.where, "note", f"note is {n} tokens, over the limit of {max_tokens}",
                                           "over_token_limit", case.id), case.id))
        report.kept.append(case)
    return report


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

