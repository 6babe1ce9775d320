"""PyOD baselines for benchmarks/quality.py: the classical detectors a user could pick instead.

Every baseline is fitted on the whole clean training pool (the normal rows the VAE's own
train/validation/calibration split is carved from), standardised with the pool's mean and
standard deviation, and scores the test rows standardised the same way. Hyper-parameters are
PyOD's defaults (KNN, LOF, OCSVM, IForest, PCA, ECOD, VAE), with these deviations, each recorded
in the JSON (`deviations`) and in README:

- PyOD's VAE trains DEFAULT_PYOD_VAE_EPOCHS epochs (PyOD's default is 30): 30 epochs of batch 32
  on 29 sets x 3 seeds do not fit the benchmark's 45 minutes on 2 cores;
- OCSVM trains on at most OCSVM_MAX_TRAIN_ROWS pool rows (a uniform, seeded subsample): kernel
  SVM training grows with the square of the rows;
- every detector that takes a seed gets the split's seed;
- PCA keeps only the components with non-zero variance (see _fit_pca).

`dte_np` is not PyOD's: it is the non-parametric Diffusion Time Estimation of quality_dte.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

logger = logging.getLogger(__name__)

BASELINES = ("knn", "lof", "ocsvm", "iforest", "pca", "ecod", "pyod_vae", "dte_np")
# PyOD's VAE default is 30 epochs of batch 32; a cap keeps 29 sets x 3 seeds inside the budget.
DEFAULT_PYOD_VAE_EPOCHS = 10
PYOD_VAE_DEFAULT_EPOCHS = 30  # PyOD's own, for the record
OCSVM_MAX_TRAIN_ROWS = 2000
MIN_STD = 1e-12  # a constant training column stays constant (0) instead of dividing by zero
# PCA components whose explained-variance ratio is below this carry no variance (numerically).
PCA_MIN_VARIANCE_RATIO = 1e-10


@dataclass(frozen=True)
class BaselineScores:
    """Test-row scores of one fitted detector (higher = more anomalous) and its timings."""

    scores: NDArray[np.float64] | None  # (N,); None when the detector failed
    fit_s: float
    score_s: float
    error: str | None = None
    note: str | None = None  # a deviation from PyOD's defaults made for this split


def standardize(
    pool: NDArray[np.floating], test: NDArray[np.floating]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(pool, test) standardised with the pool's per-feature mean and standard deviation."""
    pool64 = np.asarray(pool, dtype=np.float64)  # (P, F)
    mean = pool64.mean(axis=0)  # (F,)
    std = pool64.std(axis=0)
    std = np.where(std > MIN_STD, std, 1.0)
    return (pool64 - mean) / std, (np.asarray(test, dtype=np.float64) - mean) / std


def pyod_available() -> str | None:
    """None when PyOD imports, else the reason it does not (it is in the `bench` extra)."""
    try:
        import pyod  # noqa: F401
    except ImportError as err:
        return f"pyod not installed ({err}); pip install -e '.[bench]'"
    return None


def _detector(name: str, seed: int, vae_epochs: int) -> Any:
    if name == "iforest":
        from pyod.models.iforest import IForest

        return IForest(random_state=seed)
    if name == "knn":
        from pyod.models.knn import KNN

        return KNN()
    if name == "lof":
        from pyod.models.lof import LOF

        return LOF()
    if name == "ocsvm":
        from pyod.models.ocsvm import OCSVM

        return OCSVM()
    if name == "dte_np":
        from quality_dte import DTENonParametric

        return DTENonParametric()
    if name == "ecod":
        from pyod.models.ecod import ECOD

        return ECOD()
    if name == "pyod_vae":
        from pyod.models.vae import VAE

        # Default architecture (128-64-32, latent 2, batch 32); only the epochs are capped.
        return VAE(epoch_num=vae_epochs, random_state=seed, verbose=0)
    raise ValueError(f"unknown baseline {name!r}; expected one of {', '.join(BASELINES)}")


