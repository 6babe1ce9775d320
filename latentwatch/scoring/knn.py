"""Exact k-nearest-neighbour search over a fixed reference set, built once, queried per batch.

The second stage's kNN statistic asks, for every row of a batch, for the mean Euclidean distance
to its k nearest reference rows. The first version computed a (B, R) float32 distance matrix and
partitioned every row of it (np.partition), which cost 6-16x a small tabular scorer graph. The
index, built once per loaded version, keeps the dense product (BLAS is the cheapest way to get
R distances per row) but touches the matrix twice and sorts nothing of its size:

- the reference rows are stored as [-2y, |y|^2] in float32, so one product with [x, 1] gives
  |y|^2 - 2x.y for every pair (the squared distance less |x|^2), a few query rows at a time so
  the product stays in cache;
- the columns form RUNS interleaved runs; the k-th smallest of the runs' minima bounds the row's
  k-th distance from above (k distinct rows lie within it), with a partition of RUNS values;
- only the runs whose minimum is within that bound (allowing for float32 rounding, below) are
  read again for candidates: a few runs per row;
- the candidates' distances are recomputed in float64 and the k smallest taken (ties by
  reference index), so neighbours and distances equal a brute-force float64 search,
  distance = sqrt(sum((x - y)^2)) over float64 copies of the rows. Being exact per row, the
  result never depends on the batch a row came in.

Rounding: a float32 product of D + 1 terms errs by at most g (|x|^2 + 2 |y|^2), g = (D + 4) eps
(generous: the dot product's own bound, the rounding of x and of |y|^2). The stored |y|^2 is
lowered by 3 g |y|^2, so a product never exceeds the true value by more than g |x|^2, whatever
|y|: a row among the k nearest has a product within T + g |x|^2, T being any bound on the true
k-th value. From the k-th smallest minimum m, T = (m + 21 g |x|^2) / (1 - 10 g) (the k rows
behind m lie within sqrt(2) (|x| + their distance) of the origin). So the margin grows with the
query's norm only, not with the largest reference row's.

Trees do not pay here: on the narrow ADBench sets (9-10 features, 8,192 reference rows) the
k-nearest ball of a row meets about 24 of 256 k-d leaves and 5-7 of 8 subtrees, so pruning
saves little and costs per-leaf work that numpy does slowly. Building an index puts numpy's
BLAS on one thread for the process (use_one_blas_thread): ONNX Runtime's threads own the cores,
and on a busy machine a two-thread BLAS product of this size ran 10-30x slower than one thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import threadpoolctl
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

RUNS = 128  # interleaved column runs whose minima bound the k-th distance
# Products of at most this many float32 values at once (1 MiB, cache-sized): queries are chunked.
BLOCK_VALUES = 1 << 18
_EPS32 = float(np.finfo(np.float32).eps)
_PAD_SQ = 1e38  # |y|^2 of padding rows (R rounded up to a multiple of RUNS): never a candidate
_FLOAT32_SAFE_SQ = 1e30  # larger |x|^2 (or non-finite) rows take the float64 search
_blas_lock = threading.Lock()
_blas_limited = False

Candidates = tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]  # query, row, d2


@dataclass(frozen=True, eq=False)
class KnnIndex:
    """An exact kNN index over reference rows (R, D); see the module docstring."""

    reference: NDArray[np.float64]  # (R, D)
    weights: NDArray[np.float32]  # (R', D + 1) rows [-2y, (1 - 3g) |y|^2], R' = RUNS * run
    rounding: float  # g of the module docstring
    float32_safe: bool  # False: a reference row too large for float32 squares, all float64
    _scratch: threading.local = field(default_factory=threading.local)

    @classmethod
    def build(cls, reference: NDArray[np.floating]) -> KnnIndex:
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[0] == 0 or not np.isfinite(ref).all():
            raise ValueError(f"reference must be finite (R, D) with R > 0, got {ref.shape}")
        n_rows, dim = ref.shape
        runs = min(RUNS, n_rows)
        weights = np.zeros((-(-n_rows // runs) * runs, dim + 1), dtype=np.float32)
        rounding = (dim + 4) * _EPS32
        weights[:n_rows, :dim] = -2.0 * ref
        ref_sq = np.einsum("rd,rd->r", ref, ref)
        weights[:n_rows, dim] = (1.0 - 3.0 * rounding) * np.minimum(ref_sq, _FLOAT32_SAFE_SQ)
        weights[n_rows:, dim] = _PAD_SQ
        use_one_blas_thread()
        return cls(ref, weights, rounding, bool(ref_sq.max() < _FLOAT32_SAFE_SQ))

    @property
    def n_rows(self) -> int:
        return int(self.reference.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.reference.shape[1])

    def neighbours(
        self, queries: NDArray[np.floating], k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(indices (B, k), distances (B, k)): each query's k nearest reference rows, nearest
        first, ties by index. A query with a non-finite value gets index -1 and distance inf."""
        rows, index, d2, valid = self._candidates(queries, k)
        out_index = np.full((valid.size, k), -1, dtype=np.int64)
        out_d2 = np.full((valid.size, k), np.inf)
        out_index[valid], out_d2[valid] = _top_k(rows, index, d2, int(valid.sum()), k)
        return out_index, np.sqrt(out_d2)

    def mean_distance(
        self, queries: NDArray[np.floating], k: int, exclude_self: bool = False
    ) -> NDArray[np.float64]:
        """(B,) mean distance to the k nearest reference rows (inf for a query with a
        non-finite value). With `exclude_self` the queries are reference rows and each one's
        nearest (itself, at distance 0) is skipped."""
        skip = 1 if exclude_self else 0
        rows, _, d2, valid = self._candidates(queries, k + skip)
        nearest = np.sort(_smallest(rows, d2, int(valid.sum()), k + skip), axis=1)
        out = np.full(valid.size, np.inf)
        out[valid] = np.sqrt(nearest[:, skip:]).mean(axis=1)
        return out

    def _candidates(
        self, queries: NDArray[np.floating], k: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64], NDArray[np.bool_]]:
        """(query, reference index, exact d2) candidates, at least k per valid query and
        among them its k nearest; queries numbered among the valid (finite) ones."""
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.n_features:
            raise ValueError(f"queries must be (B, {self.n_features}), got {queries.shape}")
        if not 1 <= k <= self.n_rows:
            raise ValueError(f"k must be in [1, {self.n_rows}], got {k}")
        q = queries.astype(np.float64)
        q_sq = np.einsum("bd,bd->b", q, q)
        fast = (q_sq < _FLOAT32_SAFE_SQ) & self.float32_safe  # False for NaN and inf too
        if fast.all() and q.shape[0]:
            return (*self._search(q, q_sq, k), fast)
        valid = np.isfinite(q_sq)
        q, q_sq, fast = q[valid], q_sq[valid], fast[valid]
        found = []
        for subset, search in ((fast, self._search), (~fast, self._brute_force)):
            if subset.any():
                at = np.flatnonzero(subset)
                rows, index, d2 = search(q[at], q_sq[at], k)
                found.append((at[rows], index, d2))
        if not found:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0), valid
        rows, index, d2 = (np.concatenate(parts) for parts in zip(*found, strict=True))
        return rows, index, d2, valid

    def _search(self, q: NDArray[np.float64], q_sq: NDArray[np.float64], k: int) -> Candidates:
        n, dim = q.shape
        columns = self.weights.shape[0]
        runs = min(RUNS, self.n_rows)
        run = columns // runs
        margin = self.rounding * q_sq  # g |x|^2: see the module docstring
        aug = np.ones((n, dim + 1), dtype=np.float32)
        aug[:, :dim] = q
        step = max(1, min(n, BLOCK_VALUES // columns))
        found_rows, found_cols = [], []
        for start in range(0, n, step):
            stop = min(start + step, n)
            products = self._products(columns, stop - start)
            np.matmul(self.weights, aug[start:stop].T, out=products)  # (R', b)
            by_run = products.reshape(run, runs, stop - start)  # run r: columns r + runs i
            minima = by_run.min(axis=0)  # (runs, b)
            # (b, runs) rows partition faster; fewer runs than k: the k-th of every column
            m = np.partition((minima if runs >= k else products).T.copy(), k - 1,
                             axis=1)[:, k - 1]
            g = margin[start:stop]
            limit = (m + 21.0 * g) / (1.0 - 10.0 * self.rounding) + g  # (b,)
            runs_hit, rows_hit = np.nonzero(minima <= limit)
            values = by_run[:, runs_hit, rows_hit]  # (run, P): the runs within the limit
            place, pair = np.divmod(np.flatnonzero(values <= limit[rows_hit]), runs_hit.size)
            found_rows.append(rows_hit[pair] + start)
            found_cols.append(runs_hit[pair] + runs * place)
        rows = np.concatenate(found_rows)
        index = np.concatenate(found_cols)
        if columns > self.n_rows:  # padding columns, only under an absurd limit
            real = index < self.n_rows
            rows, index = rows[real], index[real]
        diff = self.reference[index] - q[rows]
        return rows, index, np.einsum("nd,nd->n", diff, diff)

    def _products(self, rows: int, columns: int) -> NDArray[np.float32]:
        """This thread's (rows, columns) float32 scratch matrix, kept between batches."""
        buffer = getattr(self._scratch, "products", None)
        if buffer is None or buffer.size < rows * columns:
            buffer = self._scratch.products = np.empty(rows * columns, dtype=np.float32)
        return buffer[: rows * columns].reshape(rows, columns)

    def _brute_force(self, q: NDArray[np.float64], q_sq: NDArray[np.float64],
                     k: int) -> Candidates:
        """Every reference row, for the few queries whose squares float32 cannot hold."""
        d2 = np.stack([((self.reference - row) ** 2).sum(axis=1) for row in q])  # (b, R)
        n, n_ref = d2.shape
        return (np.repeat(np.arange(n), n_ref), np.tile(np.arange(n_ref), n), d2.reshape(-1))


def use_one_blas_thread() -> None:
    """numpy's BLAS on one thread from now on, in this whole process (once; idempotent).

    OpenBLAS keeps one thread pool per process, so a limit cannot be scoped to one search
    when searches run in several threads (threadpoolctl lets one thread control it at a time);
    and a process that serves kNN statistics wants one BLAS thread anyway."""
    global _blas_limited
    with _blas_lock:
        if not _blas_limited:
            ThreadpoolController().limit(limits=1, user_api="blas")
            # Let any thread of the process set limits later (threadpoolctl gives control of
            # OpenBLAS to the thread that set it last, until cleared).
            threadpoolctl.OpenBLASController.clear_controlling_thread(force=True)
            _blas_limited = True


def _top_k(
    query: NDArray[np.int64], index: NDArray[np.int64], d2: NDArray[np.float64], n: int, k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The k smallest (d2, index) candidates of each of n queries; every query has >= k."""
    order = np.lexsort((index, d2, query))
    start = np.searchsorted(query[order], np.arange(n))
    take = order[start[:, None] + np.arange(k)]  # (n, k)
    return index[take], d2[take]


def _smallest(query: NDArray[np.int64], d2: NDArray[np.float64], n: int,
              k: int) -> NDArray[np.float64]:
    """(n, k) the k smallest d2 of each of n queries (any order); every query has >= k."""
    if n == 0:
        return np.zeros((0, k))
    order = np.argsort(query.astype(np.int32 if n >= 1 << 15 else np.int16), kind="stable")
    query, d2 = query[order], d2[order]
    counts = np.bincount(query, minlength=n)
    place = np.arange(query.size) - (np.cumsum(counts) - counts)[query]
    table = np.full((n, int(counts.max())), np.inf)
    table[query, place] = d2
    return np.partition(table, k - 1, axis=1)[:, :k] if table.shape[1] > k else table
