"""Bootstrap confidence intervals of mean precision and recall (docs/design.md "Bootstrap").

Cases are resampled with replacement B times (seeded); the 2.5th and 97.5th percentiles of the
resampled means are the interval. Vectorised: B x n index blocks drawn from one generator,
which yields exactly the indices a per-iteration loop draws, and each block's row means equal
the loop's 1-D means bit for bit.
"""

from __future__ import annotations

import numpy as np

PERCENTILES = (2.5, 97.5)


def resampled_means(values: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0,
                    block_bytes: int = 64 << 20) -> dict[str, np.ndarray]:
    """Means of each array over the same n_boot resamples of case indices (paired across arrays)."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
    n = len(next(iter(arrays.values()))) if arrays else 0
    out = {k: np.empty(n_boot) for k in arrays}
    if n == 0 or n_boot == 0:
        return {k: np.full(n_boot, np.nan) for k in arrays}
    rng = np.random.default_rng(seed)
    rows = max(1, block_bytes // (8 * n))
    for start in range(0, n_boot, rows):
        k = min(rows, n_boot - start)
        idx = rng.integers(0, n, size=(k, n))
        for name, arr in arrays.items():
            out[name][start:start + k] = arr[idx].mean(axis=1)
    return out


def resampled_means_loop(values: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0) -> dict:
    """The plain loop the vectorised version must equal (used by tests and the benchmark)."""
    arrays = {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}
    n = len(next(iter(arrays.values())))
    rng = np.random.default_rng(seed)
    out = {k: [] for k in arrays}
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        for name, arr in arrays.items():
            out[name].append(arr[idx].mean())
    return {k: np.array(v) for k, v in out.items()}


def interval(means: np.ndarray) -> list[float] | None:
    """[2.5th, 97.5th] percentile of resampled means; None when there is nothing to resample."""
    if means.size == 0 or np.isnan(means).any():
        return None
    lo, hi = np.percentile(means, PERCENTILES)
    return [float(lo), float(hi)]


def intervals(values: dict[str, np.ndarray], n_boot: int = 1000, seed: int = 0) -> dict[str, list | None]:
    if n_boot <= 0:
        return {k: None for k in values}
    return {k: interval(m) for k, m in resampled_means(values, n_boot, seed).items()}
