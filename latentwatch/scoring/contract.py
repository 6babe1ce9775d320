"""The input contract of a model version and the validation of rows against it (numpy only).

Conformal p-values and BH live in scoring/conformal.py, score kinds in scoring/pipeline.py.
"""

from __future__ import annotations

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
