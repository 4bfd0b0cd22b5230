"""`python -m infer` / `accelerate launch --num_processes N -m infer` with `opclaim infer`'s arguments."""

import argparse
import sys

import opclaim  # noqa: F401  (offline environment first)
from opclaim.errors import InputError


def entry(argv=None) -> int:
    from infer.cli import INFER_EXAMPLES, add_infer_arguments, main

    p = argparse.ArgumentParser(prog="python -m infer", description="Generate claims (see `opclaim infer`).",
                                epilog="examples:\n" + INFER_EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_infer_arguments(p)
    args = p.parse_args(argv)
    try:
        return main(args)
    except InputError as e:
        sys.stderr.write(f"infer: error: {e}\n")
        return 2


if __name__ == "__main__":
    sys.exit(entry())
