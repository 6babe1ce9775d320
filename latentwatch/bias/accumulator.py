"""BiasAccumulator: encoder means chunk by chunk -> BiasReport (math in latentwatch.bias.density).

The report holds per-row log densities and weights, histograms, the sparsest and densest rows,
group statistics, KL to the prior and drift against the training reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import NDArray

from latentwatch.bias.density import (
    KNN_WEIGHT_FRACTION,
    effective_sample_size,
    knn_log_density,
    knn_log_weights,
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
    GroupCodes,
    GroupCounts,
    GroupStats,
    LabelLimits,
    check_label_chars,
    farthest_from_parity,
    group_stats,
)
from latentwatch.bias.options import BiasOptions
from latentwatch.errors import InvalidInput, quote

__all__ = ["DISPARITY_BAND", "BiasAccumulator", "BiasReport", "DimensionHistogram", "GroupStats"]


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
    # (k, Z) encoder means of the sparsest rows, in `sparsest` order: where Generate samples
    # "more of what this data covers thinly" without the rows being sent again.
    sparsest_latent: NDArray[np.float32] | None = None

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

    def with_sparsest_latent(self, means: NDArray[np.float32]) -> BiasReport:
        return replace(self, sparsest_latent=means)


class BiasAccumulator:
    """Collects encoder means chunk by chunk in bounded memory, then builds the report.

    Per row it keeps the float32 means, the id and one int32 code per group column; the moments
    drift and KL need are running float64 sums. `add` takes a chunk whole; the service takes a
    chunk's labels as it arrives (`add_labels`, so bad labels are refused before its rows are
    encoded) and its means once encoded (`add_means`), in the same order.
    """

    def __init__(
        self, latent_dim: int, *, max_rows: int,
        max_group_values: int = LabelLimits.max_values,
        max_group_columns: int = LabelLimits.max_columns,
        max_label_chars: int = LabelLimits.max_chars,
    ) -> None:
        if latent_dim < 1 or max_rows < 1:
            raise ValueError("latent_dim and max_rows must be positive")
        self.latent_dim = latent_dim
        self.max_rows = max_rows
        self.limits = LabelLimits(max_label_chars, max_group_values, max_group_columns)
        self._mu: list[NDArray[np.float32]] = []
        self._ids: list[str] | None = None
        self._groups: dict[str, GroupCodes] | None = None
        self._labelled = 0  # rows whose ids and labels are taken; means follow
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
        groups: Mapping[str, Sequence[object]] | None = None,
    ) -> None:
        """Takes one chunk's means, ids and labels, every check first: a refused chunk leaves
        nothing behind."""
        mu = self._checked_means(mu)
        self.add_labels(mu.shape[0], ids, groups)
        self._take_means(mu, logvar)

    def add_labels(
        self,
        n: int,
        ids: Sequence[str] | None = None,
        groups: Mapping[str, Sequence[object]] | None = None,
    ) -> None:
        """Takes the ids and group labels of the next `n` rows, or refuses them (InvalidInput)
        and takes none. One dict look-up a row and column: labels seen before are not checked
        again."""
        if n == 0:
            return
        first = self._labelled == 0
        if self._labelled + n > self.max_rows:
            raise InvalidInput(self._too_many_rows())
        id_list = list(map(str, ids)) if ids else None
        if id_list is not None:
            if len(id_list) != n:
                raise InvalidInput(f"ids: {len(id_list)} given for a chunk of {n} rows")
            check_label_chars(id_list, "ids", self._labelled, self.limits.max_chars)
        if not first and (id_list is None) != (self._ids is None):
            raise InvalidInput("ids: give them with every chunk or with none")
        groups = dict(groups) if groups else {}
        if first:
            self._check_columns(groups)
            columns = {name: GroupCodes(name, self.limits) for name in groups}
        else:
            columns = self._groups or {}
            if set(groups) != set(columns):
                lacks, adds = _some(set(columns) - set(groups)), _some(set(groups) - set(columns))
                raise InvalidInput(
                    f"group columns must be the same in every chunk: this one lacks {lacks} and "
                    f"adds {adds}"
                )
        for name, values in groups.items():
            if len(values) != n:
                raise InvalidInput(
                    f"group column {quote(name)}: {len(values)} labels for {n} rows"
                )
        encoded = [columns[name].encode(values, self._labelled) for name, values in groups.items()]
        # Every check is done: from here the labels are taken whole.
        if first:
            self._ids = [] if id_list is not None else None
            self._groups = columns
        for name, (codes, new) in zip(groups, encoded, strict=True):
            columns[name].take(codes, new)
        if id_list is not None and self._ids is not None:
            self._ids.extend(id_list)
        self._labelled += n

    def add_means(self, mu: NDArray, logvar: NDArray | None = None) -> None:
        """Takes the latent means (and log-variances) of the next rows whose labels are taken."""
        mu = self._checked_means(mu)
        if self._n + mu.shape[0] > self._labelled:
            raise ValueError("add_labels for these rows before their means")
        self._take_means(mu, logvar)

    def _check_columns(self, groups: Mapping[str, object]) -> None:
        limits = self.limits
        if len(groups) > limits.max_columns:
            raise InvalidInput(
                f"groups: {len(groups):,} columns; a bias report takes at most "
                f"{limits.max_columns:,} (LATENTWATCH_BIAS_MAX_GROUP_COLUMNS)"
            )
        for name in groups:
            if not name:
                raise InvalidInput("group columns need a name")
            if len(name) > limits.max_chars:
                raise InvalidInput(
                    f"groups: a column name of {len(name):,} characters, {quote(name)}; names "
                    f"may have at most {limits.max_chars:,} (LATENTWATCH_BIAS_MAX_LABEL_CHARS)"
                )

    def _checked_means(self, mu: NDArray) -> NDArray[np.float32]:
        mu = np.asarray(mu, dtype=np.float32)
        if mu.ndim != 2 or mu.shape[1] != self.latent_dim:
            raise InvalidInput(f"expected (n, {self.latent_dim}) latent means, "
                               f"got {list(mu.shape)}")
        if self._n + mu.shape[0] > self.max_rows:
            raise InvalidInput(self._too_many_rows())
        if not np.isfinite(mu).all():
            raise InvalidInput("the encoder gave non-finite means for some rows")
        return mu

    def _too_many_rows(self) -> str:
        return (f"a bias report takes at most {self.max_rows:,} rows (LATENTWATCH_BIAS_MAX_ROWS); "
                f"this stream sent more")

    def _take_means(self, mu: NDArray[np.float32], logvar: NDArray | None) -> None:
        if mu.shape[0] == 0:
            return
        self._mu.append(mu)
        self._n += mu.shape[0]
        mu64 = mu.astype(np.float64)
        self._sum += mu64.sum(axis=0)
        self._outer += mu64.T @ mu64
        if logvar is not None:
            self._sigma2 += np.exp(np.asarray(logvar, dtype=np.float64)).sum(axis=0)
        np.minimum(self._lo, mu64.min(axis=0), out=self._lo)
        np.maximum(self._hi, mu64.max(axis=0), out=self._hi)

    def finish(self, options: BiasOptions, reference: LatentReference | None) -> BiasReport:
        options = options.validated()
        n = self._n
        if n < 2:
            raise InvalidInput(f"a bias report needs at least 2 rows, got {n}")
        if reference is not None and reference.latent_dim != self.latent_dim:
            raise ValueError("the reference's latent width differs from the model's")
        blocks = self._mu
        hist = latent_histograms(blocks, self._lo, self._hi, n, options.bins)
        # The weights come from `mode`; the rows (sparse set, both extremes) rank by `density`.
        log_density, log_weight = log_density_and_weight(
            blocks, hist, options.alpha, "max" if options.mode == "knn" else options.mode
        )
        if options.mode == "knn":
            weight_density = knn_log_density(blocks, n, fraction=KNN_WEIGHT_FRACTION)
            log_weight = knn_log_weights(weight_density, self.latent_dim)
        if options.density == "knn":
            log_density = knn_log_density(blocks, n)
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


def _some(names: set[str], shown: int = 4) -> str:
    """A few of a caller's names for a message, quoted, with how many more there are."""
    if not names:
        return "none"
    first = sorted(names)[:shown]
    more = f" and {len(names) - shown:,} more" if len(names) > shown else ""
    return ", ".join(map(quote, first)) + more
