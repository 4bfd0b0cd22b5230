"""Errors the CLI turns into exit codes: InputError -> 2, anything else -> 1.

Messages name the file, line and field, never the note text (PHI).
"""


class InputError(Exception):
    """Bad usage or bad input; exit code 2."""

    def __init__(self, message: str, *, file=None, line=None, field=None):
        self.file, self.line, self.field = file, line, field
        where = ":".join(str(x) for x in (file, line) if x is not None)
        parts = [p for p in (where, f"field '{field}'" if field else None) if p]
        super().__init__(f"{', '.join(parts)}: {message}" if parts else message)
        self.reason = message


class CodeFormatError(InputError, ValueError):
    """A code string that cannot be normalised."""
