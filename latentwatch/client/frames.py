"""Named inputs in the client: pandas DataFrames, and the model's feature names from GetModel.

Columns are matched to the model's feature names here, in the client, before rows travel: the
wire carries a bare tensor, and every server answers GetModel with the manifest that holds the
names. Unnamed inputs (arrays) and unnamed models (v1 manifests, .npy training data) stay
positional.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from numpy.typing import NDArray

from latentwatch.data.columns import column_order
from latentwatch.errors import InvalidInput
from latentwatch.repository.catalog import ModelInfo


def is_frame(X: Any) -> bool:
    return hasattr(X, "columns") and hasattr(X, "to_numpy") and hasattr(X, "dtypes")


def frame_rows(X: Any, what: str = "X") -> tuple[Any, tuple[str, ...] | None]:
    """(rows, column names) of a DataFrame; (X, None) for anything else."""
    if not is_frame(X):
        return X, None
    names = tuple(str(c) for c in X.columns)
    bad = [str(c) for c, dtype in zip(X.columns, X.dtypes, strict=True)
           if getattr(dtype, "kind", "O") not in "biuf"]
    if bad:
        raise InvalidInput(f"{what}: columns {bad[:10]} are not numeric")
    return np.asarray(X.to_numpy(dtype=np.float64)), names


def feature_names(info: ModelInfo) -> tuple[str, ...] | None:
    """The names the model was trained on, from its manifest; None when it has none."""
    if not info.manifest_json:
        return None
    names = json.loads(info.manifest_json).get("input", {}).get("feature_names")
    return None if names is None else tuple(str(n) for n in names)


def aligned(rows: NDArray, names: tuple[str, ...] | None, info: ModelInfo, what: str) -> NDArray:
    """Rows with their columns in the model's order (InvalidInput when the names differ)."""
    order = column_order(names, feature_names(info), what)
    return rows if order is None else np.ascontiguousarray(rows[:, order])
