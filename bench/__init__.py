"""Benchmarks. Each `bench/bench_<name>.py` has `main(argv=None)` returning rows
{"name", "baseline", "value", "ratio", "unit", "note"}; `python -m bench` runs them all and
prints one table, `python -m bench <name> [args]` runs one."""

from __future__ import annotations

COLUMNS = ("name", "baseline", "value", "ratio", "unit", "note")


def print_table(rows: list[dict], file=None) -> None:
    import sys

    out = file or sys.stdout
    cells = [[str(r.get(c, "")) for c in COLUMNS] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(COLUMNS)]
    widths[-1] = len(COLUMNS[-1])  # the note column is not padded
    line = "  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True))
    print(line.rstrip(), file=out)
    print("-" * len(line.rstrip()), file=out)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)
    out.flush()
