"""Metadata lives in setup.cfg. This file only ships the files that README commands name by their
repository path (demo.yaml, ds_configs/, train/recipes/) inside the wheel as opclaim/_data/, so a
non-editable install can run them (opclaim/shipped.py finds them; docs/design.md, "Installed
files")."""

import ast
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


def _shipped():
    # The same list as opclaim/shipped.py SHIPPED (read, not imported: the build must not import opclaim).
    text = (ROOT / "opclaim" / "shipped.py").read_text(encoding="utf-8")
    line = next(x for x in text.splitlines() if x.startswith("SHIPPED = "))
    return ast.literal_eval(line.split("=", 1)[1].split("#")[0].strip())


class BuildPy(build_py):
    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install reads them from the checkout itself
        dest = Path(self.build_lib) / "opclaim" / "_data"
        for rel in _shipped():
            src = ROOT / rel
            if src.is_dir():
                shutil.copytree(src, dest / rel, dirs_exist_ok=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dest / rel)


setup(cmdclass={"build_py": BuildPy})
