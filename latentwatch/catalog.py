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
