"""The client's calls for generative models: Generate, Traverse and Translate (numpy out).

A mixin of LatentwatchClient (latentwatch.client.client), which supplies `_unary` (deadline,
retries, the next server in turn).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput
from latentwatch.wire.generate import (
    Generated,
    Traversal,
    generate_request,
    generated_from_response,
    translate_request,
    translated_from_response,
    traversal_from_response,
    traverse_request,
)
from latentwatch.wire.tensors import V2_DTYPES


def as_rows(X: NDArray, what: str = "X") -> NDArray:
    """X as a numeric array with a batch axis, in a datatype the wire carries."""
    array = np.asarray(X)
    if array.dtype.kind not in "biuf":
        raise InvalidInput(f"{what}: dtype {array.dtype} is not numeric")
    if array.ndim < 2:
        raise InvalidInput(
            f"{what}: shape {list(array.shape)} has no batch axis; pass (N, F) rows or "
            f"(N, H, W) images (one row is X[None, :])"
        )
    if array.dtype.newbyteorder("<") not in V2_DTYPES.values():
        # e.g. long double: the wire has no such type, float64 keeps every value it can.
        array = array.astype(np.float64)
    return array


class GenerativeCalls:
    """Generate, Traverse and Translate over the client's channel."""

    def _unary(self, method: str, request: Any) -> Any:
        raise NotImplementedError  # LatentwatchClient's

    def generate(
        self,
        model: str,
        n: int,
        *,
        version: str = "",
        seed: int | None = None,
        labels: Sequence[int] = (),
        truncation: float | None = None,
        centers: NDArray | None = None,
        spread: float | None = None,
    ) -> Generated:
        """n samples (n, *sample_shape) in the data's units, with the latents and labels used.

        The same seed gives the same samples; without one the result's `seed` redraws them.
        `labels` (class-conditional models): one for all samples, or one per sample; none draws
        them. `centers` (k, Z), e.g. the latent means of a bias report's sparsest rows, draws
        sample i around centre i mod k with standard deviation `spread` (server default 0.5).
        """
        request = generate_request(model, n, version, seed, labels, truncation, centers, spread)
        response = self._unary("Generate", request)
        return generated_from_response(response)

    def traverse(
        self,
        model: str,
        *,
        version: str = "",
        row: NDArray | None = None,
        latent: NDArray | None = None,
        dimensions: Sequence[int] = (),
        low: float | None = None,
        high: float | None = None,
        steps: int | None = None,
        label: int | None = None,
    ) -> Traversal:
        """A latent sweep from one row (encoded) or a latent point (neither: the prior mean):
        each of `dimensions` (default all) set to `steps` values from low to high (server
        defaults -3, 3, 7); samples (D, steps, *sample_shape), how much each dimension changes
        the output, and the dimensions that change nothing."""
        request = traverse_request(
            model, version, None if row is None else as_rows(row, "row"),
            None if latent is None else np.asarray(latent), dimensions, low, high, steps, label,
        )
        response = self._unary("Traverse", request)
        return traversal_from_response(response)

    def translate(self, model: str, images: NDArray, *, version: str = "") -> NDArray[np.float32]:
        """(N, C, H, W) (or (N, H, W)) images in the data's units -> translated (N, C, H, W)."""
        request = translate_request(model, as_rows(images, "images"), version)
        response = self._unary("Translate", request)
        return translated_from_response(response)
