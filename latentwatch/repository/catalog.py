"""What a repository holds, as plain values: shared by the service's core and the client."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelSummary:
    name: str
    versions: tuple[str, ...]  # ascending
    latest_version: str
    model_kind: str


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str
    shape: tuple[int, ...]  # -1 marks the batch axis


@dataclass(frozen=True)
class ModelInfo:
    name: str
    version: str
    model_kind: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    image_shape: tuple[int, ...]  # empty for tabular models
    score_kinds: tuple[str, ...]
    default_score_kind: str
    calibration_size: int
    default_alpha: float
    # Smallest alpha the calibration set resolves: 1 / (calibration_size + 1).
    min_alpha: float
    latent_dim: int
    execution_provider: str
    max_batch_rows: int
    manifest_json: str
    explains: bool = False  # Score can explain rows (explain.npz and a decoder)
    # The column the calibration rows were grouped by, and its groups (ScoreRequest.groups);
    # empty for a version calibrated without one.
    calibration_group_column: str = ""
    calibration_groups: tuple[str, ...] = ()
