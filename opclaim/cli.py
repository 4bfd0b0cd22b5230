"""The `opclaim` command. Each verb group lives in a small module with `register(subparsers)`;
heavy imports happen inside the verb, so `--help` is instant.

Exit codes: 0 success, 2 bad usage or bad input (file, line and field named), 1 internal failure.
"""

from __future__ import annotations

import argparse
import importlib
import sys

import opclaim  # noqa: F401  (sets the offline environment first)
from opclaim.errors import InputError

# Verb groups in --help order. A module that does not exist yet is skipped.
COMMAND_MODULES = [
    "opclaim.commands.data",
    "eval.cli",
    "rag.cli",
    "opclaim.commands.models",
    "train.cli",
    "infer.cli",
    "opclaim.commands.bundle",
]


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
    subs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    for name in COMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name in (name, name.rsplit(".", 1)[0]):
                continue
            raise
        mod.register(subs)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        rc = args.func(args)
        return 0 if rc is None else int(rc)
    except InputError as e:
        sys.stderr.write(f"opclaim {args.verb}: error: {e}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as e:  # noqa: BLE001 - the exit-code contract: 1 on internal failure
        # Type and a short message only: tracebacks can quote data, and data may be PHI.
        sys.stderr.write(f"opclaim {args.verb}: internal error: {type(e).__name__}: {str(e)[:300]}\n"
                         "(set OPCLAIM_DEBUG=1 for the traceback)\n")
        import os

        if os.environ.get("OPCLAIM_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
