"""The files README commands name by their repository path: recipes (train/recipes/), accelerate
and DeepSpeed configs (ds_configs/) and demo.yaml, wherever opclaim is installed.

A path such as `train/recipes/tiny-phi3_qlora_zero3-cpu2.yaml` is read from the working directory
when it is there (a checkout, or a copy you edited); otherwise from the copy installed with opclaim:
`opclaim/_data/` inside a wheel (setup.py puts it there), or the checkout itself for an editable
install. `opclaim recipes copy --out DIR` copies them all into DIR, so that commands which read
them through other programs (`accelerate launch --config_file ds_configs/...`) run from DIR.
docs/design.md, "Installed files".
"""

from __future__ import annotations

import shutil
from pathlib import Path

from opclaim.errors import InputError

SHIPPED = ("demo.yaml", "ds_configs", "train/recipes")  # setup.py reads this line

_PACKAGE = Path(__file__).resolve().parent


def roots() -> list[Path]:
    """Where the installed copies are: the wheel's data folder, else the source checkout."""
    found = [_PACKAGE / "_data"] if (_PACKAGE / "_data").is_dir() else []
    checkout = _PACKAGE.parent
    if (checkout / "setup.cfg").is_file() and (checkout / "ds_configs").is_dir():
        found.append(checkout)
    return found


def _shipped_rel(path: Path) -> str | None:
    rel = path.as_posix()
    while rel.startswith("./"):
        rel = rel[2:]
    return rel if any(rel == s or rel.startswith(s + "/") for s in SHIPPED) else None


def resolve(path: str | Path) -> Path:
    """`path` itself when it exists (or is absolute, or names no shipped file); else the installed
    copy of that repository path when there is one; else `path` (the caller reports it missing)."""
    p = Path(path)
    if p.exists() or p.is_absolute():
        return p
    rel = _shipped_rel(p)
    if rel is None:
        return p
    for root in roots():
        if (root / rel).exists():
            return root / rel
    return p


def files() -> list[str]:
    """Every shipped file as its repository path, sorted."""
    base = next(iter(roots()), None)
    if base is None:
        return []
    out = []
    for s in SHIPPED:
        src = base / s
        if src.is_file():
            out.append(s)
        elif src.is_dir():
            out += [f.relative_to(base).as_posix() for f in sorted(src.rglob("*"))
                    if f.is_file() and "__pycache__" not in f.parts and f.suffix in (".yaml", ".yml", ".json")]
    return sorted(out)


def copy_to(out: str | Path, force: bool = False) -> list[Path]:
    """Copy every shipped file into `out` under its repository path. An existing file that differs
    is refused unless `force` (a copy you edited is yours)."""
    base = next(iter(roots()), None)
    if base is None:
        raise InputError("this installation carries no recipes (opclaim/_data is missing; reinstall opclaim)")
    out = Path(out)
    plan = [(base / rel, out / rel) for rel in files()]
    clash = [d for s, d in plan if d.exists() and d.read_bytes() != s.read_bytes()]
    if clash and not force:
        raise InputError("exists and differs from the shipped copy (use --force to overwrite)", file=clash[0])
    written = []
    for s, d in plan:
        d.parent.mkdir(parents=True, exist_ok=True)
        if not (d.exists() and d.read_bytes() == s.read_bytes()):
            shutil.copyfile(s, d)
            written.append(d)
    return written
