"""Conformal calibration end to end: train -> export -> serve -> score held-out normal rows.

Rows the model never saw, from the same distribution as the training rows, must be flagged at about
the rate alpha that the caller asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.cli.main import main
from latentwatch.client.client import LatentwatchClient

N_TRAIN, N_HELD_OUT, N_FEATURES = 8000, 4000, 12


def _normal_rows(n: int, seed: int) -> NDArray[np.float32]:
    """A correlated three-component Gaussian mixture: tabular 'normal' data with structure."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(0).normal(size=(3, N_FEATURES, N_FEATURES)) / 3
    centres = np.random.default_rng(1).normal(scale=3.0, size=(3, N_FEATURES))
    component = rng.integers(0, 3, size=n)
    noise = rng.normal(size=(n, N_FEATURES))
    rows = np.einsum("nf,nfg->ng", noise, mixing[component]) + centres[component]
    return rows.astype(np.float32)


@pytest.fixture(scope="module")
def tabular_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("calibration")
    np.savez(root / "train.npz", X=_normal_rows(N_TRAIN, seed=10))
    run_dir, repo = root / "run", root / "repo"
    train = ["train", "--data", str(root / "train.npz"), "--model", "vae", "--out", str(run_dir)]
    assert main([*train, "--epochs", "6", "--calibration-fraction", "0.3", "--seed", "3"]) == 0
    assert main(["export", str(run_dir), "--repo", str(repo), "--name", "tabular"]) == 0
    return repo


def test_false_alarm_rate_on_held_out_normal_rows_matches_alpha(
    tabular_repo: Path, serve: Callable[..., AbstractContextManager[str]]
) -> None:
    held_out = _normal_rows(N_HELD_OUT, seed=20)
    with serve(tabular_repo) as target, LatentwatchClient(target) as client:
        assert client.get_model("tabular").calibration_size == int(0.3 * N_TRAIN)
        for alpha in (0.05, 0.1):
            result = client.score("tabular", held_out, alpha=alpha)
            rate = float(np.mean(result.is_outlier))
            print(f"alpha {alpha}: observed false-alarm rate {rate:.4f} on {N_HELD_OUT} rows")
            assert abs(rate - alpha) <= 0.03, f"false-alarm rate {rate:.4f} at alpha {alpha}"


def test_far_away_rows_get_small_p_values(
    tabular_repo: Path, serve: Callable[..., AbstractContextManager[str]]
) -> None:
    shifted = _normal_rows(500, seed=30) + 25.0
    with serve(tabular_repo) as target, LatentwatchClient(target) as client:
        result = client.score("tabular", shifted, alpha=0.01)
    assert result.is_outlier.mean() > 0.95
    assert np.all(result.outlier_probability == 1.0 - result.p_value)
