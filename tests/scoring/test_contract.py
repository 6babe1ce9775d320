"""Input validation against a version's input contract: shapes, datatypes, limits, NaN/Inf."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from latentwatch.errors import InvalidInput
from latentwatch.scoring.contract import (
    MAX_MODEL_ABS,
    InputContract,
    check_finite_scores,
    validate_rows,
)
from latentwatch.scoring.preprocessing import Preprocessing

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


@pytest.mark.parametrize(("bad", "what"), [(np.nan, "NaN"), (np.inf, "infinite"),
                                           (-np.inf, "infinite")])
def test_non_finite_values_are_counted_with_the_first_row_and_column(bad: float, what: str) -> None:
    x = np.zeros((5, 64), np.float32)
    x[3, 7] = x[3, 1] = x[4, 0] = bad
    with pytest.raises(InvalidInput, match=rf"input: 3 values are {what}, the first in row 3, "
                                           r"column 1; every value must be finite$"):
        validate_rows(x, IMAGE)


def test_nan_and_infinite_values_are_told_apart() -> None:
    x = np.zeros((3, 64), np.float32)
    x[1, 2] = np.nan
    x[2, 5] = np.inf
    with pytest.raises(InvalidInput, match=r"1 value is NaN, the first in row 1, column 2; "
                                           r"1 value is infinite, the first in row 2, column 5;"):
        validate_rows(x, IMAGE)


def test_fp64_beyond_the_fp32_range_is_refused_as_such_not_as_nan() -> None:
    x = np.zeros((2, 64))
    x[1, 3] = 1e300
    with pytest.raises(InvalidInput) as caught:
        validate_rows(x, IMAGE)
    message = str(caught.value)
    assert "1 value is beyond the FP32 range (|x| > 3.4e38), the first in row 1, column 3: " \
        "1e+300" in message
    assert "NaN" not in message and "infinite" not in message.split(";")[0]


def test_fp64_within_the_fp32_range_is_cast_without_warnings() -> None:
    x = np.full((2, 64), 3e38)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isfinite(validate_rows(x, IMAGE)).all()


STANDARDIZED = InputContract(
    n_features=3, row_shapes=((3,),), max_request_rows=10,
    preprocessing=Preprocessing(kind="standardize", shift=[0.0, 10.0, 0.0],
                                scale=[1.0, 0.5, 100.0]),
)


def test_values_far_outside_the_training_range_are_refused_before_the_graph() -> None:
    x = np.zeros((4, 3), np.float32)
    x[2, 1] = 1e30
    x[3, 2] = 1e5  # 1e7 standard deviations: the scale counts, not the raw value
    with pytest.raises(InvalidInput) as caught:
        validate_rows(x, STANDARDIZED)
    assert str(caught.value) == (
        f"input: 2 values are far outside the training range (more than {MAX_MODEL_ABS:g} "
        "standard deviations of the training data from it, in 2 rows), the first in row 2, "
        "column 1: 1e+30, 5e+29 after preprocessing; the model cannot give such rows a finite "
        "score"
    )


def test_values_at_the_model_space_bound_are_accepted() -> None:
    x = np.array([[MAX_MODEL_ABS, 10.0 - 2 * MAX_MODEL_ABS, -MAX_MODEL_ABS / 100]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(validate_rows(x, STANDARDIZED), x)


def test_clipped_preprocessing_needs_no_bound() -> None:
    clipped = InputContract(3, ((3,),), 10, Preprocessing(kind="scale", shift=[0.0] * 3,
                                                           scale=[1.0] * 3, clip=(0.0, 1.0)))
    assert validate_rows(np.full((1, 3), 1e30, np.float32), clipped).shape == (1, 3)


def test_non_finite_scores_are_an_error_naming_the_rows() -> None:
    scores = {"kl": np.array([1.0, np.inf, 2.0, np.nan]), "recon": np.array([0.0, 1.0, 2.0, 3.0])}
    with pytest.raises(InvalidInput, match=r"input: 2 rows have no finite score \(kl\): rows 1, "
                                           r"3; their values are too far outside the training"):
        check_finite_scores(scores)
    check_finite_scores({"kl": np.ones(3)})


def test_contract_from_a_tabular_manifest_accepts_only_rows() -> None:
    tabular = InputContract(n_features=5, row_shapes=((5,),), max_request_rows=10)
    assert validate_rows(np.ones((2, 5), np.int32), tabular).shape == (2, 5)
    with pytest.raises(InvalidInput, match=r"expected shape \(N, 5\) of"):
        validate_rows(np.ones((2, 1, 5), np.float32), tabular)


def test_finite_scores_whose_sum_overflows_pass() -> None:
    huge = np.full(4, np.finfo(np.float64).max / 2)  # the sum overflows; every score is finite
    check_finite_scores({"kl": huge, "per_feature": huge.reshape(2, 2)})
    with pytest.raises(InvalidInput, match=r"1 rows have no finite score \(kl\): rows 3;"):
        check_finite_scores({"kl": np.array([*huge[:3], -np.inf])})
