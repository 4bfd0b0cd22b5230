"""Mutation testing of one core module with mutmut, in a scratch copy of the repository.

    python tools/mutate.py eval/metrics.py --tests tests/metrics/test_metrics.py [--tests ...]
    python tools/mutate.py eval/metrics.py               # the module's tests from CORE below
    python tools/mutate.py --core                        # every core module in turn (hours)
    python tools/mutate.py eval/metrics.py --results     # re-print the last run's results
    python tools/mutate.py eval/metrics.py --recheck --tests tests/metrics/test_metrics_block.py

`--recheck` runs the named test files (copied from the checkout) against every mutant the last
run left alive, one pytest process per mutant in mutmut's own `mutants/` tree (the trampolines
pick the mutant from MUTANT_UNDER_TEST at call time), and keeps the verdicts in
`<work>/recheck.json`. Tests are only ever added, so a mutant killed before stays killed; this is
minutes where a full re-run (mutmut resets every result when the test selection changes) is hours.

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
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SKIP = {".git", ".venv", "runs", "mutants", ".mutmut-lib", "__pycache__", ".pytest_cache", ".ruff_cache",
        ".hypothesis", "node_modules"}

# The core modules and the test files run against their mutants (docs/records/mutation.md has the scores).
# pytest options go in as `--tests=-m` style items; "-m", "not slow" leaves out the full-ICD compile.
CORE = {
    "eval/metrics.py": ["tests/metrics/test_metrics.py", "tests/metrics/test_metrics_block.py"],
    "eval/extract.py": ["tests/extract/test_extract.py", "tests/metrics/test_metrics.py", "tests/extract/test_extract_cases.py"],
    "infer/decode.py": ["tests/decode/test_infer_decode.py", "tests/test_infer_sharp.py", "tests/decode/test_decode_loop.py"],
    "infer/constrain.py": ["tests/constrain/test_constrain.py", "tests/constrain/test_constrain_cpt.py", "tests/constrain/test_grammar_generic.py",
                           "tests/constrain/test_constrain_code_lists.py", "-m", "not slow"],
    "opclaim/bundle.py": ["tests/bundle/test_bundle.py", "tests/bundle/test_bundle_manifest.py", "tests/bundle/test_bundle_model_folders.py"],
    "opclaim/ingest.py": ["tests/ingest/test_data_validate.py", "tests/test_codes.py", "tests/ingest/test_ingest_reasons.py",
                          "tests/ingest/test_ingest_cleanup.py"],
    "train/checkpoint.py": ["tests/checkpoint/test_checkpoint.py", "tests/checkpoint/test_checkpoint_reasons.py"],
}


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
    p.add_argument("module", nargs="?", help="the file to mutate, relative to the repository root (e.g. eval/metrics.py)")
    p.add_argument("--core", action="store_true", help="every module in CORE, one after another, with its tests")
    p.add_argument("--tests", action="append", required=False, default=[],
                   help="test file (or node id) to run against each mutant; repeat for several")
    p.add_argument("--work", help="scratch folder (default runs/mutate/<module>)")
    p.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    p.add_argument("--results", action="store_true", help="print the last run's results, do not run")
    p.add_argument("--recheck", action="store_true",
                   help="run --tests against the last run's survivors only (see the docstring)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per mutant with --recheck")
    p.add_argument("--only", default="", help="with --recheck: only survivors whose name matches this regex")
    return p


def results(work: Path, env: dict) -> dict[str, str]:
    """{mutant: status} from `mutmut results --all true`, with --recheck's kills applied."""
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], cwd=work, env=env,
                         capture_output=True, text=True, check=True).stdout
    rc = work / "recheck.json"
    return merge_results(out, json.loads(rc.read_text()) if rc.exists() else {})


def merge_results(mutmut_out: str, rechecked: dict[str, str]) -> dict[str, str]:
    """mutmut's `name: status` lines, with a mutant a later --recheck killed counted as killed."""
    status = dict(m.groups() for m in re.finditer(r"^\s*(\S+): (.+?)\s*$", mutmut_out, re.M))
    for name, verdict in rechecked.items():
        if verdict == "killed" and status.get(name) in ("survived", "no tests"):
            status[name] = "killed (recheck)"
    return status


def summary(status: dict[str, str]) -> str:
    counts = {}
    for v in status.values():
        k = "killed" if v.startswith("killed") else v
        counts[k] = counts.get(k, 0) + 1
    n = len(status)
    parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return f"{n} mutants: {parts}; score {100 * counts.get('killed', 0) / max(1, n):.1f}% (killed / all)"


def recheck(work: Path, tests: list[str], env: dict, jobs: int, timeout: float, only: str = "") -> dict[str, str]:
    from concurrent.futures import ThreadPoolExecutor

    for t in {t.split("::")[0] for t in tests if t.endswith(".py") or ".py::" in t}:
        shutil.copy2(ROOT / t, work / "mutants" / t)
    alive = [k for k, v in results(work, env).items() if v in ("survived", "no tests") and re.search(only, k)]
    rc_file = work / "recheck.json"
    verdicts = json.loads(rc_file.read_text()) if rc_file.exists() else {}

    def one(name: str) -> str:
        e = {**env, "MUTANT_UNDER_TEST": name}
        try:
            r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                               cwd=work / "mutants", env=e, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "timeout"
        return {0: "survived", 1: "killed"}.get(r.returncode, f"error (pytest exit {r.returncode})")

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for name, verdict in zip(alive, pool.map(one, alive), strict=True):
            print(f"{name}: {verdict}", flush=True)
            if verdict == "killed" or name not in verdicts:
                verdicts[name] = verdict
            rc_file.write_text(json.dumps(verdicts, indent=1, sort_keys=True))
    return verdicts


def main(argv=None) -> int:
    p = make_parser()
    args = p.parse_args(argv)
    if args.core:
        rcs = [main([m, *(f"--tests={t}" for t in tests), "--jobs", str(args.jobs)])
               for m, tests in CORE.items()]
        return max(rcs)
    if not args.module:
        p.error("name a module, or --core")
    if not args.tests and not args.recheck and args.module in CORE:
        args.tests = CORE[args.module]
    work = Path(args.work or ROOT / "runs" / "mutate" / args.module.replace("/", "_").removesuffix(".py"))
    env = dict(os.environ)
    # The mutated copy, not the checkout, must be imported: drop the checkout from PYTHONPATH.
    keep = [x for x in env.get("PYTHONPATH", "").split(os.pathsep) if x and Path(x).resolve() != ROOT]
    env["PYTHONPATH"] = os.pathsep.join(keep)
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    mutmut = [sys.executable, "-m", "mutmut"]
    if args.results:
        status = results(work, env)
        for name, v in status.items():
            if v != "killed":
                print(f"{name}: {v}")
        print(summary(status))
        return 0
    if not args.tests:
        p.error("name the test files that cover the module with --tests")
    if args.recheck:
        recheck(work, args.tests, env, args.jobs, args.timeout, args.only)
        print(summary(results(work, env)))
        return 0
    if not (ROOT / args.module).is_file():
        p.error(f"no such file: {args.module}")
    copy_tree(work)
    write_config(work, args.module, args.tests)
    rc = subprocess.call([*mutmut, "run", "--max-children", str(args.jobs)], cwd=work, env=env)
    print(summary(results(work, env)))
    return rc


if __name__ == "__main__":
    sys.exit(main())
