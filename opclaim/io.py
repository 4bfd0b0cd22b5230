"""Reading and writing records. Errors name file, line and field; never note text.

Every user-supplied JSON/JSONL/YAML document goes through `parse_json_text` / `read_json` /
`read_yaml` here, which enforce the limits of docs/limits.md and turn anything malformed into an
InputError (exit 2) with a `kind`, never a crash: record size, nesting depth, integer digits,
string length, duplicate keys, lone surrogates, NUL characters, a BOM on the first line.

Files that carry note text (cases, predictions, reports) are written owner-only (0600)
and atomically, so a partial file is never mistaken for a complete one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from opclaim.claim import Case
from opclaim.errors import InputError, require_file

# ---------------------------------------------------------------- limits (docs/limits.md)
MAX_RECORD_BYTES = 2 * 1024 * 1024  # one JSONL line or CSV row
MAX_DOCUMENT_BYTES = 32 * 1024 * 1024  # one JSON/YAML config or manifest file
MAX_DEPTH = 64  # nested lists/objects; a case record needs 7
MAX_INT_DIGITS = 30  # longer integers are identifiers gone wrong, not numbers
MAX_NUMBER_CHARS = 100  # the text of one JSON number
MAX_STRING_CHARS = 1_000_000  # one string value (a long op note is ~50,000)

_BOM = b"\xef\xbb\xbf"
_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
_BAD_CHARS = re.compile("[\ud800-\udfff\x00]")
_KEY_SHAPE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")  # no spaces: free text is not a column name


def _problem(reason: str, kind: str, field: str | None = None) -> InputError:
    return InputError(reason, field=field, kind=kind)


def key_label(key) -> str:
    """A JSON key as a field name in a message: column-like names as they are, others redacted."""
    return key if isinstance(key, str) and _KEY_SHAPE.fullmatch(key) else f"<key of {len(str(key))} characters>"


def _check_depth(text: str) -> None:
    depth = 0
    for m in _TOKENS.finditer(text):
        c = m.group(0)
        if c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise _problem(f"nesting deeper than the limit of {MAX_DEPTH} levels", "over_limit")
        elif c in "]}":
            depth -= 1


def _pairs(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise _problem("duplicate key in one object (which value is meant is ambiguous)", "duplicate_key",
                           key_label(k))
        out[k] = v
    return out


def _int(s: str) -> int:
    if len(s.lstrip("-")) > MAX_INT_DIGITS:
        raise _problem(f"integer of {len(s.lstrip('-'))} digits, over the limit of {MAX_INT_DIGITS}", "over_limit")
    return int(s)


def _float(s: str) -> float:
    if len(s) > MAX_NUMBER_CHARS:
        raise _problem(f"number of {len(s)} characters, over the limit of {MAX_NUMBER_CHARS}", "over_limit")
    x = float(s)
    if not math.isfinite(x):
        raise _problem("number out of range", "malformed_record")
    return x


def _constant(s: str):
    raise _problem(f"{s} is not valid JSON", "malformed_record")


def _join(path: str | None, part: str) -> str:
    return f"{path}{part}" if part.startswith("[") else (f"{path}.{part}" if path else part)


def check_values(obj, path: str | None = None, depth: int = 0) -> None:
    """Strings within limits and encodable (no lone surrogates, no NUL); depth within the limit."""
    if depth > MAX_DEPTH:
        raise _problem(f"nesting deeper than the limit of {MAX_DEPTH} levels", "over_limit", path)
    if isinstance(obj, int) and not isinstance(obj, bool) and abs(obj) >= 10 ** MAX_INT_DIGITS:
        raise _problem(f"integer over the limit of {MAX_INT_DIGITS} digits", "over_limit", path)
    if isinstance(obj, str):
        if len(obj) > MAX_STRING_CHARS:
            raise _problem(f"string of {len(obj)} characters, over the limit of {MAX_STRING_CHARS}",
                           "over_limit", path)
        m = _BAD_CHARS.search(obj)
        if m:
            what = "a NUL character" if m.group(0) == "\x00" else "a lone surrogate escape (\\ud800-\\udfff)"
            raise _problem(f"text contains {what}", "bad_text", path)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            check_values(k, path, depth + 1)
            check_values(v, _join(path, key_label(k)), depth + 1)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            check_values(v, _join(path, f"[{i}]"), depth + 1)


_LONG_NUMBER = re.compile(r'"([^"\\]{1,64})"\s*:\s*-?\d{' + str(MAX_INT_DIGITS + 1) + "}")


def _number_key(text: str, e: InputError) -> str | None:
    """The key of an over-long integer (the parse hook does not see it), when it has one."""
    if e.kind != "over_limit" or "integer" not in e.reason:
        return None
    m = _LONG_NUMBER.search(text)
    return key_label(m.group(1)) if m else None


def parse_json_text(text: str, field: str | None = None):
    """One JSON value under the limits; InputError(kind=...) naming `field` (a prefix) otherwise."""
    try:
        if text.count("[") + text.count("{") > MAX_DEPTH:
            _check_depth(text)
        obj = json.loads(text, object_pairs_hook=_pairs, parse_int=_int, parse_float=_float,
                         parse_constant=_constant)
        check_values(obj)
    except InputError as e:
        inner = e.field or _number_key(text, e)
        fld = _join(field, inner) if field and inner else (inner or field)
        raise InputError(e.reason, field=fld, kind=e.kind) from None
    except json.JSONDecodeError as e:
        raise InputError(f"malformed JSON ({e.msg}, column {e.colno})", field=field, kind="malformed_record") from None
    except (RecursionError, MemoryError):
        raise InputError(f"nesting deeper than the limit of {MAX_DEPTH} levels", field=field,
                         kind="over_limit") from None
    except ValueError:
        raise InputError("malformed JSON (a number out of range)", field=field, kind="malformed_record") from None
    return obj


def _bad_bytes_field(raw: bytes) -> str | None:
    """The top-level field holding undecodable bytes, when the line is otherwise valid JSON."""
    try:
        obj = json.loads(raw.decode("utf-8", errors="surrogateescape"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    for k, v in obj.items():
        if any("\udc80" <= ch <= "\udcff" for ch in json.dumps(v, ensure_ascii=False)):
            return key_label(k)
    return None


def parse_record(raw: bytes) -> dict:
    """One JSONL line -> a dict, or InputError(kind=...) with the field when one is known."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"bytes that are not UTF-8 at offset {e.start}", field=_bad_bytes_field(raw),
                         kind="non_utf8") from None
    obj = parse_json_text(text)
    if not isinstance(obj, dict):
        raise InputError("line is not a JSON object", kind="malformed_record")
    return obj


