"""The exit-code contract, shared by every entry point (`opclaim`, `python -m train`,
`python -m infer`, and so every `accelerate launch` rank):

    0 done · 2 bad usage or bad input (InputError: file, line and field named) · 1 internal failure
    (plus 75 from training: stopped on a signal after a complete checkpoint; 130 interrupted)

An internal failure prints the exception's type and the code location only, never a traceback or
the exception's message: either can quote data, and data may be PHI. `--debug` (anywhere on the
command line) or OPCLAIM_DEBUG=1 prints the full traceback instead, for a developer on their own data.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path

from opclaim.errors import InputError

DEBUG_FLAG = "--debug"
_ROOT = Path(__file__).resolve().parent.parent


def take_debug_flag(argv: list[str]) -> tuple[list[str], bool]:
    """argv without --debug, and whether debugging is on (flag or OPCLAIM_DEBUG=1)."""
    argv = list(argv)
    flag = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    return argv, flag or os.environ.get("OPCLAIM_DEBUG", "") not in ("", "0")


def _where(exc: BaseException) -> str:
    """Innermost frame inside this repository (file:line), else the innermost frame's file name."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if Path(f.filename).resolve().is_relative_to(_ROOT)]
    f = (ours or frames or [None])[-1]
    if f is None:
        return "?"
    p = Path(f.filename).resolve()
    return f"{p.relative_to(_ROOT) if p.is_relative_to(_ROOT) else p.name}:{f.lineno}"


def call(prog: str, fn, *args, debug: bool = False) -> int:
    """Run fn(*args) under the contract; returns the exit code."""
    try:
        rc = fn(*args)
        return 0 if rc is None else int(rc)
    except InputError as e:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"{prog}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{prog}: interrupted\n")
        return 130
    except Exception as e:  # noqa: BLE001 - the exit-code contract: 1 on internal failure
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"{prog}: internal error: {type(e).__name__} at {_where(e)} (message withheld: it "
                         f"may quote data; rerun with {DEBUG_FLAG} or OPCLAIM_DEBUG=1 to see the traceback)\n")
        return 1
