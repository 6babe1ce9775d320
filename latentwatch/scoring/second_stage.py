"""The second-stage score: how atypical a row's VAE statistics are, next to normal rows.

A VAE's likelihood alone ranks some out-of-distribution data as *more* likely than its own
training data, and its reconstruction error is about as good as PCA on tabular data. Following
DoSE (Morningstar et al., AISTATS 2021) and LPath, the second stage looks at several per-row
statistics at once and asks how unusual the combination is for normal data:

- the scorer's own outputs: negative ELBO, KL (rate), reconstruction error (distortion), ...;
- the distance from the row's latent mean to its k nearest training latents (low posterior
  density in the aggregate posterior), and from the row itself (in the model's input space) to
  its k nearest training rows;
- for images, the complexity-corrected likelihood (latentwatch.scoring.complexity): the IWAE
  NLL minus what the image's compressed length explains (slope fitted on normal rows).

Each statistic is standardised with a mean and standard deviation fitted on held-out normal
rows (validation rows, never the calibration split), and the score is the largest standardised
statistic: a row is as anomalous as its most atypical statistic. Higher = more anomalous.

Everything here is numpy, vectorised over the batch, and stored as plain float arrays in
`second_stage.npz` (loaded with allow_pickle=False), so the service runs it without torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from latentwatch.scoring.complexity import complexity_bits, corrected_nll, fit_slope
from latentwatch.scoring.knn import KnnIndex

KIND = "stats_density"
# kNN distance to at most this many reference rows: bounded memory and time per batch. Narrow
# rows get more reference rows for the same cost (REFERENCE_VALUES = rows x features), which
# matters on large low-dimensional sets where the nearest neighbours are very close.
MAX_REFERENCE_ROWS = 4096
REFERENCE_VALUES = 4096 * 64
MAX_NARROW_REFERENCE_ROWS = 8192
# Rows the service scores per call off the event loop come in multiples of this. (The kNN search
# is exact per row, so how a batch is split never changes a score.)
KNN_CHUNK_ROWS = 512
_TINY = 1e-12

# Statistics the second stage can use; each needs the named scorer outputs.
STATISTICS: dict[str, tuple[str, ...]] = {
    "neg_elbo": ("neg_elbo",),
    "iwae_nll": ("iwae_nll",),
    "recon_prob_nll": ("recon_prob_nll",),
    "kl": ("kl",),
    "log_recon_error": ("recon_error",),
    "log_latent_knn": ("latent_mu",),
    "log_input_knn": (),
    "complexity_nll": ("iwae_nll",),  # reads the rows too (their compressed length)
}
# max: the largest standardised statistic (one-sided: only high values are atypical);
# max_abs: the largest |standardised statistic| (two-sided: unusually LOW values count too, e.g.
# the higher likelihood a Fashion-MNIST model gives MNIST digits); sum: their sum.
COMBINES = ("max", "max_abs", "sum")


@dataclass(frozen=True, eq=False)
class SecondStage:
    """A fitted second stage; `score` maps scorer outputs (and the rows) to (B,) scores."""

    statistics: tuple[str, ...]
    combine: str  # see COMBINES
    k: int  # neighbours for the kNN statistics
    mean: NDArray[np.float64]  # (S,)
    std: NDArray[np.float64]  # (S,)
    latent_reference: NDArray[np.float32]  # (R, Z) training latent means; (0, 0) when unused
    input_reference: NDArray[np.float32]  # (R, F) training rows in model space; (0, 0) unused
    # complexity_nll: nats of NLL per bit of compressed length, fitted on normal rows.
    complexity_slope: float = 0.0
    # Exact kNN indexes over the references in use, built once (when the version loads).
    latent_index: KnnIndex | None = field(init=False, repr=False)
    input_index: KnnIndex | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = [s for s in self.statistics if s not in STATISTICS]
        if unknown or not self.statistics:
            raise ValueError(f"unknown or no statistics {unknown}; choose from {list(STATISTICS)}")
        if self.combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {self.combine!r}")
        if self.mean.shape != (len(self.statistics),) or self.std.shape != self.mean.shape:
            raise ValueError(f"mean/std must have shape ({len(self.statistics)},)")
        if not (np.isfinite(self.mean).all() and (self.std > 0).all()):
            raise ValueError("mean must be finite and std positive")
        for name, reference in (("log_latent_knn", self.latent_reference),
                                ("log_input_knn", self.input_reference)):
            if name in self.statistics and reference.shape[0] < self.k:
                raise ValueError(f"{name} needs at least k={self.k} reference rows")
        for name, reference, attribute in (
            ("log_latent_knn", self.latent_reference, "latent_index"),
            ("log_input_knn", self.input_reference, "input_index"),
        ):
            index = KnnIndex.build(reference) if name in self.statistics else None
            object.__setattr__(self, attribute, index)  # frozen: set once, here

    @property
    def costly(self) -> bool:
        """Whether it searches reference rows (kNN): heavy work, kept off the event loop."""
        return any(s in ("log_latent_knn", "log_input_knn") for s in self.statistics)

    @property
    def needs_outputs(self) -> tuple[str, ...]:
        """Scorer outputs the statistics read."""
        return needed_outputs(self.statistics)

    def raw_statistics(
        self, outputs: Mapping[str, NDArray], model_rows: NDArray[np.float32] | None
    ) -> NDArray[np.float64]:
        """(B, S) statistics before standardisation. `model_rows` (B, F) are the rows in model
        space (after preprocessing); only `log_input_knn` reads them."""
        columns = [self._statistic(s, outputs, model_rows) for s in self.statistics]
        return np.stack(columns, axis=1)

    def score(
        self, outputs: Mapping[str, NDArray], model_rows: NDArray[np.float32] | None
    ) -> NDArray[np.float64]:
        """(B,) second-stage scores, higher = more anomalous."""
        z = (self.raw_statistics(outputs, model_rows) - self.mean) / self.std  # (B, S)
        return combine_statistics(z, self.combine)

    def _statistic(
        self, name: str, outputs: Mapping[str, NDArray], model_rows: NDArray[np.float32] | None
    ) -> NDArray[np.float64]:
        if name == "log_recon_error":
            return np.log(outputs["recon_error"].astype(np.float64) + _TINY)
        if name == "log_latent_knn":
            assert self.latent_index is not None  # built for the statistics in use
            return np.log(self.latent_index.mean_distance(outputs["latent_mu"], self.k) + _TINY)
        if name == "log_input_knn":
            if model_rows is None:
                raise ValueError("log_input_knn needs the rows in model space")
            assert self.input_index is not None
            return np.log(self.input_index.mean_distance(model_rows, self.k) + _TINY)
        if name == "complexity_nll":
            if model_rows is None:
                raise ValueError("complexity_nll needs the rows in model space")
            return corrected_nll(outputs["iwae_nll"], model_rows, self.complexity_slope)
        return outputs[name].astype(np.float64)

    def save(self, path: Path) -> None:
        with path.open("wb") as f:
            np.savez(
                f,
                mean=self.mean, std=self.std,
                latent_reference=self.latent_reference, input_reference=self.input_reference,
                complexity_slope=np.array([self.complexity_slope]),
            )

    @classmethod
    def load(cls, path: Path, statistics: Sequence[str], combine: str, k: int) -> SecondStage:
        """The arrays from `path`; the settings come from the manifest."""
        with np.load(path, allow_pickle=False) as arrays:
            missing = {"mean", "std", "latent_reference", "input_reference"} - set(arrays.files)
            if missing:
                raise ValueError(f"{path.name}: missing arrays {sorted(missing)}")
            return cls(
                statistics=tuple(statistics),
                combine=combine,
                k=k,
                mean=arrays["mean"].astype(np.float64),
                std=arrays["std"].astype(np.float64),
                latent_reference=np.ascontiguousarray(arrays["latent_reference"], np.float32),
                input_reference=np.ascontiguousarray(arrays["input_reference"], np.float32),
                complexity_slope=(float(arrays["complexity_slope"][0])
                                  if "complexity_slope" in arrays.files else 0.0),
            )


def combine_statistics(z: NDArray[np.float64], combine: str) -> NDArray[np.float64]:
    """(B, S) standardised statistics -> (B,) scores, as `combine` (see COMBINES) says."""
    if combine == "max":
        return z.max(axis=1)
    if combine == "max_abs":
        return np.abs(z).max(axis=1)
    return z.sum(axis=1)


def reference_rows_for(n_features: int) -> int:
    """How many training rows the kNN reference keeps for rows of `n_features` values."""
    return max(MAX_REFERENCE_ROWS, min(MAX_NARROW_REFERENCE_ROWS, REFERENCE_VALUES // n_features))


def needed_outputs(statistics: Sequence[str]) -> tuple[str, ...]:
    """Scorer outputs that `statistics` read (latent_mu always: fitting keeps the reference)."""
    return tuple(dict.fromkeys(o for s in statistics for o in STATISTICS[s]))


def knn_distance(
    reference: NDArray[np.float32], queries: NDArray, k: int, exclude_self: bool = False
) -> NDArray[np.float64]:
    """Mean Euclidean distance from each query (B, D) to its k nearest reference rows (R, D),
    exact (see latentwatch.scoring.knn).

    With `exclude_self`, the queries ARE the reference rows and each row's zero distance to
    itself is skipped (leave-one-out), so fitted statistics match those of unseen rows.
    """
    return KnnIndex.build(reference).mean_distance(queries, k, exclude_self)


def fit_second_stage(
    statistics: Sequence[str],
    combine: str,
    k: int,
    reference_outputs: Mapping[str, NDArray],
    reference_rows: NDArray[np.float32],
    fit_outputs: Mapping[str, NDArray] | None,
    fit_rows: NDArray[np.float32] | None,
) -> SecondStage:
    """Fit on normal data.

    `reference_*` are training rows (model space) and their scorer outputs: the kNN
    statistics measure distances to them. `fit_*` are held-out normal rows (validation) whose
    statistics give the standardisation; when None, the reference rows themselves are used,
    with leave-one-out kNN distances.
    """
    statistics = tuple(statistics)
    slope = 0.0
    if "complexity_nll" in statistics:  # fitted on the same normal rows as the standardisation
        nll = (fit_outputs if fit_outputs is not None else reference_outputs)["iwae_nll"]
        rows = fit_rows if fit_rows is not None else reference_rows
        slope = fit_slope(nll, complexity_bits(rows))
    uses_latent = "log_latent_knn" in statistics
    uses_input = "log_input_knn" in statistics
    empty = np.zeros((0, 0), dtype=np.float32)
    stage = SecondStage(
        statistics=statistics,
        combine=combine,
        k=k,
        mean=np.zeros(len(statistics)),
        std=np.ones(len(statistics)),
        latent_reference=(
            np.ascontiguousarray(reference_outputs["latent_mu"], np.float32) if uses_latent
            else empty
        ),
        input_reference=np.ascontiguousarray(reference_rows, np.float32) if uses_input else empty,
        complexity_slope=slope,
    )
    if fit_outputs is not None and fit_rows is not None:
        values = stage.raw_statistics(fit_outputs, fit_rows)  # (n, S)
    else:
        values = _leave_one_out_statistics(stage, reference_outputs, reference_rows)
    mean = values.mean(axis=0)
    std = values.std(axis=0)
    # A statistic that is constant on normal rows still counts: any change is atypical.
    std = np.where(std > 1e-6 * np.maximum(1.0, np.abs(mean)), std, 1e-6 * np.maximum(
        1.0, np.abs(mean)))
    return SecondStage(  # (its indexes are built anew: a few ms)
        statistics=statistics, combine=combine, k=k, mean=mean, std=std,
        latent_reference=stage.latent_reference, input_reference=stage.input_reference,
        complexity_slope=slope,
    )


def _leave_one_out_statistics(
    stage: SecondStage, outputs: Mapping[str, NDArray], rows: NDArray[np.float32]
) -> NDArray[np.float64]:
    columns = []
    for name in stage.statistics:
        if name == "log_latent_knn":
            assert stage.latent_index is not None
            d = stage.latent_index.mean_distance(outputs["latent_mu"], stage.k, True)
            columns.append(np.log(d + _TINY))
        elif name == "log_input_knn":
            assert stage.input_index is not None
            d = stage.input_index.mean_distance(rows, stage.k, True)
            columns.append(np.log(d + _TINY))
        else:
            columns.append(stage._statistic(name, outputs, rows))
    return np.stack(columns, axis=1)
