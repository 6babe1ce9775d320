"""The exact kNN index against a brute-force float64 oracle: neighbours, distances, means."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from latentwatch.scoring import knn
from latentwatch.scoring.knn import KnnIndex


def oracle(reference: NDArray, queries: NDArray, k: int) -> tuple[NDArray, NDArray]:
    """Every pair's float64 distance, sorted by (distance, index): the k first per query."""
    ref = np.asarray(reference, dtype=np.float64)
    d2 = ((np.asarray(queries, dtype=np.float64)[:, None, :] - ref[None]) ** 2).sum(axis=2)
    index = np.stack([np.lexsort((np.arange(ref.shape[0]), row))[:k] for row in d2])
    return index, np.sqrt(np.take_along_axis(d2, index, axis=1))


@st.composite
def problems(draw: st.DrawFn) -> tuple[NDArray, NDArray, int]:
    """Reference and query rows on a small integer grid (exact arithmetic: ties and duplicate
    rows are exact), R across one to several runs of columns, k up to R (beyond RUNS too)."""
    n_rows = draw(st.sampled_from([1, 2, 5, 63, 128, 129, 300, 700]))
    dim = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**32 - 1))
    spread = draw(st.sampled_from([1, 3, 50]))
    rng = np.random.default_rng(seed)
    reference = rng.integers(-spread, spread + 1, (n_rows, dim)).astype(np.float32)
    if n_rows > 4 and draw(st.booleans()):  # many exact duplicates
        reference[: n_rows // 2] = reference[0]
    fresh = rng.integers(-spread - 2, spread + 3, (draw(st.integers(1, 40)), dim))
    queries = np.concatenate([fresh.astype(np.float32), reference[: min(n_rows, 5)]])
    k = draw(st.sampled_from(sorted({1, min(5, n_rows), min(6, n_rows), n_rows,
                                     min(knn.RUNS + 3, n_rows)})))
    return reference, queries, k


@settings(max_examples=60, deadline=None)
@given(problems())
def test_neighbours_and_distances_equal_the_brute_force_oracle(
    problem: tuple[NDArray, NDArray, int],
) -> None:
    reference, queries, k = problem
    index = KnnIndex.build(reference)
    got_index, got_distance = index.neighbours(queries, k)
    want_index, want_distance = oracle(reference, queries, k)
    np.testing.assert_array_equal(got_index, want_index)
    np.testing.assert_array_equal(got_distance, want_distance)
    np.testing.assert_allclose(index.mean_distance(queries, k), want_distance.mean(axis=1),
                               rtol=1e-12, atol=0)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([3, 9, 36, 166]),
       st.sampled_from([200, 1500, 4096]))
def test_real_valued_rows_with_far_outliers_match_the_oracle(
    seed: int, dim: int, n_rows: int
) -> None:
    """Standardised rows, some reference rows far out (large |y|^2: the float32 rounding of
    their products is large) and queries near and far: same neighbours, distances to 1e-12."""
    rng = np.random.default_rng(seed)
    reference = rng.normal(size=(n_rows, dim)).astype(np.float32)
    reference[:3] *= 1e4
    queries = np.concatenate([
        reference[10:20] + rng.normal(scale=1e-4, size=(10, dim)).astype(np.float32),
        rng.normal(size=(30, dim)).astype(np.float32),
        rng.normal(scale=300.0, size=(5, dim)).astype(np.float32),
    ])
    got_index, got_distance = KnnIndex.build(reference).neighbours(queries, 5)
    want_index, want_distance = oracle(reference, queries, 5)
    np.testing.assert_array_equal(got_index, want_index)
    np.testing.assert_allclose(got_distance, want_distance, rtol=1e-12, atol=1e-12)


def test_results_do_not_depend_on_the_batch_a_row_comes_in(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(3000, 10)).astype(np.float32)
    queries = rng.normal(size=(300, 10)).astype(np.float32)
    index = KnnIndex.build(reference)
    whole = index.mean_distance(queries, 5)
    parts = np.concatenate([index.mean_distance(queries[i : i + 7], 5) for i in range(0, 300, 7)])
    monkeypatch.setattr(knn, "BLOCK_VALUES", 3000 * 3)  # three query rows per product
    np.testing.assert_array_equal(whole, parts)
    np.testing.assert_array_equal(whole, index.mean_distance(queries, 5))


