"""`python -m infer` / `accelerate launch --num_processes N -m infer` with `opclaim infer`'s arguments.
Same exit codes and error handling as `opclaim` (opclaim/exits.py)."""

import argparse
import sys

import opclaim  # noqa: F401  (offline environment first)
from opclaim.exits import DEBUG_FLAG, call, take_debug_flag


def entry(argv=None) -> int:
    from infer.cli import INFER_EXAMPLES, add_infer_arguments, main

    argv, debug = take_debug_flag(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(prog="python -m infer", description="Generate claims (see `opclaim infer`).",
                                epilog="examples:\n" + INFER_EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_infer_arguments(p)
    p.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of an internal error")
    args = p.parse_args(argv)
    return call("infer", main, args, debug=debug)


if __name__ == "__main__":
    sys.exit(entry())
