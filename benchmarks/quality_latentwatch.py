"""latentwatch as a user runs it: train on a file, export (once or at several scoring choices),
score the test rows offline."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True, eq=False)
class LatentwatchScores:
    """Every score kind and its conformal p-values for the test rows, from one exported model."""

    scores: dict[str, NDArray[np.float64]]  # kind -> (N,)
    p_values: dict[str, NDArray[np.float64]]  # kind -> (N,)
    default_kind: str
    n_calibration: int
    training: dict[str, Any]  # split sizes, epochs, model shape
    train_s: float
    export_s: float
    score_s: float
    version_dir: Path  # the exported version that scored

    @property
    def total_s(self) -> float:
        return self.train_s + self.export_s + self.score_s


@dataclass(frozen=True, eq=False)
class TrainedRun:
    """A VAE trained on a file as `latentwatch train` does it, before any export."""

    run_dir: Path
    training: dict[str, Any]  # split sizes, epochs, model shape
    train_s: float


def train_latentwatch(
    source: str, work: Path, name: str, seed: int, epochs: int | None = None,
    max_rows: int | None = None, n_importance_samples: int | None = None,
) -> TrainedRun:
    """Train a VAE on `source` (a file latentwatch.data reads) into `work/run-<name>`.
    `n_importance_samples` is the run's K, the latent draws its export decodes per row (None:
    `latentwatch train`'s default; an export can replace it)."""
    from latentwatch.models.training import TrainConfig, run_training

    run_dir = work / f"run-{name}"
    optional = {"epochs": epochs} if epochs is not None else {}
    config = TrainConfig(data=source, model="vae", out=run_dir, seed=seed, max_rows=max_rows,
                         progress=False, n_importance_samples=n_importance_samples, **optional)
    start_s = time.perf_counter()
    result = run_training(config)
    mc = result.model_config
    return TrainedRun(
        run_dir=run_dir,
        training={**result.split, "epochs_run": result.epochs_run,
                  "best_epoch": result.best_epoch, "body": mc.body, "hidden": list(mc.hidden),
                  "latent_dim": mc.latent_dim, "decoder": mc.decoder},
        train_s=time.perf_counter() - start_s,
    )


def exported_scores(
    run: TrainedRun, test: NDArray[np.float32], repo: Path, name: str, **choices: Any
) -> LatentwatchScores:
    """Export `run` as the next version of `name` in `repo` (export_run's scoring `choices`,
    e.g. n_importance_samples, n_reference_rows, replace the run's own) and score `test` (N, F)
    with the exported version, as a user of the product would."""
    from latentwatch.export.exporter import export_run
    from latentwatch.repository.manifest import Manifest
    from latentwatch.service.offline import OfflineScorer

    start_s = time.perf_counter()
    version_dir = export_run(run.run_dir, repo, name, **choices)
    export_s = time.perf_counter() - start_s
    score_start_s = time.perf_counter()
    scorer = OfflineScorer.from_version_dir(version_dir)
    scores = {k: np.asarray(v, dtype=np.float64) for k, v in scorer.score(test).items()}
    p = {k: np.asarray(v, dtype=np.float64) for k, v in scorer.p_values(scores).items()}
    score_s = time.perf_counter() - score_start_s
    return LatentwatchScores(
        scores=scores,
        p_values=p,
        default_kind=str(scorer.default_score_kind),
        n_calibration=Manifest.read(version_dir).require_scoring().calibration.size,
        training=run.training,
        train_s=run.train_s,
        export_s=export_s,
        score_s=score_s,
        version_dir=version_dir,
    )


def latentwatch_scores(
    source: str, test: NDArray[np.float32], work: Path, name: str, seed: int,
    epochs: int | None = None, max_rows: int | None = None, n_importance_samples: int | None = None,
) -> LatentwatchScores:
    """Train a VAE on `source`, export it into a repository under `work`, and score `test`
    (N, F) with the exported version (train_latentwatch, then exported_scores)."""
    run = train_latentwatch(source, work, name, seed, epochs, max_rows, n_importance_samples)
    return exported_scores(run, test, work / "repo", name)
