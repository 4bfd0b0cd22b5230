"""`python -m bench` runs every bench/bench_*.py; `python -m bench synth [args]` runs one.

Each benchmark's rows are collected into one table of name/baseline/value/ratio/unit/note.
A benchmark that fails is reported as a row and the others still run (exit 1 at the end).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import traceback

import opclaim  # noqa: F401  (offline environment first)
from bench import print_table


def available() -> list[str]:
    import bench

    return sorted(m.name[len("bench_"):] for m in pkgutil.iter_modules(bench.__path__) if m.name.startswith("bench_"))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\navailable: " + ", ".join(names))
        return 0
    if argv:
        if argv[0] not in names:
            sys.stderr.write(f"unknown benchmark {argv[0]!r}; available: {', '.join(names)}\n")
            return 2
        todo, extra = [argv[0]], argv[1:]
    else:
        todo, extra = names, []
    rows, failed = [], False
    for name in todo:
        try:
            mod = importlib.import_module(f"bench.bench_{name}")
            rows += mod.main(extra)
        except Exception as e:  # noqa: BLE001 - one broken benchmark must not hide the others
            failed = True
            traceback.print_exc()
            rows.append({"name": f"{name}: FAILED", "baseline": "", "value": "", "ratio": "", "unit": "",
                         "note": f"{type(e).__name__}: {str(e)[:120]}"})
    print()
    print_table(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
