"""Which columns of a dataset's blocks hold a model's features, and the rows they make.

Blocks arrive as numpy batches (column name -> array): a tensor column holds whole rows
(N, F) or images (N, H, W), scalar columns hold one feature each. The columns are chosen once,
on the driver, from the dataset's schema; the workers only stack them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from latentwatch.data.columns import column_order, shown
from latentwatch.errors import InvalidInput

# A string names one tensor column; a sequence names scalar feature columns.
Features = str | Sequence[str] | None


def feature_columns(
    available: Sequence[str],
    features: Features,
    model_names: Sequence[str] | None,
    other: Sequence[str] = (),
) -> tuple[str, ...]:
    """The columns that make the rows, in the model's order.

    `features` as a string: that tensor column. As a sequence: those columns, put in the
    model's feature order by name when the model has names (refused when they differ, as the
    score CLI's --columns). None: the model's feature names when every one is a column, else
    the one column that is not in `other` (ids, group labels).
    """
    names = list(available)
    if isinstance(features, str):
        chosen: tuple[str, ...] = (features,)
    elif features is not None:
        chosen = tuple(features)
        if not chosen:
            raise InvalidInput("features: name at least one column")
    elif model_names is not None and set(model_names) <= set(names):
        return tuple(model_names)
    else:
        rest = [n for n in names if n not in set(other)]
        if len(rest) != 1:
            raise InvalidInput(
                f"the dataset has columns {shown(names)}; name the feature columns "
                "(features=[...]) or the one tensor column of rows (features='data')"
            )
        chosen = (rest[0],)
    missing = [n for n in chosen if n not in names]
    if missing:
        raise InvalidInput(
            f"features: no column {shown(missing)} in the dataset; it has {shown(names)}"
        )
    if len(chosen) > 1:
        order = column_order(chosen, model_names, "features")
        if order is not None:
            chosen = tuple(chosen[i] for i in order)
    return chosen


def batch_rows(batch: Mapping[str, NDArray], columns: Sequence[str]) -> NDArray:
    """(N, ...) rows of a numpy batch: one tensor column as it is, scalar columns side by side."""
    if len(columns) == 1:
        rows = np.asarray(batch[columns[0]])
        if rows.dtype == object and rows.ndim == 1 and len(rows):  # a list column: one per row
            return np.stack([np.asarray(r) for r in rows])
        return rows if rows.ndim >= 2 else rows.reshape(-1, 1)
    parts = [np.asarray(batch[c]) for c in columns]
    bad = [c for c, p in zip(columns, parts, strict=True)
           if p.ndim != 1 or p.dtype.kind not in "biuf"]
    if bad:
        raise InvalidInput(f"features: columns {shown(bad)} are not numeric scalar columns")
    return np.column_stack(parts)


def check_new_columns(available: Sequence[str], new: Sequence[str]) -> None:
    """Refuses output columns that would overwrite the dataset's own."""
    clash = sorted(set(available) & set(new))
    if clash:
        raise InvalidInput(
            f"the dataset already has columns {shown(clash)}, which scoring adds; rename or "
            "drop them first"
        )

