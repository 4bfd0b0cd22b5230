"""Build an nltk WordNet 3.0 folder from Debian's wordnet-base + wordnet-sense-index packages.

nltk's METEOR needs WordNet; it cannot be downloaded here. Debian ships the database files but
not `lexnames`, which nltk requires: we generate it from the lexnames(5WN) man page table.
Files are copied, not symlinked (nltk's reader rejects the links).

    python -m opclaim.wordnet --out .venv/nltk_data
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import sys
from pathlib import Path

SRC = Path("/usr/share/wordnet")
MAN = Path("/usr/share/man/man5/lexnames.5WN.gz")
FILES = ["adj.exc", "adv.exc", "noun.exc", "verb.exc", "cntlist.rev", "data.adj", "data.adv",
         "data.noun", "data.verb", "index.adj", "index.adv", "index.noun", "index.verb", "index.sense"]
CATEGORY = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


def lexnames_from_man(man: Path = MAN) -> str:
    """The man page's table rows `NN<TAB>name<TAB>contents` -> lexnames lines `NN\tname\tcat`."""
    text = gzip.open(man, "rt", encoding="utf-8", errors="replace").read()
    rows = []
    for line in text.splitlines():
        m = re.match(r"^(\d\d)\t(\w+)\.(\w+)\s*\t", line)
        if m:
            rows.append(f"{m.group(1)}\t{m.group(2)}.{m.group(3)}\t{CATEGORY[m.group(2)]}")
    if len(rows) != 45:
        raise RuntimeError(f"expected 45 lexicographer files in {man}, found {len(rows)}")
    return "\n".join(rows) + "\n"


def build(out: Path, src: Path = SRC) -> Path | None:
    """Make `out/corpora/wordnet`; return it, or None when the Debian files are absent."""
    missing = [f for f in FILES if not (src / f).is_file()]
    if missing or not MAN.is_file():
        return None
    dest = out / "corpora" / "wordnet"
    if (dest / "lexnames").is_file() and all((dest / f).is_file() for f in FILES):
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        shutil.copyfile(src / f, dest / f)
    (dest / "lexnames").write_text(lexnames_from_man(), encoding="utf-8")
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="an nltk_data folder")
    args = ap.parse_args(argv)
    dest = build(args.out)
    if dest is None:
        print("WordNet: Debian packages wordnet-base and wordnet-sense-index are not installed; "
              "METEOR will be reported as unavailable (run `make setup` as root to install them).",
              file=sys.stderr)
        return 0
    print(f"WordNet 3.0 ready in {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
