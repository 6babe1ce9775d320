"""The clean-train split of a labelled tabular set (benchmarks/quality.py's tabular protocol)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, eq=False)
class CleanTrainSplit:
    """One seed's clean-train split of a labelled tabular set."""

    pool: NDArray[np.float32]  # (P, F) normal rows only: what every method trains on
    test: NDArray[np.float32]  # (N, F) the other normals and the anomalies
    y_test: NDArray[np.int64]  # (N,) 1 = anomaly
    n_pool_uncapped: int
    n_test_uncapped: int

    def describe(self) -> dict[str, Any]:
        return {
            "n_pool": int(self.pool.shape[0]),
            "n_test": int(self.test.shape[0]),
            "n_test_anomalies": int(self.y_test.sum()),
            "n_pool_uncapped": self.n_pool_uncapped,
            "n_test_uncapped": self.n_test_uncapped,
        }


def clean_train_split(
    X: NDArray[np.floating], y: NDArray[np.integer], seed: int,
    max_train_rows: int | None = None, max_test_rows: int | None = None,
) -> CleanTrainSplit:
    """50% of the normals (shuffled with `seed`) -> pool; the rest + all anomalies -> test.

    Above `max_train_rows` the pool is subsampled uniformly; above `max_test_rows` the test set
    is subsampled per class, keeping its anomaly fraction (at least one of each class)."""
    rng = np.random.default_rng(seed)
    normals = rng.permutation(np.flatnonzero(y == 0))
    anomalies = np.flatnonzero(y != 0)
    if normals.size < 2 or anomalies.size < 1:
        raise ValueError(f"need >= 2 normal rows and >= 1 anomaly, got {normals.size} and "
                         f"{anomalies.size}")
    half = normals.size // 2
    pool_idx, test_normals = normals[:half], normals[half:]
    n_pool_uncapped, n_test_uncapped = pool_idx.size, test_normals.size + anomalies.size
    if max_train_rows is not None and pool_idx.size > max_train_rows:
        pool_idx = rng.choice(pool_idx, max_train_rows, replace=False)
    if max_test_rows is not None and n_test_uncapped > max_test_rows:
        n_anomalies = round(max_test_rows * anomalies.size / n_test_uncapped)
        n_anomalies = min(max(1, n_anomalies), anomalies.size, max_test_rows - 1)
        test_normals = rng.choice(test_normals, max_test_rows - n_anomalies, replace=False)
        anomalies = rng.choice(anomalies, n_anomalies, replace=False)
    test_idx = np.concatenate([np.sort(test_normals), np.sort(anomalies)])
    return CleanTrainSplit(
        pool=np.asarray(X[np.sort(pool_idx)], dtype=np.float32),
        test=np.asarray(X[test_idx], dtype=np.float32),
        y_test=(np.asarray(y[test_idx]) != 0).astype(np.int64),
        n_pool_uncapped=int(n_pool_uncapped),
        n_test_uncapped=int(n_test_uncapped),
    )


def load_tabular(path: Path) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """(X (N, F) float64, y (N,) int64) from an ADBench-style .npz; nothing pickled is loaded."""
    with np.load(path, allow_pickle=False) as data:
        return data["X"].astype(np.float64), data["y"].astype(np.int64).reshape(-1)
