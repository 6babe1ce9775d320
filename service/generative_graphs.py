"""The generator and translator graphs of a version: checked against the manifest, warmed up,
and run in data units.

A generator takes `z` (batch, Z) FP32, and for a class-conditional model also `label` (batch,)
INT64; it gives `sample` (batch, *output_shape) in the data's units. A translator takes `image`
(batch, C, H, W) and gives `translated` of the same shape, in data units too. The output names
are the manifest's (the first output of each graph), so a graph and its manifest agree by name.

A MicroBatcher feeds one input; a conditional generator's two are packed into one FP32 row
(z, then the label as the last column: exact in FP32 for any label below 2**24) by
`LabelPackedRuntime`, so conditional requests batch like any other.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import VersionRefused
from latentwatch.repository.manifest import GenerationSpec, Manifest
from latentwatch.service.runtime import Runtime, TensorSpec, input_names, output_names

LATENT_INPUT = "z"
LABEL_INPUT = "label"
IMAGE_INPUT = "image"
PACKED_INPUT = "z_label"
WARMUP_ROWS = 2  # two rows also proves the batch axis is dynamic


def generation_of(manifest: Manifest) -> GenerationSpec:
    """The manifest's generation section; VersionRefused when a generator or translator graph
    comes without one."""
    spec = manifest.generation
    if spec is None:
        raise VersionRefused("a generator or translator graph needs the manifest's generation "
                             "section")
    return spec


def is_conditional(manifest: Manifest) -> bool:
    spec = manifest.generation
    return spec is not None and spec.n_classes is not None


def output_name(manifest: Manifest, graph: str) -> str:
    return manifest.graphs[graph].outputs[0].name


class LabelPackedRuntime:
    """A conditional generator as a one-input runtime: rows (B, Z + 1), the label last.

    It wraps a loaded runtime and closes nothing: the wrapped runtime closes with the version.
    """

    def __init__(self, runtime: Runtime, latent_dim: int) -> None:
        self._runtime = runtime
        self.inputs = (TensorSpec(PACKED_INPUT, "FP32", ("batch", latent_dim + 1)),)
        self.outputs = runtime.outputs
        self.provider = runtime.provider
        self.batches_itself = runtime.batches_itself

    async def load(self) -> None:
        """The wrapped runtime is loaded already."""

    async def infer(self, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        packed = feeds[PACKED_INPUT]  # (B, Z + 1)
        return await self._runtime.infer({
            LATENT_INPUT: np.ascontiguousarray(packed[:, :-1], dtype=np.float32),
            LABEL_INPUT: np.rint(packed[:, -1]).astype(np.int64),
        })

    async def close(self) -> None:
        """Nothing to close (see the class docstring)."""


def pack(z: NDArray, labels: NDArray | None) -> NDArray[np.float32]:
    """(n, Z) latents [and (n,) labels] -> the generator batcher's rows: (n, Z) or (n, Z + 1)."""
    z = np.ascontiguousarray(z, dtype=np.float32)
    if labels is None:
        return z
    return np.concatenate([z, np.asarray(labels, dtype=np.float32)[:, None]], axis=1)


def in_data_range(manifest: Manifest, samples: NDArray) -> NDArray[np.float32]:
    """Samples clipped to the manifest's output_range (when it names one), as float32."""
    out = np.asarray(samples, dtype=np.float32)
    spec = manifest.generation
    if spec is not None and spec.output_range is not None:
        low, high = spec.output_range
        out = np.clip(out, low, high)
    return out


def serving_runtime(manifest: Manifest, generator: Runtime) -> Runtime:
    """What the generator batcher runs: the graph itself, or packed when conditional."""
    if is_conditional(manifest):
        return LabelPackedRuntime(generator, generation_of(manifest).latent_dim)
    return generator


def check_generator(manifest: Manifest, runtime: Runtime) -> None:
    """VersionRefused unless the generator takes z [and label] and gives the manifest's output."""
    generation_of(manifest)
    expected = [LATENT_INPUT, LABEL_INPUT] if is_conditional(manifest) else [LATENT_INPUT]
    if sorted(input_names(runtime)) != sorted(expected):
        raise VersionRefused(
            f"generator graph takes inputs {list(input_names(runtime))}, expected {expected}"
        )
    _check_output(manifest, "generator", runtime)


def check_translator(manifest: Manifest, runtime: Runtime) -> None:
    generation_of(manifest)
    if list(input_names(runtime)) != [IMAGE_INPUT]:
        raise VersionRefused(
            f"translator graph takes inputs {list(input_names(runtime))}, expected "
            f"[{IMAGE_INPUT!r}]"
        )
    if not manifest.input.image_shape:
        raise VersionRefused("a translator needs the manifest's input.image_shape")
    _check_output(manifest, "translator", runtime)


def _check_output(manifest: Manifest, graph: str, runtime: Runtime) -> None:
    spec = manifest.graphs[graph]
    if not spec.outputs or spec.outputs[0].name not in output_names(runtime):
        raise VersionRefused(
            f"{graph} graph gives {list(output_names(runtime))}; the manifest lists "
            f"{[t.name for t in spec.outputs]}"
        )


async def warm_up_generator(manifest: Manifest, generator: Runtime) -> None:
    """One run on zero latents (label 0); VersionRefused unless it gives finite samples of
    output_shape."""
    spec = generation_of(manifest)
    z = np.zeros((WARMUP_ROWS, spec.latent_dim), dtype=np.float32)
    labels = np.zeros(WARMUP_ROWS, dtype=np.int64) if is_conditional(manifest) else None
    runtime = serving_runtime(manifest, generator)
    try:
        outputs = await runtime.infer({input_names(runtime)[0]: pack(z, labels)})
    except Exception as err:
        raise VersionRefused(f"generator warm-up run failed: {err}") from err
    _check_warm_output(outputs[output_name(manifest, "generator")], list(spec.output_shape),
                       "generator")


async def warm_up_translator(manifest: Manifest, translator: Runtime) -> None:
    """One run on two images at the preprocessing's zero (in data units)."""
    image_shape = list(manifest.input.image_shape or ())
    rows = np.zeros((WARMUP_ROWS, manifest.n_features), dtype=np.float32)
    pre = manifest.input.preprocessing
    if {len(pre.shift), len(pre.scale)} <= {1, manifest.n_features}:
        rows = pre.invert(rows).astype(np.float32)
    try:
        outputs = await translator.infer({IMAGE_INPUT: rows.reshape(WARMUP_ROWS, *image_shape)})
    except Exception as err:
        raise VersionRefused(f"translator warm-up run failed: {err}") from err
    _check_warm_output(outputs[output_name(manifest, "translator")], image_shape, "translator")


def _check_warm_output(out: NDArray, shape: list[int], graph: str) -> None:
    if list(out.shape) != [WARMUP_ROWS, *shape]:
        raise VersionRefused(
            f"{graph} output has shape {list(out.shape)} for {WARMUP_ROWS} rows; expected "
            f"{[WARMUP_ROWS, *shape]}"
        )
    if not np.isfinite(out).all():
        raise VersionRefused(f"{graph} gave NaN or infinite values on the warm-up rows")
