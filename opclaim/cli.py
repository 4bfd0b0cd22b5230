"""The `opclaim` command. Each verb group lives in a small module with `register(subparsers)`;
heavy imports happen inside the verb, so `--help` is instant.

Exit codes (opclaim/exits.py, shared with `python -m train` and `python -m infer`): 0 success,
2 bad usage or bad input (file, line and field named), 1 internal failure (no traceback unless
--debug or OPCLAIM_DEBUG=1). A verb module that fails to import is an internal failure that names
the module: a broken install never loses verbs silently.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import opclaim  # noqa: F401  (sets the offline environment first)
from opclaim.exits import DEBUG_FLAG, call, take_debug_flag

# Verb groups in --help order.
COMMAND_MODULES = [
    "opclaim.commands.data",
    "eval.cli",
    "rag.cli",
    "opclaim.commands.models",
    "opclaim.commands.train",
    "opclaim.commands.plan_memory",
    "opclaim.commands.doctor",
    "infer.cli",
    "opclaim.commands.bundle",
    "opclaim.commands.serve",
    "opclaim.commands.calibrate",
    "opclaim.commands.recipes",
]


class VerbImportError(RuntimeError):
    """A verb module that cannot be imported: the install is broken."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors exit 2, as argparse does, with our prefix
        self.print_usage(sys.stderr)
        sys.stderr.write(f"opclaim: error: {message}\n")
        sys.exit(2)


def verb(subparsers, name: str, help: str, examples: str, func):
    """Add a verb with its examples shown in --help."""
    p = subparsers.add_parser(name, help=help, description=help,
                              epilog="examples:\n" + "\n".join(f"  {e}" for e in examples.strip().splitlines()),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="opclaim", description="Operative note -> billing claim: data, training, "
                     "inference and coder-grade evaluation, offline.",
                     epilog="examples:\n  opclaim data synth --n 100 --seed 0 --style dictation --out cases.jsonl\n"
                     "  opclaim models tiny-phi3 --out models/tiny\n  opclaim <verb> --help",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"opclaim {opclaim.__version__}")
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="show the traceback of an internal error (also OPCLAIM_DEBUG=1); it may quote data")
    subs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ImportError as e:
            raise VerbImportError(f"verb module {name} failed to import ({type(e).__name__}: {e}); "
                                  "the installation is broken (reinstall: make setup)") from e
        mod.register(subs)
    return parser


def main(argv=None) -> int:
    argv, debug = take_debug_flag(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser()
    except VerbImportError as e:
        sys.stderr.write(f"opclaim: internal error: {e}\n")
        return 1
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return call(f"opclaim {args.verb}", args.func, args, debug=debug)


if __name__ == "__main__":
    sys.exit(main())
