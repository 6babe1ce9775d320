"""BiasAccumulator: encoder means chunk by chunk -> BiasReport (math in latentwatch.bias.density).

The report holds per-row log densities and weights, histograms, the sparsest and densest rows,
group statistics, KL to the prior and drift against the training reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.density import (
    effective_sample_size,
    latent_histograms,
    log_density_and_weight,
)
from latentwatch.bias.drift import (
    Drift,
    LatentReference,
    ReferenceComparison,
    compare_to_reference,
    drift_from_reference,
    kl_to_prior,
)
from latentwatch.bias.groups import (
    DISPARITY_BAND,
    GroupCounts,
    GroupStats,
    farthest_from_parity,
    group_stats,
)
from latentwatch.bias.options import BiasOptions
from latentwatch.errors import InvalidInput

__all__ = ["DISPARITY_BAND", "BiasAccumulator", "BiasReport", "DimensionHistogram", "GroupStats"]

DEFAULT_MAX_GROUP_VALUES = 1000


@dataclass(frozen=True, eq=False)
class DimensionHistogram:
    edges: NDArray[np.float64]  # (bins + 1,)
    counts: NDArray[np.int64]  # (bins,)


@dataclass(frozen=True, eq=False)
class BiasReport:
    n_rows: int
    latent_dim: int
    options: BiasOptions
    ids: list[str] | None  # None: a row's id is its position
    log_density: NDArray[np.float64]  # (N,)
    weight: NDArray[np.float64]  # (N,) mean 1
    effective_sample_size: float
    histograms: list[DimensionHistogram]  # (Z) over this data's range
    sparsest: NDArray[np.int64]  # (k,) positions, lowest density first
    densest: NDArray[np.int64]  # (k,) positions, highest density first
    groups: list[GroupStats]
    worst_group_ratio: float | None
    kl_to_prior: NDArray[np.float64]  # (Z,)
    reference: ReferenceComparison | None
    drift: Drift | None
    reference_kl_to_prior: NDArray[np.float64] | None
    # Decoder means at the first k' sparsest (densest) rows' latent means, in the data's units:
    # (k', F), or (k', C, H, W) for image models.
    decoded_sparsest: NDArray[np.float32] | None = None
    decoded_densest: NDArray[np.float32] | None = None

    @property
    def effective_sample_fraction(self) -> float:
        return self.effective_sample_size / self.n_rows

    @property
    def kl_to_prior_total(self) -> float:
        return float(self.kl_to_prior.sum())

    def id_of(self, position: int) -> str:
        return str(position) if self.ids is None else self.ids[position]

    def with_decoded(self, sparsest: NDArray | None, densest: NDArray | None) -> BiasReport:
        return replace(self, decoded_sparsest=sparsest, decoded_densest=densest)


@dataclass
class _GroupColumn:
    codes: dict[str, int] = field(default_factory=dict)
    blocks: list[NDArray[np.int32]] = field(default_factory=list)


class BiasAccumulator:
    """Collects encoder means chunk by chunk in bounded memory, then builds the report.

    Per row it keeps the float32 means, the id and one int32 code per group column; the moments
    drift and KL need are running float64 sums.
    """

    def __init__(
        self, latent_dim: int, *, max_rows: int,
        max_group_values: int = DEFAULT_MAX_GROUP_VALUES,
    ) -> None:
        if latent_dim < 1 or max_rows < 1:
            raise ValueError("latent_dim and max_rows must be positive")
        self.latent_dim = latent_dim
        self.max_rows = max_rows
        self.max_group_values = max_group_values
        self._mu: list[NDArray[np.float32]] = []
        self._ids: list[str] | None = None
        self._groups: dict[str, _GroupColumn] | None = None
        self._n = 0
        self._sum = np.zeros(latent_dim)
        self._outer = np.zeros((latent_dim, latent_dim))
        self._sigma2 = np.zeros(latent_dim)
        self._lo = np.full(latent_dim, np.inf)
        self._hi = np.full(latent_dim, -np.inf)

    @property
    def n_rows(self) -> int:
        return self._n

    def add(
        self,
        mu: NDArray,
        logvar: NDArray | None = None,
        ids: Sequence[str] | None = None,
        groups: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        mu = np.asarray(mu, dtype=np.float32)
        if mu.ndim != 2 or mu.shape[1] != self.latent_dim:
            raise InvalidInput(f"expected (n, {self.latent_dim}) latent means, "
                               f"got {list(mu.shape)}")
        n = mu.shape[0]
        if n == 0:
            return
        if self._n + n > self.max_rows:
            raise InvalidInput(
                f"a bias report takes at most {self.max_rows:,} rows (LATENTWATCH_BIAS_MAX_ROWS); "
                f"this stream sent more"
            )
        if not np.isfinite(mu).all():
            raise InvalidInput("the encoder gave non-finite means for some rows")
        ids = list(ids) if ids else None
        if ids is not None and len(ids) != n:
            raise InvalidInput(f"ids: {len(ids)} given for a chunk of {n} rows")
        first = self._n == 0
        if not first and (ids is None) != (self._ids is None):
            raise InvalidInput("ids: give them with every chunk or with none")
        groups = dict(groups) if groups else {}
        if not first and set(groups) != set(self._groups or {}):
            raise InvalidInput(
                f"group columns must be the same in every chunk: first {sorted(self._groups or {})}"
                f", now {sorted(groups)}"
            )
        for name, values in groups.items():
            if not name:
                raise InvalidInput("group columns need a name")
            if len(values) != n:
                raise InvalidInput(f"group column {name!r}: {len(values)} labels for {n} rows")
        # Every check is done: from here the chunk is taken whole.
        if first:
            self._ids = [] if ids is not None else None
            self._groups = {name: _GroupColumn() for name in groups}
        for name, values in groups.items():
            self._add_group(name, values)
        if ids is not None and self._ids is not None:
            self._ids.extend(str(i) for i in ids)
        self._mu.append(mu)
        self._n += n
        mu64 = mu.astype(np.float64)
        self._sum += mu64.sum(axis=0)
        self._outer += mu64.T @ mu64
        if logvar is not None:
            self._sigma2 += np.exp(np.asarray(logvar, dtype=np.float64)).sum(axis=0)
        np.minimum(self._lo, mu64.min(axis=0), out=self._lo)
        np.maximum(self._hi, mu64.max(axis=0), out=self._hi)

    def _add_group(self, name: str, values: Sequence[str]) -> None:
        assert self._groups is not None
        column = self._groups[name]
        labels = np.asarray([str(v) for v in values])
        uniques, inverse = np.unique(labels, return_inverse=True)
        for u in uniques:
            if str(u) not in column.codes:
                if len(column.codes) >= self.max_group_values:
                    raise InvalidInput(
                        f"group column {name!r} has more than {self.max_group_values} distinct "
                        f"values; group labels should be categories"
                    )
                column.codes[str(u)] = len(column.codes)
        mapping = np.array([column.codes[str(u)] for u in uniques], dtype=np.int32)
        column.blocks.append(mapping[inverse])

    def finish(self, options: BiasOptions, reference: LatentReference | None) -> BiasReport:
        options = options.validated()
        n = self._n
        if n < 2:
            raise InvalidInput(f"a bias report needs at least 2 rows, got {n}")
        if reference is not None and reference.latent_dim != self.latent_dim:
            raise ValueError("the reference's latent width differs from the model's")
        blocks = self._mu
        hist = latent_histograms(blocks, self._lo, self._hi, n, options.bins)
        log_density, log_weight = log_density_and_weight(
            blocks, hist, options.alpha, options.mode
        )
        weight = np.exp(log_weight + np.log(n))  # mean 1; extreme rows may underflow to 0
        k = min(options.top_k, n)
        order = np.argsort(log_density, kind="stable")
        mean = self._sum / n
        cov = (self._outer - n * np.outer(mean, mean)) / (n - 1)
        variance = np.maximum(np.diag(cov) * (n - 1) / n, 0.0)
        groups = self._group_stats(log_density, weight, options)
        farthest = farthest_from_parity(groups)
        worst = None if farthest is None else farthest.representation_ratio
        comparison = drift = None
        if reference is not None:
            comparison = compare_to_reference(blocks, reference, n)
            drift = drift_from_reference(blocks, reference, n, mean, cov)
        return BiasReport(
            n_rows=n,
            latent_dim=self.latent_dim,
            options=options,
            ids=list(self._ids) if self._ids is not None else None,
            log_density=log_density,
            weight=weight,
            effective_sample_size=effective_sample_size(log_weight),
            histograms=[DimensionHistogram(hist.edges(j), hist.counts[j])
                        for j in range(self.latent_dim)],
            sparsest=order[:k].astype(np.int64),
            densest=order[::-1][:k].astype(np.int64),
            groups=groups,
            worst_group_ratio=worst,
            kl_to_prior=kl_to_prior(mean, self._sigma2 / n + variance),
            reference=comparison,
            drift=drift,
            reference_kl_to_prior=None if reference is None else reference.kl_to_prior,
        )

    def _group_stats(
        self, log_density: NDArray, weight: NDArray, options: BiasOptions
    ) -> list[GroupStats]:
        n = self._n
        n_sparse = max(1, int(round(options.sparse_fraction * n)))
        sparse = np.zeros(n, dtype=bool)
        sparse[np.argpartition(log_density, n_sparse - 1)[:n_sparse]] = True
        counts = []
        for name, column in (self._groups or {}).items():
            codes = np.concatenate(column.blocks)
            m = len(column.codes)
            rows = np.bincount(codes, minlength=m)
            sparse_rows = np.bincount(codes[sparse], minlength=m)
            weight_sums = np.bincount(codes, weights=weight, minlength=m)
            for value, code in sorted(column.codes.items(), key=lambda item: item[0]):
                counts.append(GroupCounts(
                    column=name, value=value, n_rows=int(rows[code]),
                    n_sparse_rows=int(sparse_rows[code]), weight_sum=float(weight_sums[code]),
                ))
        return group_stats(counts, n, n_sparse, options.significance_level)
