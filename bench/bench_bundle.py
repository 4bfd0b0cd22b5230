"""Signed bundle benchmark: cost of `bundle create` / `bundle verify` against a plain copy / sha256.

    python -m bench.bench_bundle             # tiny Phi-3 + a 256 MB weight shard
    python -m bench.bench_bundle --mb 4096   # closer to Phi-3-mini in 4-bit (about 2-8 GB)

Rows: baseline = seconds for the unsigned equivalent (copy + one sha256 pass for create; one
sha256 pass for verify), value = seconds for opclaim, ratio = value / baseline (the price of
signing and of model-signing's own hashing; 1.0 would be free).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import opclaim  # noqa: F401  (offline environment first)


def _sha_all(folder: Path) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            h = hashlib.sha256()
            with f.open("rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)


def _median(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=256, help="size of the extra weight shard in MB")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import torch
    from safetensors.torch import save_file

    from opclaim import bundle
    from opclaim.registry import build_tiny_phi3

    with tempfile.TemporaryDirectory(prefix="bench-bundle-") as tmp:
        tmp = Path(tmp)
        model = build_tiny_phi3(tmp / "model")
        n = args.mb * (1 << 20) // 4
        save_file({"w": torch.rand(n, generator=torch.Generator().manual_seed(0))},
                  str(model / "extra-00001.safetensors"))
        priv, pub = bundle.keygen(tmp / "keys")
        size_mb = sum(f.stat().st_size for f in model.iterdir()) / (1 << 20)
        k = iter(range(10**6))

        def plain_copy():
            dst = tmp / f"copy{next(k)}"
            shutil.copytree(model, dst)
            _sha_all(dst)
            shutil.rmtree(dst)

        def create():
            dst = tmp / f"b{next(k)}"
            bundle.create(model, priv, dst)
            shutil.rmtree(dst)

        base_c, val_c = _median(plain_copy, args.repeats), _median(create, args.repeats)
        good = bundle.create(model, priv, tmp / "good")
        base_v = _median(lambda: _sha_all(good), args.repeats)
        val_v = _median(lambda: bundle.verify(good, pub), args.repeats)
    note = f"{size_mb:.0f} MB model folder; median of {args.repeats}"
    return [
        {"name": "bundle create (copy+manifest+sign)", "baseline": round(base_c, 2), "value": round(val_c, 2),
         "ratio": round(val_c / base_c, 2), "unit": "s", "note": note + "; baseline copy + sha256"},
        {"name": "bundle verify (manifest+signature)", "baseline": round(base_v, 2), "value": round(val_v, 2),
         "ratio": round(val_v / base_v, 2), "unit": "s", "note": note + "; baseline one sha256 pass"},
    ]


if __name__ == "__main__":
    from bench import print_table

    print_table(main())
