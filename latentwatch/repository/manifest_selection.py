"""The manifest's record of the label-free choice of second-stage statistics (`scoring.selection`).

Export (latentwatch.export.selection) scores candidate statistics and combinations by how well
they separate held-out normal rows from synthetic outliers made from those rows, and keeps the
best; this section records the candidates, their AUROC per generator of synthetic outliers, the
seed and the row counts, so a reader can see why the version's default kind computes what it
does. Versions exported before the choice existed have no such section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from latentwatch.families import Combine
from latentwatch.repository.manifest_fields import MAX_ROWS, TensorName, _Strict

Auroc = float  # checked in CandidateEvidence
GeneratorName = TensorName


class CandidateEvidence(_Strict):
    """One candidate: statistics, how they combine, and its AUROC on the synthetic task."""

    name: str = Field(max_length=512)
    statistics: list[TensorName] = Field(min_length=1, max_length=64)
    combine: Combine
    # Generator -> AUROC of held-out normals against that generator's outliers (0.5 = chance).
    auroc: dict[GeneratorName, Auroc] = Field(max_length=64)
    mean_auroc: Auroc  # over the selection's `decided_by` generators

    @model_validator(mode="after")
    def _in_range(self) -> CandidateEvidence:
        values = [*self.auroc.values(), self.mean_auroc]
        if not all(0.0 <= v <= 1.0 for v in values):
            raise ValueError(f"candidate {self.name!r}: an AUROC outside [0, 1]")
        return self


class SelectionSpec(_Strict):
    """How the second stage's statistics were chosen without labels, and the evidence.

    `chosen` names the candidate the second stage computes; `default` the family's fixed plan
    (chosen unless another candidate's mean AUROC beats it by more than `margin`). With
    `skipped` set, nothing was compared and the plan was kept, for the reason given.
    """

    method: Literal["synthetic-outliers"] = "synthetic-outliers"
    chosen: str = Field(max_length=512)
    default: str = Field(max_length=512)
    margin: float = Field(ge=0.0, le=1.0)
    seed: int
    generators: list[GeneratorName] = Field(max_length=64)  # every one recorded
    # The generators whose mean AUROC decides (mean_auroc); empty when skipped.
    decided_by: list[GeneratorName] = Field(default_factory=list, max_length=64)
    n_normal_rows: int = Field(ge=0, le=MAX_ROWS)
    n_outlier_rows: dict[GeneratorName, int] = Field(default_factory=dict, max_length=64)
    held_out: str = Field(max_length=4096)  # which normal rows, in words
    candidates: list[CandidateEvidence] = Field(default_factory=list, max_length=64)
    skipped: str = Field(default="", max_length=4096)

    @model_validator(mode="after")
    def _consistent(self) -> SelectionSpec:
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError("selection candidates name one candidate twice")
        if self.skipped:
            if self.chosen != self.default:
                raise ValueError("a skipped selection keeps the default")
            return self
        for what, name in (("chosen", self.chosen), ("default", self.default)):
            if name not in names:
                raise ValueError(f"selection.{what} {name!r} is not a candidate")
        unknown = (set(self.n_outlier_rows) | set(self.decided_by)) - set(self.generators)
        if unknown:
            raise ValueError(f"n_outlier_rows names unknown generators {sorted(unknown)}")
        return self

    def candidate(self, name: str) -> CandidateEvidence | None:
        return next((c for c in self.candidates if c.name == name), None)


def check_selection(selection: SelectionSpec, statistics: list[str], combine: str) -> None:
    """The chosen candidate must be what the second stage computes (ValueError otherwise)."""
    chosen = selection.candidate(selection.chosen)
    if chosen is None:
        return  # skipped: nothing was compared
    if chosen.statistics != statistics or (len(statistics) > 1 and chosen.combine != combine):
        raise ValueError(
            f"selection chose {chosen.name!r} but the second stage computes {combine} over "
            f"{statistics}"
        )
