"""Group-conditional (Mondrian) conformal p-values: each row against its own group's
calibration rows, so that p <= alpha flags at a rate <= alpha within every group, not only
over all rows together (numpy only, no I/O).

A group on whose rows the model scores higher than average (a harder group) gets most of the
marginal false alarms; against its own calibration rows it gets its share, alpha.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput, quote
from latentwatch.scoring.conformal import check_alpha, p_values

# Unknown groups a message names; the rest are counted.
MAX_SHOWN = 3

GroupCalibrations = Mapping[str, Mapping[str, NDArray[np.float64]]]  # group -> kind -> sorted


def row_groups(
    groups: Sequence[str], n_rows: int, calibration: GroupCalibrations, what: str
) -> NDArray[np.str_]:
    """The request's groups (n_rows,), checked against the version's (`what` names it)."""
    if not calibration:
        raise InvalidInput(
            f"groups: {what} was calibrated without a group column, so its p-values are "
            "marginal only; send no groups, or recalibrate it with --group-column"
        )
    if len(groups) != n_rows:
        raise InvalidInput(f"groups: {len(groups)} given for {n_rows} rows; send one per row")
    array = np.asarray(list(groups), dtype=np.str_)
    present = np.unique(array)
    unknown = [g for g in present.tolist() if g not in calibration]
    if unknown:
        shown = ", ".join(quote(g, 40) for g in unknown[:MAX_SHOWN])
        more = f" and {len(unknown) - MAX_SHOWN:,} more" if len(unknown) > MAX_SHOWN else ""
        known = ", ".join(quote(g, 40) for g in list(calibration)[:20])
        raise InvalidInput(f"groups: unknown group(s) {shown}{more}; {what} has {known}")
    return array


@dataclass(frozen=True, eq=False)
class RowGroups:
    """The groups of one request's rows and the version's group calibration."""

    groups: NDArray[np.str_]  # (N,)
    calibration: GroupCalibrations

    def p_values(self, kind: str, scores: NDArray) -> NDArray[np.float64]:
        """Each row's conformal p-value against its own group's calibration scores of `kind`."""
        p = np.empty(scores.shape[0], dtype=np.float64)
        for group in np.unique(self.groups).tolist():
            rows = self.groups == group
            p[rows] = p_values(self.calibration[group][kind], scores[rows])
        return p

    @property
    def calibration_sizes(self) -> NDArray[np.int64]:
        """(N,) how many calibration rows each row's p-value was computed against."""
        sizes = np.empty(self.groups.shape[0], dtype=np.int64)
        for group in np.unique(self.groups).tolist():
            sizes[self.groups == group] = _size(self.calibration[group])
        return sizes

    def check_alpha(self, alpha: float) -> float:
        """alpha that the smallest calibration group among the rows' can resolve."""
        group = min(np.unique(self.groups).tolist(), key=lambda g: _size(self.calibration[g]))
        try:
            return check_alpha(alpha, _size(self.calibration[group]))
        except InvalidInput as err:
            raise InvalidInput(f"group {quote(group, 40)}: {err}") from err


def request_groups(
    groups: Sequence[str], n_rows: int, calibration: GroupCalibrations, alpha: float, what: str
) -> tuple[RowGroups | None, float]:
    """(the rows' groups, checked, or None for none; alpha checked against the smallest of
    their calibration groups). `what` names the version in messages."""
    if not groups:
        return None, alpha
    grouped = RowGroups(row_groups(groups, n_rows, calibration, what), calibration)
    return grouped, grouped.check_alpha(alpha)


def _size(by_kind: Mapping[str, NDArray]) -> int:
    return int(next(iter(by_kind.values())).shape[0])
