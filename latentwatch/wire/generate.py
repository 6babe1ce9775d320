"""Generate, Traverse and Translate messages <-> values, both directions.

The servicer builds responses with the `*_response` functions; the client builds requests with
the `*_request` functions and reads responses back with the `*_from_response` ones, so a field
is written and read in one module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.tensors import from_tensor, to_tensor

if TYPE_CHECKING:  # annotations only: the wire layer does not import the server
    from latentwatch.service.generation import GenerateResult, TranslateResult, TraverseResult


@dataclass(frozen=True)
class Generated:
    """Samples as a client gets them."""

    model_name: str
    model_version: str
    samples: NDArray[np.float32]  # (n, *sample_shape) in data units
    latents: NDArray[np.float32]  # (n, Z)
    labels: NDArray[np.int64] | None  # (n,) for class-conditional models
    seed: int  # draws the same samples again
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class Traversal:
    model_name: str
    model_version: str
    base_latent: NDArray[np.float32]  # (Z,)
    dimensions: tuple[int, ...]
    values: NDArray[np.float64]  # (steps,)
    samples: NDArray[np.float32]  # (D, steps, *sample_shape)
    change: NDArray[np.float64]  # (D,) output change along each swept dimension
    inactive_dimensions: tuple[int, ...]
    inactive_threshold: float


def generate_request(
    model: str,
    n: int,
    version: str = "",
    seed: int | None = None,
    labels: Sequence[int] = (),
    truncation: float | None = None,
    centers: NDArray | None = None,
    spread: float | None = None,
) -> pb.GenerateRequest:
    request = pb.GenerateRequest(model_name=model, model_version=version, n=n,
                                 labels=[int(v) for v in labels])
    if seed is not None:
        request.seed = seed
    if truncation is not None:
        request.truncation = truncation
    if centers is not None:
        request.centers.CopyFrom(to_tensor(np.asarray(centers)))
    if spread is not None:
        request.spread = spread
    return request


def optional_tensor(message: object, field: str) -> NDArray | None:
    """A message's tensor field decoded, or None when unset."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    return from_tensor(getattr(message, field), field)


def generate_response(result: GenerateResult) -> pb.GenerateResponse:
    return pb.GenerateResponse(
        model_name=result.model_name,
        model_version=result.model_version,
        samples=to_tensor(result.samples),
        latents=to_tensor(result.latents),
        labels=[] if result.labels is None else result.labels.tolist(),
        seed=result.seed,
        class_names=list(result.class_names),
    )


def generated_from_response(response: pb.GenerateResponse) -> Generated:
    samples = from_tensor(response.samples, "samples")
    return Generated(
        model_name=response.model_name,
        model_version=response.model_version,
        samples=samples,
        latents=from_tensor(response.latents, "latents"),
        labels=np.asarray(response.labels, dtype=np.int64) if response.labels else None,
        seed=response.seed,
        class_names=tuple(response.class_names),
    )


def traverse_request(
    model: str,
    version: str = "",
    row: NDArray | None = None,
    latent: NDArray | None = None,
    dimensions: Sequence[int] = (),
    low: float | None = None,
    high: float | None = None,
    steps: int | None = None,
    label: int | None = None,
) -> pb.TraverseRequest:
    request = pb.TraverseRequest(model_name=model, model_version=version,
                                 dimensions=[int(d) for d in dimensions])
    if row is not None:
        request.input.CopyFrom(to_tensor(np.asarray(row)))
    if latent is not None:
        request.latent.CopyFrom(to_tensor(np.asarray(latent)))
    for field, value in (("low", low), ("high", high), ("steps", steps), ("label", label)):
        if value is not None:
            setattr(request, field, value)
    return request


def traverse_response(result: TraverseResult) -> pb.TraverseResponse:
    return pb.TraverseResponse(
        model_name=result.model_name,
        model_version=result.model_version,
        base_latent=to_tensor(result.base_latent),
        dimensions=list(result.dimensions),
        values=result.values.tolist(),
        samples=to_tensor(result.samples),
        change=result.change.tolist(),
        inactive_dimensions=list(result.inactive),
        inactive_threshold=result.inactive_threshold,
    )


def traversal_from_response(response: pb.TraverseResponse) -> Traversal:
    samples = from_tensor(response.samples, "samples")
    if samples.ndim < 3 or samples.shape[:2] != (len(response.dimensions), len(response.values)):
        raise InvalidInput(f"samples: shape {list(samples.shape)} does not match the "
                           f"{len(response.dimensions)} dimensions x {len(response.values)} steps")
    return Traversal(
        model_name=response.model_name,
        model_version=response.model_version,
        base_latent=from_tensor(response.base_latent, "base_latent"),
        dimensions=tuple(response.dimensions),
        values=np.asarray(response.values, dtype=np.float64),
        samples=samples,
        change=np.asarray(response.change, dtype=np.float64),
        inactive_dimensions=tuple(response.inactive_dimensions),
        inactive_threshold=response.inactive_threshold,
    )


def translate_request(model: str, images: NDArray, version: str = "") -> pb.TranslateRequest:
    return pb.TranslateRequest(model_name=model, model_version=version,
                               input=to_tensor(np.asarray(images)))


def translate_response(result: TranslateResult) -> pb.TranslateResponse:
    return pb.TranslateResponse(model_name=result.model_name, model_version=result.model_version,
                                output=to_tensor(result.output))


def translated_from_response(response: pb.TranslateResponse) -> NDArray:
    return from_tensor(response.output, "output")
