"""Input validation against a version's input contract: shapes, datatypes, limits, NaN/Inf."""

from __future__ import annotations

import numpy as np
import pytest

from latentwatch.errors import InvalidInput
from latentwatch.scoring.contract import InputContract, validate_rows

IMAGE = InputContract(n_features=64, row_shapes=((64,), (1, 8, 8), (8, 8)), max_request_rows=100)


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