def test_leave_one_out_skips_each_reference_row_itself() -> None:
    rng = np.random.default_rng(2)
    reference = rng.normal(size=(500, 4)).astype(np.float32)
    _, distances = oracle(reference, reference, 4)
    np.testing.assert_allclose(
        KnnIndex.build(reference).mean_distance(reference, 3, exclude_self=True),
        distances[:, 1:].mean(axis=1), rtol=1e-12,
    )


def test_non_finite_and_huge_queries() -> None:
    """A NaN or inf row gets no neighbours (inf); a row too large for float32 squares is
    searched in float64 and still exact; the other rows are unaffected."""
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(400, 6)).astype(np.float32)
    queries = rng.normal(size=(6, 6))
    queries[1, 2] = np.nan
    queries[2, 0] = np.inf
    queries[3] = 1e20
    index = KnnIndex.build(reference)
    got_index, got_distance = index.neighbours(queries, 5)
    assert (got_index[1:3] == -1).all() and np.isinf(got_distance[1:3]).all()
    finite = [0, 3, 4, 5]
    want_index, want_distance = oracle(reference, queries[finite], 5)
    np.testing.assert_array_equal(got_index[finite], want_index)
    np.testing.assert_allclose(got_distance[finite], want_distance, rtol=1e-12)
    means = index.mean_distance(queries, 5)
    assert np.isinf(means[1:3]).all()
    np.testing.assert_allclose(means[finite], want_distance.mean(axis=1), rtol=1e-12)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        KnnIndex.build(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="R > 0"):
        KnnIndex.build(np.zeros((0, 3)))
    index = KnnIndex.build(np.zeros((4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        index.neighbours(np.zeros((2, 2)), 1)
    with pytest.raises(ValueError, match="k must be"):
        index.neighbours(np.zeros((2, 3)), 5)


def test_rows_far_from_the_origin_where_float32_products_cannot_rank_them() -> None:
    """A cluster of rows 0.01 apart, 1,000 from the origin: the float32 products' rounding
    (about 0.06) is far above the squared distances (about 1e-4), so only the rounding margin
    keeps the true neighbours among the candidates; the float64 recompute ranks them."""
    rng = np.random.default_rng(4)
    centre = np.full(8, 1000.0 / np.sqrt(8))
    reference = (centre + rng.normal(scale=0.01, size=(2000, 8))).astype(np.float32)
    queries = (centre + rng.normal(scale=0.01, size=(50, 8))).astype(np.float32)
    got_index, got_distance = KnnIndex.build(reference).neighbours(queries, 5)
    want_index, want_distance = oracle(reference, queries, 5)
    np.testing.assert_array_equal(got_index, want_index)
    np.testing.assert_allclose(got_distance, want_distance, rtol=1e-12)


def test_an_index_puts_blas_on_one_thread_for_every_thread_of_the_process() -> None:
    """After a build, BLAS runs one thread, seen from any thread, and searches from several
    threads at once give the results of one."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import ThreadpoolController

    def blas_threads() -> list[int]:
        return [lib["num_threads"] for lib in ThreadpoolController().info()
                if lib["user_api"] == "blas"]

    rng = np.random.default_rng(5)
    index = KnnIndex.build(rng.normal(size=(2000, 7)).astype(np.float32))
    queries = rng.normal(size=(64, 7)).astype(np.float32)
    want = index.mean_distance(queries, 5)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: (index.mean_distance(queries, 5), blas_threads()),
                                range(20)))
    for got, threads in results:
        np.testing.assert_array_equal(got, want)
        assert threads and set(threads) == {1}
    assert set(blas_threads()) == {1}


def test_a_reference_row_too_large_for_float32_squares_and_an_empty_batch() -> None:
    rng = np.random.default_rng(6)
    reference = rng.normal(size=(300, 4))
    reference[5] = 1e20  # |y|^2 = 4e40: beyond float32
    queries = np.concatenate([rng.normal(size=(10, 4)), reference[5:6] + 1.0])
    index = KnnIndex.build(reference)
    got_index, got_distance = index.neighbours(queries, 3)
    want_index, want_distance = oracle(reference, queries, 3)
    np.testing.assert_array_equal(got_index, want_index)
    np.testing.assert_allclose(got_distance, want_distance, rtol=1e-12)
    assert got_index[-1, 0] == 5
    empty = index.neighbours(np.zeros((0, 4)), 3)
    assert empty[0].shape == (0, 3) and empty[1].shape == (0, 3)
    assert index.mean_distance(np.zeros((0, 4)), 3).shape == (0,)
