"""The input contract of a model version and the validation of rows against it (numpy only).

Every check on the values of a request lives here, before any graph runs: NaN, infinities, FP64
values beyond the FP32 range, and values so far outside the training range in model space that
the graphs would overflow (`MAX_MODEL_ABS`). `check_finite_scores` is the safety net after
scoring, so that no NaN or infinite score ever leaves the service.
Conformal p-values and BH live in scoring/conformal.py, score kinds in scoring/pipeline.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput
from latentwatch.repository.manifest import Manifest
from latentwatch.scoring.preprocessing import Preprocessing
from latentwatch.wire.tensors import v2_name

# The largest |x_model| (after the version's preprocessing: standard deviations of the training
# data for `standardize`, training spans for unclipped `scale`) a row may carry. Far beyond any
# real deviation, and far below where float32 arithmetic in the graphs overflows (squares of
# 1e6 times a few hundred features stay below 1e15).
MAX_MODEL_ABS = 1e6
FP32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class InputContract:
    """What a model version accepts: rows (N, F) or, for image models, (N, *image) shapes."""

    n_features: int
    row_shapes: tuple[tuple[int, ...], ...]  # accepted shapes without the batch axis
    max_request_rows: int
    # The version's preprocessing, for the model-space bound; None: no bound beyond FP32.
    preprocessing: Preprocessing | None = None

    @classmethod
    def from_manifest(cls, manifest: Manifest, max_request_rows: int) -> InputContract:
        shapes: list[tuple[int, ...]] = [(manifest.n_features,)]
        image = manifest.input.image_shape
        if image:
            shapes.append(tuple(image))
            if len(image) == 3 and image[0] == 1:  # one channel: (N, H, W) too
                shapes.append(tuple(image[1:]))
        return cls(
            manifest.n_features, tuple(shapes), max_request_rows, manifest.input.preprocessing
        )

    @property
    def expected(self) -> str:
        shapes = " or ".join("(" + ", ".join(["N", *map(str, s)]) + ")" for s in self.row_shapes)
        return f"expected shape {shapes} of a numeric datatype"


def _first(bad: NDArray[np.bool_]) -> tuple[int, int]:
    """(row, column) of the first True of an (N, F) mask, in row-major order."""
    row, column = np.unravel_index(int(np.argmax(bad)), bad.shape)
    return int(row), int(column)


def _count(n: int, what: str) -> str:
    return f"1 value is {what}" if n == 1 else f"{n} values are {what}"


def _value_problems(rows: NDArray) -> list[str]:
    """What is wrong with the values of (N, F) rows of any float datatype, one phrase per kind."""
    # One reduction answers the common case: a float64 sum of FP16/FP32 values is finite exactly
    # when every value is (it cannot overflow), and an FP64 maximum |x| within the FP32 range
    # is finite too (NaN compares False). Only rows that fail it are searched.
    if rows.dtype.itemsize <= 4:
        if np.isfinite(rows.sum(dtype=np.float64)):
            return []
    elif np.abs(rows).max() <= FP32_MAX:
        return []
    problems = []
    nan = np.isnan(rows)
    if nan.any():
        row, column = _first(nan)
        problems.append(f"{_count(int(nan.sum()), 'NaN')}, the first in row {row}, "
                        f"column {column}")
    inf = np.isinf(rows)
    if inf.any():
        row, column = _first(inf)
        problems.append(f"{_count(int(inf.sum()), 'infinite')}, the first in row {row}, "
                        f"column {column}")
    if rows.dtype.itemsize > 4:  # FP64 can hold finite values that FP32 cannot
        beyond = np.isfinite(rows) & (np.abs(rows) > FP32_MAX)
        if beyond.any():
            row, column = _first(beyond)
            problems.append(
                f"{_count(int(beyond.sum()), 'beyond the FP32 range (|x| > 3.4e38)')}, the "
                f"first in row {row}, column {column}: {float(rows[row, column]):.3g}"
            )
    return problems


def _model_space_problem(rows: NDArray[np.float32], preprocessing: Preprocessing) -> str:
    """A phrase when some value lies beyond MAX_MODEL_ABS after the preprocessing, else ''."""
    if preprocessing.clip is not None:  # clipped values are bounded by construction
        return ""
    model = preprocessing.magnitude(rows)  # (N, F) float64
    far = model > MAX_MODEL_ABS
    if not far.any():
        return ""
    row, column = _first(far)
    bad_rows = np.flatnonzero(far.any(axis=1))
    unit = ("standard deviations of the training data" if preprocessing.kind == "standardize"
            else "training ranges")
    return (
        f"{_count(int(far.sum()), 'far outside the training range')} (more than "
        f"{MAX_MODEL_ABS:g} {unit} from it, in {bad_rows.size} rows), the first in row {row}, "
        f"column {column}: {float(rows[row, column]):.3g}, {float(model[row, column]):.3g} "
        "after preprocessing; the model cannot give such rows a finite score"
    )


def validate_rows(
    array: NDArray, contract: InputContract, what: str = "input"
) -> NDArray[np.float32]:
    """(N, ...) array of any accepted shape and numeric datatype -> finite (N, F) float32 rows.

    Refuses NaN, infinities, FP64 values beyond the FP32 range and values beyond MAX_MODEL_ABS
    in model space, each counted with its first row and column.
    """
    kind = array.dtype.kind
    if kind not in "iuf" or array.ndim < 2 or array.shape[1:] not in contract.row_shapes:
        got = f"{list(array.shape)} {v2_name(array.dtype)}"
        raise InvalidInput(f"{what}: {contract.expected}, got {got}")
    n = array.shape[0]
    if n == 0:
        raise InvalidInput(f"{what}: no rows; {contract.expected} with N >= 1")
    if n > contract.max_request_rows:
        raise InvalidInput(
            f"{what}: {n} rows is more than the {contract.max_request_rows} one request may "
            "carry; split it into several requests"
        )
    rows = array.reshape(n, contract.n_features)
    if kind == "f":
        problems = _value_problems(rows)
        if problems:
            raise InvalidInput(f"{what}: {'; '.join(problems)}; every value must be finite")
    rows = np.ascontiguousarray(rows, dtype=np.float32)  # in range: the cast cannot overflow
    if contract.preprocessing is not None:
        problem = _model_space_problem(rows, contract.preprocessing)
        if problem:
            raise InvalidInput(f"{what}: {problem}")
    return rows


def check_finite_scores(scores: Mapping[str, NDArray], what: str = "input") -> None:
    """The safety net after scoring: InvalidInput naming the rows whose scores are not finite.

    `validate_rows` refuses the inputs known to overflow; this catches any that still do, so
    that no NaN or infinite score leaves the service silently.
    """
    bad: NDArray[np.bool_] | None = None
    kinds = []
    for kind, values in scores.items():
        values = np.asarray(values, dtype=np.float64)
        # One reduction answers the common case: a finite sum has only finite terms (a sum that
        # overflows is searched below, and passes there).
        if np.isfinite(values.sum()):
            continue
        finite = np.isfinite(values.reshape(len(values), -1))
        rows_bad: NDArray[np.bool_] = ~np.all(finite, axis=1)
        if rows_bad.any():
            kinds.append(kind)
            bad = rows_bad if bad is None else bad | rows_bad
    if bad is None:
        return
    rows = np.flatnonzero(bad)
    shown = ", ".join(map(str, rows[:10].tolist())) + (", ..." if rows.size > 10 else "")
    raise InvalidInput(
        f"{what}: {rows.size} rows have no finite score ({', '.join(kinds)}): rows {shown}; "
        "their values are too far outside the training range for this model"
    )
