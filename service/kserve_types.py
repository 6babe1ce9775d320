"""The KServe v2 core's plain dataclasses (service/kserve.py): tensors, requests, responses,
metadata and per-version statistics, shared by the gRPC and REST front ends."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from numpy.typing import NDArray

from latentwatch.repository.catalog import TensorInfo as TensorMeta  # name, datatype, shape

Param = bool | int | float | str


@dataclass(frozen=True)
class V2Tensor:
    name: str
    datatype: str  # a v2 datatype name
    shape: tuple[int, ...]
    data: NDArray  # already shaped


@dataclass(frozen=True)
class V2Request:
    model: str
    version: str  # "" = latest
    id: str
    inputs: tuple[V2Tensor, ...]
    parameters: Mapping[str, Param] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()  # requested names; () = DEFAULT_OUTPUTS


@dataclass(frozen=True)
class V2Response:
    model_name: str
    model_version: str
    id: str
    outputs: tuple[V2Tensor, ...]
    parameters: Mapping[str, Param]


@dataclass(frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMeta, ...]
    outputs: tuple[TensorMeta, ...]


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: str
    state: str  # READY or UNAVAILABLE (refused at load; `reason` says why)
    reason: str


@dataclass
class ModelStats:
    name: str
    version: str
    last_inference_ms: int = 0  # ms since the epoch; 0: none yet
    inference_count: int = 0  # rows
    execution_count: int = 0  # requests
    success_count: int = 0
    success_ns: int = 0
    fail_count: int = 0
    fail_ns: int = 0