def _lines(fh) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, bytes or None when over MAX_RECORD_BYTES, size); never holds more than the limit."""
    n = 0
    while True:
        raw = fh.readline(MAX_RECORD_BYTES + 1)
        if not raw:
            return
        n += 1
        if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
            size = len(raw)
            while raw and not raw.endswith(b"\n"):  # skip the rest of the line
                raw = fh.readline(1 << 20)
                size += len(raw)
            yield n, None, size
        else:
            yield n, raw, len(raw)


def iter_jsonl_records(path: str | Path) -> Iterator[tuple[int, dict | None, InputError | None]]:
    """(line, object, None) or (line, None, problem) for each non-blank line: the lenient reader."""
    path = require_file(path)
    with path.open("rb") as fh:
        for n, raw, size in _lines(fh):
            if raw is None:
                yield n, None, InputError(f"record of {size} bytes, over the limit of {MAX_RECORD_BYTES}",
                                          kind="over_limit")
                continue
            if n == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM):]
            if not raw.strip():
                continue
            try:
                yield n, parse_record(raw), None
            except InputError as e:
                yield n, None, e


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, object) for each non-blank line; InputError names the bad line."""
    for n, obj, problem in iter_jsonl_records(path):
        if problem is not None:
            raise InputError(problem.reason, file=path, line=n, field=problem.field, kind=problem.kind)
        yield n, obj


def _read_document(path, what: str) -> tuple[Path, str]:
    path = require_file(path, what)
    size = path.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise InputError(f"{what} of {size} bytes, over the limit of {MAX_DOCUMENT_BYTES}", file=path,
                         kind="over_limit")
    raw = path.read_bytes()
    try:
        return path, raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as e:
        raise InputError(f"{what} has bytes that are not UTF-8 at offset {e.start}", file=path,
                         kind="non_utf8") from None


def read_json(path: str | Path, what: str = "JSON file"):
    """A JSON document (config, manifest) under the limits; InputError names file and field."""
    path, text = _read_document(path, what)
    try:
        return parse_json_text(text)
    except InputError as e:
        raise InputError(f"unreadable {what}: {e.reason}", file=path, field=e.field, kind=e.kind) from None


