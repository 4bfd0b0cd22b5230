"""Synthetic corpus benchmark: time to generate 10,000 cases per style against the 30 s goal.

    python -m bench.bench_synth              # 10,000 cases per style
    python -m bench.bench_synth --n 100000   # larger corpora

Rows: baseline = the goal in seconds (scaled to --n), value = measured seconds,
ratio = goal / measured (above 1 means faster than the goal).
"""

from __future__ import annotations

import argparse
import statistics
import time

import opclaim  # noqa: F401  (offline environment first)

GOAL_S_PER_10K = 30.0


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="report the median of this many runs")
    args = ap.parse_args(argv)

    from opclaim.synth import generate_cases

    goal = GOAL_S_PER_10K * args.n / 10_000
    rows = []
    for style in ("dictation", "terse"):
        for length in ("real", "short"):
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                cases = generate_cases(args.n, seed=args.seed, style=style, length=length)
                times.append(time.perf_counter() - t0)
            value = statistics.median(times)
            rows.append({"name": f"synth {args.n} cases, {style}, {length}", "baseline": round(goal, 1),
                         "value": round(value, 2), "ratio": round(goal / value, 1), "unit": "s",
                         "note": f"goal {goal:.0f} s; median of {args.repeats}; {len(cases)} cases"})
    return rows


if __name__ == "__main__":
    from bench import print_table

    print_table(main())
