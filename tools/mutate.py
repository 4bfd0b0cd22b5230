"""Mutation testing of one core module with mutmut, in a scratch copy of the repository.

    python tools/mutate.py eval/metrics.py --tests tests/test_metrics.py [--tests ...]
    python tools/mutate.py eval/metrics.py --results     # re-print the last run's results

Why a scratch copy: mutmut 3 reads its settings from the [mutmut] section of setup.cfg (or
[tool.mutmut] in pyproject.toml) in the folder it runs in, and writes a `mutants/` tree there.
Running it in a copy (default runs/mutate/<module>) keeps the repository's own setup.cfg and
worktree untouched, so other work and tests in the checkout are not disturbed.

Only the named module is mutated; only the named test files are run against each mutant (the
tests that cover the mutated function, as mutmut's first, un-mutated run records). Needs the
`mutate` extra (mutmut). Takes minutes per module on a laptop core: not part of `make test`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".git", ".venv", "runs", "mutants", ".mutmut-lib", "__pycache__", ".pytest_cache", ".ruff_cache",
        ".hypothesis", "node_modules"}


def copy_tree(dst: Path) -> None:
    """The repository's files (as in the worktree, uncommitted edits included), no build output."""
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(ROOT, dst, ignore=lambda d, names: [n for n in names if n in SKIP or n.endswith(".pyc")],
                    symlinks=True)


def write_config(dst: Path, module: str, tests: list[str]) -> None:
    package = module.split("/")[0]
    section = "\n".join([
        "", "[mutmut]",
        f"source_paths = {package}",
        f"only_mutate = {module}",
        # every top-level package the tests import must be in the copy mutmut runs in
        "also_copy =", *(f"    {p}" for p in sorted({"opclaim", "prompts", "eval", "infer", "train", "rag",
                                                      "tests", "pyproject.toml"} - {package})),
        "pytest_add_cli_args_test_selection =", *(f"    {t}" for t in tests),
        "pytest_add_cli_args = -p no:cacheprovider -q",
        "",
    ])
    cfg = dst / "setup.cfg"
    text = cfg.read_text(encoding="utf-8") if cfg.exists() else ""
    cfg.write_text(text + section, encoding="utf-8")


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("module", help="the file to mutate, relative to the repository root (e.g. eval/metrics.py)")
    p.add_argument("--tests", action="append", required=False, default=[],
                   help="test file (or node id) to run against each mutant; repeat for several")
    p.add_argument("--work", help="scratch folder (default runs/mutate/<module>)")
    p.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    p.add_argument("--results", action="store_true", help="print the last run's results, do not run")
    return p


def main(argv=None) -> int:
    p = make_parser()
    args = p.parse_args(argv)
    work = Path(args.work or ROOT / "runs" / "mutate" / args.module.replace("/", "_").removesuffix(".py"))
    env = dict(os.environ)
    # The mutated copy, not the checkout, must be imported: drop the checkout from PYTHONPATH.
    keep = [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x and Path(x).resolve() != ROOT]
    env["PYTHONPATH"] = os.pathsep.join(keep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    mutmut = [sys.executable, "-m", "mutmut"]
    if args.results:
        return subprocess.call([*mutmut, "results", "--all", "true"], cwd=work, env=env)
    if not args.tests:
        p.error("name the test files that cover the module with --tests")
    if not (ROOT / args.module).is_file():
        p.error(f"no such file: {args.module}")
    copy_tree(work)
    write_config(work, args.module, args.tests)
    rc = subprocess.call([*mutmut, "run", "--max-children", str(args.jobs)], cwd=work, env=env)
    subprocess.call([*mutmut, "results", "--all", "true"], cwd=work, env=env)
    return rc


if __name__ == "__main__":
    sys.exit(main())
