"""Reading and writing records. Errors name file, line and field; never note text.

Files that carry note text (cases, predictions, reports) are written owner-only (0600)
and atomically, so a partial file is never mistaken for a complete one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from opclaim.claim import Case
from opclaim.errors import InputError


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """Yield (line_number, object) for each non-blank line; InputError names the bad line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", file=path)
    with path.open("rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise InputError(f"bytes that are not UTF-8 at offset {e.start}", file=path, line=n) from None
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise InputError(f"malformed JSON ({e.msg}, column {e.colno})", file=path, line=n) from None
            if not isinstance(obj, dict):
                raise InputError("line is not a JSON object", file=path, line=n)
            yield n, obj


def read_json(path: str | Path, what: str = "JSON file"):
    """A small JSON document (config, manifest); InputError names the file when unreadable."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"unreadable {what} ({type(e).__name__}: {e})", file=path) from None


def read_cases(path: str | Path) -> list[Case]:
    """Strictly read a cases JSONL file: the first bad record stops with file, line and field.

    (`opclaim data validate` is the lenient path that collects every problem into rejects.)"""
    cases, seen = [], {}
    for n, obj in iter_jsonl(path):
        try:
            case = Case.from_dict(obj)
        except InputError as e:
            raise InputError(e.reason, file=path, line=n, field=e.field) from None
        if case.id in seen:
            raise InputError(f"duplicate id (first on line {seen[case.id]})", file=path, line=n, field="id")
        seen[case.id] = n
        cases.append(case)
    if not cases:
        raise InputError("no records", file=path)
    return cases


@contextlib.contextmanager
def atomic_write(path: str | Path, private: bool = False, mode: str = "w"):
    """Write to a temp file beside `path`, then rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, 0o600 if private else 0o644)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict], private: bool = False) -> int:
    n = 0
    with atomic_write(path, private=private) as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
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
