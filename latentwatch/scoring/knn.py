"""Exact k-nearest-neighbour search over a fixed reference set, built once, queried per batch.

The second stage's kNN statistic asks, for every row of a batch, for the mean Euclidean distance
to its k nearest reference rows. A (B, R) distance matrix with a per-row partition costs far
more than a small tabular scorer graph; the index keeps the matrix but touches it twice:

- build (once per loaded version): the reference rows are put in k-d tree order, so that each
  of L equal column blocks holds rows of one small region, and stored as [-2y, |y|^2] in
  float32, so that one BLAS product gives |y|^2 - 2x.y (the squared distance less |x|^2).
- query, a few rows at a time (the block stays in cache): the product; each block's minimum;
  the k-th smallest of those L minima bounds the row's k-th distance from above (k distinct
  rows lie within it) without a sort. Only blocks whose minimum is within the bound (plus the
  float32 rounding bound) are scanned for candidates, usually a few of the L.
- the candidates' distances are recomputed in float64 and the k smallest taken (ties by
  reference index), so neighbours and distances equal a brute-force float64 search:
  distance = sqrt(sum((x - y)^2)) over float64 copies of the rows.

Numpy only. BLAS runs on one thread while it searches: ONNX Runtime's threads own the cores,
and on a busy machine a multi-threaded BLAS call of this size runs many times slower.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

# At most 2**MAX_DEPTH column blocks of at least MIN_BLOCK_ROWS rows each.
MAX_DEPTH = 6
MIN_BLOCK_ROWS = 32
# Query rows per product: about this many float32 distances at once (1 MiB, cache-sized).
BLOCK_VALUES = 1 << 18
_EPS32 = float(np.finfo(np.float32).eps)
# |y|^2 of the padding rows that fill the last places of short blocks: never within a bound.
_PAD_SQ = np.float32(1e38)
_BLAS = ThreadpoolController()


@dataclass(frozen=True, eq=False)
class KnnIndex:
    """An exact kNN index over reference rows (R, D); see the module docstring."""

    reference: NDArray[np.float64]  # (R, D) the rows, as given (order of the indices)
    order: NDArray[np.int64]  # (L * W,) reference index at each column; padding: -1
    weights: NDArray[np.float32]  # (L * W, D + 1) rows [-2y, |y|^2] in column order
    n_blocks: int  # L
    max_ref_sq: float  # largest |y|^2
    _scratch: threading.local = field(default_factory=threading.local)

    @classmethod
    def build(cls, reference: NDArray[np.floating]) -> KnnIndex:
        ref = np.asarray(reference, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[0] == 0 or not np.isfinite(ref).all():
            raise ValueError(f"reference must be finite (R, D) with R > 0, got {ref.shape}")
        n_rows, dim = ref.shape
        depth = int(np.clip(np.floor(np.log2(max(n_rows / MIN_BLOCK_ROWS, 1.0))), 0, MAX_DEPTH))
        blocks = _kd_blocks(ref, np.arange(n_rows), depth)
        width = max(len(b) for b in blocks)
        order: NDArray[np.int64] = np.full((len(blocks), width), -1, dtype=np.int64)
        for i, block in enumerate(blocks):
            order[i, : len(block)] = block
        order = order.reshape(-1)
        ref_sq = np.einsum("rd,rd->r", ref, ref)
        weights = np.zeros((order.size, dim + 1), dtype=np.float32)
        real = order >= 0
        weights[real, :dim] = -2.0 * ref[order[real]]
        weights[real, dim] = ref_sq[order[real]]
        weights[~real, dim] = _PAD_SQ
        return cls(ref, order, weights, len(blocks), float(ref_sq.max()))

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
        queries = np.asarray(queries)
        if queries.ndim != 2 or queries.shape[1] != self.n_features:
            raise ValueError(f"queries must be (B, {self.n_features}), got {queries.shape}")
        if not 1 <= k <= self.n_rows:
            raise ValueError(f"k must be in [1, {self.n_rows}], got {k}")
        q = queries.astype(np.float64)
        # Rows too large for float32 squares (or not finite) take the float64 search.
        q_sq = np.einsum("bd,bd->b", q, q)
        fast = q_sq < 1e30
        index = np.full((q.shape[0], k), -1, dtype=np.int64)
        d2 = np.full((q.shape[0], k), np.inf)
        if fast.all():
            index, d2 = self._search(q, q_sq, k)
        elif fast.any():
            index[fast], d2[fast] = self._search(q[fast], q_sq[fast], k)
        slow = ~fast & np.isfinite(q_sq)
        if slow.any():
            index[slow], d2[slow] = self._brute_force(q[slow], k)
        return index, np.sqrt(d2)

    def mean_distance(
        self, queries: NDArray[np.floating], k: int, exclude_self: bool = False
    ) -> NDArray[np.float64]:
        """(B,) mean distance to the k nearest reference rows. With `exclude_self` the queries
        are reference rows and each one's nearest (itself, at distance 0) is skipped."""
        skip = 1 if exclude_self else 0
        _, distances = self.neighbours(queries, k + skip)
        return distances[:, skip:].mean(axis=1)

    def _search(self, q: NDArray[np.float64], q_sq: NDArray[np.float64],
                k: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        n, columns, dim = q.shape[0], self.order.size, self.n_features
        n_blocks, width = self.n_blocks, columns // self.n_blocks
        step = max(1, min(n, BLOCK_VALUES // columns))
        # float32 rounding of x.[-2y, |y|^2]: dot products of D + 1 terms and the query's own
        # rounding, at most (D + 4) eps (|x|^2 + 2 |y|^2); counted twice, since the bound and
        # each candidate are both rounded.
        slack = 2.0 * (dim + 4) * _EPS32 * (q_sq + 2.0 * self.max_ref_sq)
        aug, products = self._buffers(step, columns)
        found_rows, found_cols = [], []
        with _BLAS.limit(limits=1, user_api="blas"):
            for start in range(0, n, step):
                stop = min(start + step, n)
                b = stop - start
                aug[:b, :dim] = q[start:stop]
                d2 = products[:b]
                np.matmul(aug[:b], self.weights.T, out=d2)  # (b, L * W): |y|^2 - 2 x.y
                by_block = d2.reshape(b, n_blocks, width)
                minima = by_block.min(axis=2)  # (b, L)
                if n_blocks >= k:
                    bound = np.partition(minima, k - 1, axis=1)[:, k - 1]
                else:  # fewer blocks than k: the k-th of the whole row
                    bound = np.partition(d2, k - 1, axis=1)[:, k - 1]
                limit = bound + slack[start:stop]
                rows, blocks = np.nonzero(minima <= limit[:, None])
                hits, places = np.nonzero(by_block[rows, blocks] <= limit[rows, None])
                found_rows.append(rows[hits] + start)
                found_cols.append(blocks[hits] * width + places)
        rows = np.concatenate(found_rows)
        index = self.order[np.concatenate(found_cols)]
        diff = self.reference[index] - q[rows]
        return _top_k(rows, index, np.einsum("nd,nd->n", diff, diff), n, k)

    def _brute_force(self, q: NDArray[np.float64],
                     k: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Every distance in float64, for the few rows whose squares float32 cannot hold."""
        d2 = np.stack([((self.reference - row) ** 2).sum(axis=1) for row in q])  # (b, R)
        n, n_ref = d2.shape
        return _top_k(np.repeat(np.arange(n), n_ref), np.tile(np.arange(n_ref), n),
                      d2.reshape(-1), n, k)

    def _buffers(self, rows: int, columns: int) -> tuple[NDArray[np.float32],
                                                         NDArray[np.float32]]:
        """This thread's scratch: queries as [x, 1] (rows, D + 1) and products (rows, L * W)."""
        scratch = self._scratch
        if getattr(scratch, "rows", 0) < rows:
            scratch.aug = np.ones((rows, self.n_features + 1), dtype=np.float32)
            scratch.products = np.empty((rows, columns), dtype=np.float32)
            scratch.rows = rows
        return scratch.aug, scratch.products


def _top_k(
    query: NDArray[np.intp], index: NDArray[np.int64], d2: NDArray[np.float64], n: int, k: int
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The k smallest (d2, index) candidates of each of n queries; every query has >= k."""
    order = np.lexsort((index, d2, query))
    start = np.searchsorted(query[order], np.arange(n))
    take = order[start[:, None] + np.arange(k)]  # (n, k)
    return index[take], d2[take]


def _kd_blocks(ref: NDArray[np.float64], rows: NDArray[np.int64], depth: int) -> list[NDArray]:
    """2**depth blocks of rows (sizes differ by at most one), split in halves along the widest
    coordinate: each block a compact region."""
    if depth == 0:
        return [rows]
    values = ref[rows]
    dim = int(np.argmax(values.max(axis=0) - values.min(axis=0)))
    half = len(rows) // 2
    order = np.argpartition(values[:, dim], half) if half else np.arange(len(rows))
    return (_kd_blocks(ref, rows[order[:half]], depth - 1)
            + _kd_blocks(ref, rows[order[half:]], depth - 1))
