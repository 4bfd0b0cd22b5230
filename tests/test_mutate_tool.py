"""tools/mutate.py: the bookkeeping behind the mutation scores in docs/records/mutation.md (mutmut itself
runs only in `make mutate`: hours, not CI)."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("mutate_tool", ROOT / "tools" / "mutate.py")
mutate = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mutate)

OUT = """    eval.metrics.x_f1__mutmut_1: killed
    eval.metrics.x_f1__mutmut_2: survived
    eval.metrics.x_f1__mutmut_3: survived
    eval.metrics.x_f1__mutmut_4: no tests
    eval.metrics.x_f1__mutmut_5: timeout
    eval.metrics.x_f1__mutmut_6: not checked
"""


def test_recheck_kills_count_only_for_mutants_that_were_alive():
    status = mutate.merge_results(OUT, {"eval.metrics.x_f1__mutmut_2": "killed",
                                        "eval.metrics.x_f1__mutmut_3": "survived",
                                        "eval.metrics.x_f1__mutmut_4": "killed",
                                        "eval.metrics.x_f1__mutmut_5": "killed",    # a timeout stays a timeout
                                        "eval.metrics.x_f1__mutmut_6": "killed"})   # never run by mutmut
    assert status == {"eval.metrics.x_f1__mutmut_1": "killed", "eval.metrics.x_f1__mutmut_2": "killed (recheck)",
                      "eval.metrics.x_f1__mutmut_3": "survived", "eval.metrics.x_f1__mutmut_4": "killed (recheck)",
                      "eval.metrics.x_f1__mutmut_5": "timeout", "eval.metrics.x_f1__mutmut_6": "not checked"}
    assert mutate.summary(status) == ("6 mutants: killed 3, not checked 1, survived 1, timeout 1; "
                                      "score 50.0% (killed / all)")


def test_core_names_existing_modules_and_test_files():
    assert len(mutate.CORE) == 7
    for module, tests in mutate.CORE.items():
        assert (ROOT / module).is_file(), module
        files = [t for t in tests if t.endswith(".py")]
        assert files and all((ROOT / t).is_file() for t in files), (module, files)
    args = mutate.make_parser().parse_args(["infer/constrain.py", *(f"--tests={t}" for t in mutate.CORE["infer/constrain.py"])])
    assert args.tests[-2:] == ["-m", "not slow"]
