"""Group calibration (Mondrian conformal): which group each calibration row belongs to.

`latentwatch recalibrate --group-column COL` stores, beside `calibration.npy`, the group of each
of its rows (`calibration_groups.npy`, a fixed-width unicode array in the same row order) and
describes it in the manifest's `scoring.calibration.groups`: the column's name, the groups and
how many rows each has. Scoring rows with their groups then compares each row with its own
group's calibration scores only (latentwatch.scoring.mondrian).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
from numpy.typing import NDArray
from pydantic import Field, StringConstraints, model_validator

from latentwatch.errors import VersionRefused, quote
from latentwatch.repository.manifest_fields import MAX_ROWS, FileName, _Strict

if TYPE_CHECKING:  # manifest.py imports this module
    from latentwatch.repository.manifest import Manifest

CALIBRATION_GROUPS_FILE = "calibration_groups.npy"
MAX_GROUPS = 1024
MAX_GROUP_CHARS = 128

# A group name or a column name: printable, without surrounding space, at most 128 characters.
GroupName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_GROUP_CHARS, pattern=r"^\S(.*\S)?$")
]


class GroupCalibration(_Strict):
    """The calibration rows split by a group column; `file` holds each row's group (size,)."""

    column: GroupName
    groups: list[GroupName] = Field(min_length=1, max_length=MAX_GROUPS)  # sorted
    sizes: list[Annotated[int, Field(gt=0, le=MAX_ROWS)]]  # rows of each group, same order
    file: FileName = CALIBRATION_GROUPS_FILE

    @model_validator(mode="after")
    def _consistent(self) -> GroupCalibration:
        if len(self.sizes) != len(self.groups):
            raise ValueError(f"{len(self.groups)} groups but {len(self.sizes)} sizes")
        if len(set(self.groups)) != len(self.groups):
            raise ValueError("group names repeat")
        return self

    @property
    def total_rows(self) -> int:
        return sum(self.sizes)

    @classmethod
    def of(cls, column: str, groups: NDArray[np.str_]) -> GroupCalibration:
        names, counts = np.unique(groups, return_counts=True)
        return cls(column=column, groups=names.tolist(), sizes=counts.tolist())


def groups_array(groups: Sequence[str]) -> NDArray[np.str_]:
    """Row groups as the fixed-width unicode array `calibration_groups.npy` holds."""
    width = max((len(g) for g in groups), default=1)
    return np.array(list(groups), dtype=f"<U{max(1, width)}")


def split_by_group(
    spec: GroupCalibration, scores: NDArray[np.float64], groups: NDArray, kinds: Sequence[str]
) -> dict[str, dict[str, NDArray[np.float64]]]:
    """group -> kind -> that group's ascending calibration scores, from the calibration rows
    (size, len(kinds)) and their groups (size,) in the same order; VersionRefused when the
    groups file does not fit the manifest."""
    if groups.shape != (scores.shape[0],) or groups.dtype.kind != "U":
        raise VersionRefused(
            f"{spec.file} holds {list(groups.shape)} {groups.dtype}; the manifest promises "
            f"[{scores.shape[0]}] unicode strings, one per calibration row"
        )
    names, counts = np.unique(groups, return_counts=True)
    if names.tolist() != spec.groups or counts.tolist() != spec.sizes:
        unknown = sorted(set(names.tolist()) - set(spec.groups))
        what = "group sizes that differ from the manifest's"
        if unknown:
            what = "groups not in the manifest: " + ", ".join(quote(g, 40) for g in unknown[:3])
        raise VersionRefused(f"{spec.file} holds {what}")
    split: dict[str, dict[str, NDArray[np.float64]]] = {}
    for name in spec.groups:
        rows = np.sort(scores[groups == name].astype(np.float64), axis=0)
        split[name] = {kind: np.ascontiguousarray(rows[:, i]) for i, kind in enumerate(kinds)}
    return split


def calibration_groups(manifest: Manifest) -> dict[str, Any]:
    """ModelInfo's calibration_group_column and calibration_groups for a version."""
    scoring = manifest.scoring
    spec = scoring.calibration.groups if scoring is not None else None
    if spec is None:
        return {"calibration_group_column": "", "calibration_groups": ()}
    return {"calibration_group_column": spec.column, "calibration_groups": tuple(spec.groups)}
