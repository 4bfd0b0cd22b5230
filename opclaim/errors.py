"""Errors the CLI turns into exit codes: InputError -> 2, anything else -> 1.

Messages name the file, line and field, never the note text (PHI). The one redaction rule
(docs/limits.md): a message names the field and the kind of problem, and shows a value only when
the value is a well-formed code-shaped token (`K8O.2O`, `47562`, `RT`). Anything else - free text
of any length or quoting, numbers that could be identifiers or ages - is described by its type
and size only. `show()` is how messages quote a value; `redact()` is the safety net applied to
every InputError message, replacing any quoted span that is not code-shaped.
"""

from __future__ import annotations

import re

# ICD-10-CM shape (letter, digit, 1-5 more; letter O accepted so that K8O.2O can be named),
# CPT/HCPCS shape, and a two-character modifier in capitals or digits.
_CODE_SHAPE = re.compile(r"[A-Za-z][0-9][0-9A-Za-z](?:\.?[0-9A-Za-z]{1,4})?|[0-9]{4}[0-9A-Za-z]|[A-Za-z][0-9]{4}"
                         r"|[0-9A-Z]{2}")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.S)


def is_code_shaped(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return False
    s = str(value)
    return len(s) <= 9 and _CODE_SHAPE.fullmatch(s) is not None


def type_name(value) -> str:
    """The JSON name of a value's type, for 'expected X, got Y' messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def show(value) -> str:
    """A value as a message may show it: quoted if code-shaped, else its type and size only."""
    if is_code_shaped(value):
        return f"'{value}'"
    if isinstance(value, str):
        return f"<text of {len(value)} characters>"
    if isinstance(value, (list, tuple, dict)):
        return f"<{type_name(value)} of {len(value)} items>"
    return f"<{type_name(value)}>"


def redact(message: str) -> str:
    """Replace every quoted span in `message` whose content is not code-shaped."""
    def sub(m):
        inner = m.group(0)[1:-1]
        return m.group(0) if is_code_shaped(inner) else f"<text of {len(inner)} characters>"

    return _QUOTED.sub(sub, str(message))


class InputError(Exception):
    """Bad usage or bad input; exit code 2."""

    def __init__(self, message: str, *, file=None, line=None, field=None, kind: str | None = None,
                 from_command_line: bool = False):
        # A message about a value typed on the command line (not read from a file) may echo it.
        message = str(message) if from_command_line else redact(message)
        self.file, self.line, self.field, self.kind = file, line, field, kind
        where = ":".join(str(x) for x in (file, line) if x is not None)
        parts = [p for p in (where, f"field '{field}'" if field else None) if p]
        super().__init__(f"{', '.join(parts)}: {message}" if parts else message)
        self.reason = message


class CodeFormatError(InputError, ValueError):
    """A code string that cannot be normalised."""


def require_file(path, what: str = "file"):
    """A readable regular file, or an InputError that says what is wrong (missing, a directory)."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        raise InputError(f"is a directory, not a {what}", file=p)
    if not p.exists():
        raise InputError(f"{what} not found", file=p)
    if not p.is_file():
        raise InputError(f"not a regular file (expected a {what})", file=p)
    if not _readable(p):
        raise InputError(f"cannot read the {what} (permission denied)", file=p)
    return p


def _readable(p) -> bool:
    try:
        with open(p, "rb"):
            return True
    except PermissionError:
        return False
