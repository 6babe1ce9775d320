"""Matching a table's named columns to the names a model was trained on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput

MAX_NAMES_SHOWN = 10


def shown(names: Sequence[str]) -> str:
    """A short list of names for an error message."""
    head = ", ".join(repr(n) for n in names[:MAX_NAMES_SHOWN])
    more = len(names) - MAX_NAMES_SHOWN
    return f"{head}, … ({more} more)" if more > 0 else head


def column_order(
    given: Sequence[str] | None, expected: Sequence[str] | None, source: str
) -> NDArray[np.intp] | None:
    """Indices that put `given` columns in the model's `expected` order; None to keep positions.

    Either side without names keeps the columns positional (a v1 or unnamed manifest, a .npy
    file). Raises InvalidInput listing the missing and the unexpected columns when the names
    differ; extra columns are refused too, since a column the model never saw is usually a
    sign of the wrong file (select features with --columns).
    """
    if given is None or expected is None:
        return None
    duplicates = sorted({n for n in given if list(given).count(n) > 1})
    if duplicates:
        raise InvalidInput(f"{source}: duplicate column names {shown(duplicates)}")
    position = {name: i for i, name in enumerate(given)}
    missing = [n for n in expected if n not in position]
    wanted = set(expected)
    unexpected = [n for n in given if n not in wanted]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)}: {shown(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)}: {shown(unexpected)}")
        raise InvalidInput(
            f"{source}: columns do not match the model's features ({'; '.join(parts)}); "
            "the model expects " + shown(list(expected))
        )
    order = np.array([position[n] for n in expected], dtype=np.intp)
    if np.array_equal(order, np.arange(len(order))):
        return None
    return order
