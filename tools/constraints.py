"""Write constraints.txt: the installed versions of every package opclaim depends on.

Roots are setup.cfg's install_requires and the extras `make setup` installs (dev, serve, postgres,
mutate when present); their requirements are followed transitively (markers evaluated here) in the
current environment. opclaim itself is left out, and torch too (the Makefile's TORCH_SPEC pins it,
and a CUDA build installed first must be kept). Run after an upgrade that passed `make test`:
    python tools/constraints.py --out constraints.txt      (= make constraints)
"""

from __future__ import annotations

import argparse
import configparser
import importlib.metadata as md
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
EXTRAS = ("dev", "serve", "postgres", "mutate")
HEADER = """\
# The versions opclaim is tested with: every package it depends on (setup.cfg, with the extras
# dev, serve, postgres, mutate) and their dependencies, from the venv `make setup` built.
# `make setup` installs with `pip install -c constraints.txt`. torch is pinned by the Makefile's
# TORCH_SPEC instead (a CUDA build you installed first is kept), so it is not listed here.
# Regenerate after an upgrade that passed `make test`: `make constraints` (tools/constraints.py).
"""


def _lines(block: str) -> list[str]:
    return [x.strip() for x in block.splitlines() if x.strip() and not x.strip().startswith("#")]


def pinned() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    roots = [Requirement(r) for r in _lines(cfg["options"]["install_requires"])]
    for extra in EXTRAS:
        roots += [Requirement(r) for r in _lines(cfg["options.extras_require"][extra])]
    dists = {canonicalize_name(d.metadata["Name"]): d for d in md.distributions()}
    seen: set[tuple[str, frozenset]] = set()
    stack = [(r, frozenset(r.extras)) for r in roots]
    while stack:
        req, extras = stack.pop()
        name = canonicalize_name(req.name)
        if name not in dists or (name, extras) in seen:
            continue  # not installed here (an optional extra such as mutate)
        seen.add((name, extras))
        for spec in dists[name].requires or []:
            dep = Requirement(spec)
            if dep.marker is None or any(dep.marker.evaluate({"extra": e}) for e in (extras or {""})):
                stack.append((dep, frozenset(dep.extras)))
    skip = {"opclaim", "torch", "triton"}
    names = sorted({n for n, _ in seen if n not in skip and not n.startswith("nvidia-")})
    return [f"{dists[n].metadata['Name']}=={dists[n].version}" for n in names]


def make_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "constraints.txt"))
    return ap


def main(argv=None) -> int:
    args = make_parser().parse_args(argv)
    Path(args.out).write_text(HEADER + "\n".join(pinned()) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