def _yaml_loader():
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that rejects duplicate keys and aliases (shared nodes expand without bound)."""

        def compose_node(self, parent, index):
            if self.check_event(yaml.AliasEvent):
                ev = self.peek_event()
                raise InputError(f"YAML aliases are not supported (line {ev.start_mark.line + 1})",
                                 kind="malformed_record")
            return super().compose_node(parent, index)

        def construct_mapping(self, node, deep=False):
            seen = set()
            for k, _ in node.value:
                key = self.construct_object(k, deep=deep)
                try:
                    dup = key in seen
                    seen.add(key)
                except TypeError:
                    raise InputError(f"a key that is a list or mapping (line {k.start_mark.line + 1})",
                                     kind="malformed_record") from None
                if dup:
                    raise InputError(f"duplicate key (line {k.start_mark.line + 1})", field=key_label(key),
                                     kind="duplicate_key")
            return super().construct_mapping(node, deep=deep)

    return yaml, Loader


def parse_yaml_text(text: str):
    """One YAML document under the limits (duplicate keys, aliases, depth, integer digits)."""
    yaml, loader = _yaml_loader()
    try:
        obj = yaml.load(text, Loader=loader)  # noqa: S506 - a SafeLoader subclass
        check_values(obj)
    except InputError:
        raise
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"not valid YAML ({getattr(e, 'problem', None) or type(e).__name__}{where})",
                         kind="malformed_record") from None
    except (RecursionError, MemoryError):
        raise InputError(f"nesting deeper than the limit of {MAX_DEPTH} levels", kind="over_limit") from None
    except (ValueError, TypeError, OverflowError) as e:
        if "digits" in str(e):
            raise InputError(f"integer over the limit of {MAX_INT_DIGITS} digits", kind="over_limit") from None
        raise InputError(f"not valid YAML ({type(e).__name__})", kind="malformed_record") from None
    return obj


def read_yaml(path: str | Path, what: str = "YAML file"):
    """A YAML document (column mapping, config) under the limits; InputError names file and field."""
    path, text = _read_document(path, what)
    try:
        return parse_yaml_text(text)
    except InputError as e:
        raise InputError(f"unreadable {what}: {e.reason}", file=path, field=e.field, kind=e.kind) from None


def read_config(path: str | Path, what: str = "config"):
    """JSON or YAML by suffix (.json -> JSON, anything else -> YAML, a superset)."""
    return read_json(path, what) if str(path).lower().endswith(".json") else read_yaml(path, what)


def read_cases(path: str | Path, allow_unknown_icd: bool | None = None) -> list[Case]:
    """Strictly read a cases JSONL file: the first bad record stops with file, line and field.

    (`opclaim data validate` is the lenient path that collects every problem into rejects.)"""
    cases, seen = [], {}
    for n, obj in iter_jsonl(path):
        try:
            case = Case.from_dict(obj, allow_unknown_icd=allow_unknown_icd)
        except InputError as e:
            raise InputError(e.reason, file=path, line=n, field=e.field, kind=e.kind) from None
        if case.id in seen:
            raise InputError(f"duplicate id (first on line {seen[case.id]})", file=path, line=n, field="id",
                             kind="duplicate_id")
        seen[case.id] = n
        cases.append(case)
    if not cases:
        raise InputError("no records", file=path, kind="no_records")
    return cases


@contextlib.contextmanager
def atomic_write(path: str | Path, private: bool = False, mode: str = "w"):
    """Write to a temp file beside `path`, then rename: readers never see a partial file."""
    path = Path(path)
    if path.is_dir():
        raise InputError("is a directory, not a file to write", file=path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except (PermissionError, FileExistsError, NotADirectoryError) as e:
        raise InputError(f"cannot write here ({type(e).__name__})", file=path) from None
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def json_line(row) -> str:
    """A JSONL line; text that cannot be UTF-8 (lone surrogates) is written as \\u escapes."""
    line = json.dumps(row, ensure_ascii=False, default=str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        line = json.dumps(row, ensure_ascii=True, default=str)
    return line + "\n"


def write_jsonl(path: str | Path, rows: Iterable[dict], private: bool = False) -> int:
    n = 0
    with atomic_write(path, private=private) as fh:
        for row in rows:
            fh.write(json_line(row))
            n += 1
    return n


def write_cases(path: str | Path, cases: Iterable[Case]) -> int:
    """Cases carry note text: owner-only."""
    return write_jsonl(path, (c.to_dict() for c in cases), private=True)


def open_private_append(path: str | Path):
    """Append-mode handle for streaming outputs (predictions) with mode 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")
