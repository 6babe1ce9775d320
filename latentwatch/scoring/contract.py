"""Input validation and conformal scoring math (numpy only, no I/O).

Conformal p-value of a score s against n calibration scores: p = (1 + #{i: s_i >= s}) / (n + 1);
it is never 0 and never above 1, and p <= alpha flags at a false-alarm rate <= alpha.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput
from latentwatch.repository.manifest import Manifest
from latentwatch.wire.tensors import v2_name


@dataclass(frozen=True)
class InputContract:
    """What a model version accepts: rows (N, F) or, for image models, (N, *image) shapes."""

    n_features: int
    row_shapes: tuple[tuple[int, ...], ...]  # accepted shapes without the batch axis
    max_request_rows: int

    @classmethod
    def from_manifest(cls, manifest: Manifest, max_request_rows: int) -> InputContract:
        shapes: list[tuple[int, ...]] = [(manifest.n_features,)]
        image = manifest.input.image_shape
        if image:
            shapes.append(tuple(image))
            if len(image) == 3 and image[0] == 1:  # one channel: (N, H, W) too
                shapes.append(tuple(image[1:]))
        return cls(manifest.n_features, tuple(shapes), max_request_rows)

    @property
    def expected(self) -> str:
        shapes = " or ".join("(" + ", ".join(["N", *map(str, s)]) + ")" for s in self.row_shapes)
        return f"expected shape {shapes} of a numeric datatype"


def validate_rows(
    array: NDArray, contract: InputContract, what: str = "input"
) -> NDArray[np.float32]:
    """(N, ...) array of any accepted shape and numeric datatype -> finite (N, F) float32 rows."""
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
    if rows.dtype == np.float32:
        rows = np.ascontiguousarray(rows)
    else:
        with np.errstate(over="ignore"):  # FP64 beyond the FP32 range becomes inf: refused below
            rows = rows.astype(np.float32, order="C")
    if kind == "f":
        finite = np.isfinite(rows)
        if not finite.all():
            bad = ~finite
            first_row = int(np.flatnonzero(bad.any(axis=1))[0])
            raise InvalidInput(
                f"{what}: {int(bad.sum())} values are NaN or infinite (or beyond the FP32 range), "
                f"the first in row {first_row}; every value must be finite"
            )
    return rows


def p_values(sorted_calibration: NDArray[np.float64], scores: NDArray) -> NDArray[np.float64]:
    """Conformal p-values of `scores` (n,) against ascending calibration scores (m,)."""
    m = sorted_calibration.shape[0]
    below = np.searchsorted(sorted_calibration, scores.astype(np.float64, copy=False), "left")
    return (1.0 + (m - below)) / (m + 1.0)  # m - below = #{s_i >= s}


def check_alpha(alpha: float, n_calibration: int) -> float:
    """alpha in (0, 1) that a calibration set of n rows can resolve (its p-values >= 1/(n+1))."""
    if not 0.0 < alpha < 1.0:
        raise InvalidInput(f"alpha must be in (0, 1), got {alpha}")
    if alpha * (n_calibration + 1) < 1.0 - 1e-9:
        needed = math.ceil(1.0 / alpha - 1.0 - 1e-9)
        raise InvalidInput(
            f"alpha {alpha:g} is below 1/(n+1) = {1.0 / (n_calibration + 1):.4g}, the smallest "
            f"p-value of this model's {n_calibration} calibration rows; resolving alpha {alpha:g} "
            f"needs a calibration set of at least {needed} rows"
        )
    return float(alpha)


def check_fdr(level: float) -> float:
    if not 0.0 < level < 1.0:
        raise InvalidInput(f"fdr must be in (0, 1), got {level}")
    return float(level)


def benjamini_hochberg(p: NDArray[np.float64], level: float) -> tuple[NDArray[np.bool_], float]:
    """Rejections at false discovery rate `level`, and the largest rejected p-value (0 if none).

    Rejects every p <= p_(k) for the largest k with p_(k) <= k * level / m (p sorted ascending).
    """
    m = p.shape[0]
    sorted_p = np.sort(p)
    below = sorted_p <= level * np.arange(1, m + 1) / m
    if not below.any():
        return np.zeros(m, dtype=bool), 0.0
    threshold = float(sorted_p[np.flatnonzero(below)[-1]])
    return p <= threshold, threshold


def resolve_kinds(requested: Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    """Requested score kinds, deduplicated in order; "*" means all of `available`."""
    if not requested:
        return ()
    if "*" in requested:
        return tuple(available)
    unknown = [k for k in requested if k not in available]
    if unknown:
        raise InvalidInput(
            f"unknown score kind(s) {unknown}; this model has {list(available)} (or '*' for all)"
        )
    return tuple(dict.fromkeys(requested))


def resolve_score_kind(requested: str | None, available: Sequence[str], default: str) -> str:
    """The kind that `score` and the p-values use: the requested one, or the model's default."""
    if not requested:
        return default
    if requested not in available:
        raise InvalidInput(
            f"unknown score_kind {requested!r}; this model has {list(available)} "
            f"(default {default!r})"
        )
    return requested
