"""Conformal p-values, Benjamini-Hochberg and input validation against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest

from latentwatch.errors import InvalidInput
from latentwatch.scoring.contract import (
    InputContract,
    benjamini_hochberg,
    check_alpha,
    check_fdr,
    p_values,
    resolve_kinds,
    validate_rows,
)

IMAGE = InputContract(n_features=64, row_shapes=((64,), (1, 8, 8), (8, 8)), max_request_rows=100)


def brute_force_p(calibration: np.ndarray, s: float) -> float:
    return (1 + sum(1 for c in calibration if c >= s)) / (len(calibration) + 1)


def brute_force_bh(p: np.ndarray, level: float) -> np.ndarray:
    m = len(p)
    ranked = sorted(p)
    k = max((i for i in range(1, m + 1) if ranked[i - 1] <= level * i / m), default=0)
    return np.array([k > 0 and x <= ranked[k - 1] for x in p])


@pytest.mark.parametrize("seed", range(5))
def test_p_values_equal_a_brute_force_count(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Integer-valued scores make ties with the calibration set common.
    calibration = rng.integers(0, 20, size=rng.integers(1, 60)).astype(np.float64)
    scores = np.concatenate([rng.integers(-2, 23, size=40), calibration[:5]]).astype(np.float32)
    p = p_values(np.sort(calibration), scores)
    expected = [brute_force_p(calibration, float(s)) for s in scores]
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-15)
    n = len(calibration)
    assert p.min() >= 1 / (n + 1) and p.max() <= 1.0


def test_p_value_extremes() -> None:
    calibration = np.array([1.0, 2.0, 3.0])
    p = p_values(calibration, np.array([-1e30, 2.0, 1e30]))
    np.testing.assert_array_equal(p, [1.0, 0.75, 0.25])  # never 0, never above 1


@pytest.mark.parametrize("level", [0.01, 0.05, 0.1, 0.3])
@pytest.mark.parametrize("seed", range(4))
def test_benjamini_hochberg_equals_brute_force(level: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    # Discrete conformal-like p-values (ties) mixed with small ones (discoveries).
    p = np.concatenate([(1 + rng.integers(0, 99, 30)) / 100, rng.uniform(0, 0.01, 10)])
    rng.shuffle(p)
    rejected, threshold = benjamini_hochberg(p, level)
    expected = brute_force_bh(p, level)
    np.testing.assert_array_equal(rejected, expected)
    assert threshold == (p[expected].max() if expected.any() else 0.0)


def test_benjamini_hochberg_rejects_nothing_when_nothing_is_small() -> None:
    rejected, threshold = benjamini_hochberg(np.array([0.5, 0.9, 0.7]), 0.05)
    assert not rejected.any() and threshold == 0.0


def test_alpha_must_be_resolvable_by_the_calibration_set() -> None:
    assert check_alpha(0.01, 99) == 0.01  # 1 / (99 + 1) is just enough
    with pytest.raises(InvalidInput, match="at least 999 rows"):
        check_alpha(0.001, 99)
    with pytest.raises(InvalidInput, match="at least 101 rows"):
        check_alpha(0.0099, 99)


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_alpha_outside_the_unit_interval_is_refused(alpha: float) -> None:
    with pytest.raises(InvalidInput, match=r"alpha must be in \(0, 1\)"):
        check_alpha(alpha, 1000)


@pytest.mark.parametrize("level", [0.0, 1.0, -1.0, math.nan])
def test_fdr_outside_the_unit_interval_is_refused(level: float) -> None:
    with pytest.raises(InvalidInput, match=r"fdr must be in \(0, 1\)"):
        check_fdr(level)


def test_score_kinds() -> None:
    available = ["neg_elbo", "iwae_nll", "kl"]
    assert resolve_kinds([], available) == ()
    assert resolve_kinds(["*"], available) == tuple(available)
    assert resolve_kinds(["kl", "neg_elbo", "kl"], available) == ("kl", "neg_elbo")
    with pytest.raises(InvalidInput, match=r"\['bogus'\].*neg_elbo.*iwae_nll.*kl"):
        resolve_kinds(["kl", "bogus"], available)


def test_every_accepted_shape_gives_the_same_rows() -> None:
    x = np.arange(3 * 64, dtype=np.float32).reshape(3, 64)
    for shaped in (x, x.reshape(3, 1, 8, 8), x.reshape(3, 8, 8)):
        rows = validate_rows(shaped, IMAGE)
        assert rows.dtype == np.float32 and rows.flags.c_contiguous
        np.testing.assert_array_equal(rows, x)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int64, np.int8, np.uint8, np.uint32])
def test_numeric_datatypes_are_cast_to_fp32(dtype: type) -> None:
    x = np.arange(2 * 64).reshape(2, 64) % 7
    rows = validate_rows(x.astype(dtype), IMAGE)
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, x.astype(np.float32))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (
            np.zeros((3, 65), np.float32),
            r"expected shape \(N, 64\) or \(N, 1, 8, 8\) or \(N, 8, 8\) "
            r"of a numeric datatype, got \[3, 65\] FP32",
        ),
        (np.zeros(64, np.float32), r"got \[64\] FP32"),
        (np.zeros((2, 2, 8, 8), np.float32), r"got \[2, 2, 8, 8\]"),
        (np.zeros((3, 64), bool), r"numeric datatype, got \[3, 64\] BOOL"),
        (np.zeros((0, 64), np.float32), r"no rows"),
        (np.zeros((101, 64), np.float32), r"101 rows is more than the 100"),
    ],
)
def test_bad_inputs_say_what_was_expected(array: np.ndarray, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        validate_rows(array, IMAGE)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_counted_with_the_first_row(bad: float) -> None:
    x = np.zeros((5, 64), np.float32)
    x[3, 1] = x[3, 7] = x[4, 0] = bad
    with pytest.raises(InvalidInput, match=r"3 values are NaN or infinite.*first in row 3"):
        validate_rows(x, IMAGE)


def test_fp64_beyond_the_fp32_range_is_refused() -> None:
    x = np.zeros((2, 64))
    x[1, 0] = 1e300
    with pytest.raises(InvalidInput, match="first in row 1"):
        validate_rows(x, IMAGE)


def test_contract_from_a_tabular_manifest_accepts_only_rows() -> None:
    tabular = InputContract(n_features=5, row_shapes=((5,),), max_request_rows=10)
    assert validate_rows(np.ones((2, 5), np.int32), tabular).shape == (2, 5)
    with pytest.raises(InvalidInput, match=r"expected shape \(N, 5\) of"):
        validate_rows(np.ones((2, 1, 5), np.float32), tabular)
