"""The scoring pipeline: graph outputs and rows -> every requested score kind and its p-values.

The one place that knows which kinds a version's scorer graph gives and which its second stage
computes from the graph's outputs, and which graph outputs a set of kinds needs. The service
(per batch), offline scoring and the export's calibration all compute kinds through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput, quote
from latentwatch.repository.manifest import Manifest
from latentwatch.scoring.conformal import p_values
from latentwatch.scoring.preprocessing import Preprocessing
from latentwatch.scoring.second_stage import KIND as STAGE_KIND
from latentwatch.scoring.second_stage import SecondStage

# Unknown kinds a message names, each cut to SHOWN_CHARS; the rest are counted.
MAX_SHOWN = 3
SHOWN_CHARS = 24  # score kinds are short names: more is not a kind


@dataclass(frozen=True, eq=False)
class ScoringPipeline:
    """Score kinds of one model version, in manifest order; `second_stage` computes STAGE_KIND."""

    kinds: tuple[str, ...]
    preprocessing: Preprocessing | None = None  # the second stage reads rows in model space
    second_stage: SecondStage | None = None
    # kind -> ascending calibration scores; empty while calibrating (export).
    calibration: Mapping[str, NDArray[np.float64]] = field(default_factory=dict)
    default_kind: str = ""  # "" while calibrating: no default yet
    # group -> kind -> ascending calibration scores (latentwatch.scoring.mondrian); empty
    # without a group column.
    group_calibration: Mapping[str, Mapping[str, NDArray[np.float64]]] = field(
        default_factory=dict
    )

    def __post_init__(self) -> None:
        if self.second_stage is not None and self.preprocessing is None:
            raise ValueError("the second stage needs the preprocessing")

    @classmethod
    def from_manifest(
        cls,
        manifest: Manifest,
        calibration: Mapping[str, NDArray[np.float64]],
        second_stage: SecondStage | None,
        group_calibration: Mapping[str, Mapping[str, NDArray[np.float64]]] | None = None,
    ) -> ScoringPipeline:
        scoring = manifest.scoring  # None: a version that does not score, no kinds
        return cls(
            kinds=tuple(scoring.score_kinds) if scoring is not None else (),
            preprocessing=manifest.input.preprocessing,
            second_stage=second_stage,
            calibration=calibration,
            default_kind=scoring.default_score_kind if scoring is not None else "",
            group_calibration=group_calibration or {},
        )

    @property
    def stage_kinds(self) -> tuple[str, ...]:
        """Kinds the second stage computes (none without one)."""
        return (STAGE_KIND,) if self.second_stage is not None and STAGE_KIND in self.kinds else ()

    @property
    def graph_kinds(self) -> tuple[str, ...]:
        """Kinds the scorer graph gives as outputs of the same name."""
        return tuple(k for k in self.kinds if k not in self.stage_kinds)

    def needs_stage(self, kinds: Sequence[str]) -> bool:
        return any(k in self.stage_kinds for k in kinds)

    def costly(self, kinds: Sequence[str]) -> bool:
        """Whether computing `kinds` runs heavy work (the second stage's kNN searches)."""
        return self.second_stage is not None and self.second_stage.costly and (
            self.needs_stage(kinds)
        )

    def outputs_for(self, kinds: Sequence[str]) -> tuple[str, ...]:
        """Graph outputs `kinds` read, deduplicated in order."""
        needed = [k for k in kinds if k in self.graph_kinds]
        if self.second_stage is not None and self.needs_stage(kinds):
            needed.extend(self.second_stage.needs_outputs)
        return tuple(dict.fromkeys(needed))

    @property
    def graph_outputs(self) -> tuple[str, ...]:
        """Graph outputs every kind together reads: what a scorer graph must give."""
        return self.outputs_for(self.kinds)

    def scores(
        self, outputs: Mapping[str, NDArray], rows: NDArray[np.float32], kinds: Sequence[str]
    ) -> dict[str, NDArray[np.float64]]:
        """kind -> (B,) float64 scores, for graph outputs (B, ...) of raw rows (B, F)."""
        scores = {k: outputs[k].astype(np.float64) for k in kinds if k in self.graph_kinds}
        if self.second_stage is not None and self.needs_stage(kinds):
            assert self.preprocessing is not None  # checked in __post_init__
            stage = self.second_stage.score(outputs, self.preprocessing.apply(rows))
            scores.update({k: stage for k in self.stage_kinds})
        return {k: scores[k] for k in kinds}

    def p_values(self, kind: str, scores: NDArray) -> NDArray[np.float64]:
        """Conformal p-values of `kind`'s scores against that kind's calibration."""
        return p_values(self.calibration[kind], scores)

    def resolve_kinds(self, requested: Sequence[str]) -> tuple[str, ...]:
        return resolve_kinds(requested, self.kinds)

    def resolve_score_kind(self, requested: str | None) -> str:
        return resolve_score_kind(requested, self.kinds, self.default_kind)


def resolve_kinds(requested: Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    """Requested score kinds, deduplicated in order; "*" means all of `available`."""
    if not requested:
        return ()
    if "*" in requested:
        return tuple(available)
    unknown = [k for k in requested if k not in available]
    if unknown:
        shown = ", ".join(quote(k, SHOWN_CHARS) for k in unknown[:MAX_SHOWN])
        more = f" and {len(unknown) - MAX_SHOWN:,} more" if len(unknown) > MAX_SHOWN else ""
        raise InvalidInput(
            f"unknown score kind(s) [{shown}]{more}; this model has {list(available)} "
            "(or '*' for all)"
        )
    return tuple(dict.fromkeys(requested))


def resolve_score_kind(requested: str | None, available: Sequence[str], default: str) -> str:
    """The kind that `score` and the p-values use: the requested one, or the model's default."""
    if not requested:
        return default
    if requested not in available:
        raise InvalidInput(
            f"unknown score_kind {quote(requested)}; this model has {list(available)} "
            f"(default {default!r})"
        )
    return requested