def _fit_pca(pool: NDArray[np.float64], seed: int) -> tuple[Any, str | None]:
    """PyOD's PCA, refitted on the pool's numerical rank when the pool is rank-deficient.

    PyOD's default keeps every component and divides each row's distance to a component by that
    component's explained-variance ratio; on a rank-deficient pool (constant or one-hot columns,
    e.g. 24_mnist, 5_campaign) a ratio is 0 and every score becomes inf (AUROC 0.5)."""
    from pyod.models.pca import PCA

    with np.errstate(divide="ignore", invalid="ignore"):  # the inf scores of that case
        detector = PCA(random_state=seed).fit(pool)
    ratios = detector.detector_.explained_variance_ratio_  # (C,) descending
    rank = int((ratios > PCA_MIN_VARIANCE_RATIO).sum())
    if rank == ratios.size or rank == 0:
        return detector, None
    note = f"pool rank-deficient: n_components={rank} of {ratios.size}"
    refit = PCA(n_components=rank, svd_solver="full", random_state=seed)  # as the first fit
    return refit.fit(pool), note


@contextmanager
def _torch_threads(n_threads: int) -> Iterator[None]:
    """PyOD's VAE trains with torch; one thread, as latentwatch's training uses by default."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start_s = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start_s


def run_baseline(
    name: str, pool: NDArray[np.float64], test: NDArray[np.float64], seed: int,
    vae_epochs: int = DEFAULT_PYOD_VAE_EPOCHS, torch_threads: int = 1,
) -> BaselineScores:
    """Fit `name` on the standardised pool (P, F) and score the standardised test rows (N, F).

    A detector that raises is reported with its error instead of ending the benchmark."""
    fit_s = score_s = 0.0
    note = None
    try:
        if name == "pca":
            (detector, note), fit_s = _timed(lambda: _fit_pca(pool, seed))
            scores, score_s = _timed(lambda: detector.decision_function(test))
        elif name == "ocsvm" and pool.shape[0] > OCSVM_MAX_TRAIN_ROWS:
            rows = np.random.default_rng(seed).choice(pool.shape[0], OCSVM_MAX_TRAIN_ROWS,
                                                      replace=False)
            note = f"trained on {OCSVM_MAX_TRAIN_ROWS} of {pool.shape[0]} pool rows"
            detector = _detector(name, seed, vae_epochs)
            _, fit_s = _timed(lambda: detector.fit(pool[np.sort(rows)]))
            scores, score_s = _timed(lambda: detector.decision_function(test))
        elif name == "pyod_vae":
            detector = _detector(name, seed, vae_epochs)
            with _torch_threads(torch_threads):
                _, fit_s = _timed(lambda: detector.fit(pool))
                scores, score_s = _timed(lambda: detector.decision_function(test))
        else:
            detector = _detector(name, seed, vae_epochs)
            _, fit_s = _timed(lambda: detector.fit(pool))
            scores, score_s = _timed(lambda: detector.decision_function(test))
    except Exception as err:  # one failing detector must not end the run
        logger.warning("%s failed: %s: %s", name, type(err).__name__, err)
        return BaselineScores(None, fit_s, score_s, f"{type(err).__name__}: {err}", note)
    return BaselineScores(np.asarray(scores, dtype=np.float64).reshape(-1), fit_s, score_s,
                          note=note)


def deviations(vae_epochs: int) -> dict[str, str]:
    """Where a baseline does not run at PyOD's defaults, and why (the JSON's `deviations`)."""
    return {
        "pyod_vae": f"epochs: {vae_epochs} (PyOD default {PYOD_VAE_DEFAULT_EPOCHS}); 30 epochs "
                    "of batch 32 on every set and seed do not fit the 45-minute budget",
        "ocsvm": f"trained on at most {OCSVM_MAX_TRAIN_ROWS} pool rows (seeded uniform "
                 "subsample; kernel SVM training is quadratic in the rows); scores every test row",
        "pca": "refitted on the pool's numerical rank when rank-deficient (PyOD's default "
               "divides by a zero explained variance there: every score inf)",
        "dte_np": "not PyOD: non-parametric Diffusion Time Estimation written from the paper's "
                  "description (benchmarks/quality_dte.py), k=5, 300 log-spaced noise levels",
        "seeds": "IForest, PCA, the VAE and OCSVM's subsample take the split's seed",
    }


def run_baselines(
    pool: NDArray[np.floating], test: NDArray[np.floating], seed: int,
    names: Sequence[str] = BASELINES, vae_epochs: int = DEFAULT_PYOD_VAE_EPOCHS,
) -> dict[str, BaselineScores]:
    """Every baseline in `names` on one split: standardise with the pool, fit, score."""
    if unknown := sorted(set(names) - set(BASELINES)):
        raise ValueError(f"unknown baselines {unknown}; expected some of {', '.join(BASELINES)}")
    pool_z, test_z = standardize(pool, test)
    return {name: run_baseline(name, pool_z, test_z, seed, vae_epochs) for name in names}
