"""What an export of a generator family (gan, cgan, pix2pix) needs, already loaded.

The run directory is read by `load_generator_run` (export/generator_run.py); tests build these
inputs around small stand-in modules. The model is the trained pair; export uses
`model.generator` only: `forward(z[, labels]) -> (B, *sample_shape)` for gan/cgan and
`forward(image) -> image` for pix2pix, both in model space [0, 1] (the training data's
Preprocessing maps data units there; export bakes its inverse into the graph).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from torch import nn

from latentwatch.export.errors import ExportError
from latentwatch.families import family
from latentwatch.repository.manifest import Provenance
from latentwatch.scoring.preprocessing import Preprocessing


@dataclass(frozen=True)
class GeneratorInputs:
    model: nn.Module  # has `.generator`
    model_kind: str  # a family with a "generator" or "translator" graph
    sample_shape: list[int]  # one sample in data units: [F] or [C, H, W]
    preprocessing: Preprocessing  # the training data's: data units -> model space [0, 1]
    provenance: Provenance
    latent_dim: int = 0  # Z of `z`; 0 for a translator
    n_classes: int | None = None  # conditional generators: labels 0 .. n_classes - 1
    class_names: list[str] | None = None
    stabilisation: str = ""  # what training used, in words
    # Translators: held-out (sketch, true image) pairs in data units, (N, C, H, W) each, never
    # trained on; the inference mode of dropout is chosen on them.
    heldout_pairs: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None
    feature_names: list[str] | None = None

    @property
    def n_features(self) -> int:
        return math.prod(self.sample_shape)

    @property
    def image_shape(self) -> list[int] | None:
        return list(self.sample_shape) if len(self.sample_shape) == 3 else None

    @property
    def translates(self) -> bool:
        return "translator" in family(self.model_kind).graphs


def exports_generator(kind: str) -> bool:
    """Whether runs of `kind` export a generator or translator graph (and no scorer)."""
    return bool({"generator", "translator"} & set(family(kind).graphs))


def check_generator_inputs(inputs: GeneratorInputs) -> None:
    """ExportError when the loaded inputs disagree with each other or with the family."""
    fam = family(inputs.model_kind)
    if not exports_generator(inputs.model_kind):
        raise ExportError(f"model kind {inputs.model_kind!r} has no generator graph")
    if len(inputs.sample_shape) not in (1, 3) or min(inputs.sample_shape) < 1:
        raise ExportError(f"sample_shape {inputs.sample_shape} is neither [F] nor [C, H, W]")
    pre = inputs.preprocessing
    if len(pre.shift) != inputs.n_features or len(pre.scale) != inputs.n_features:
        raise ExportError(f"preprocessing has {len(pre.shift)} shifts and {len(pre.scale)} "
                          f"scales for {inputs.n_features} features")
    if inputs.translates:
        if inputs.image_shape is None:
            raise ExportError("a translator takes images: sample_shape is [C, H, W]")
        if inputs.latent_dim != 0 or inputs.n_classes is not None:
            raise ExportError("a translator takes no z and no label")
        if inputs.heldout_pairs is None:
            raise ExportError("a translator export needs held-out (sketch, image) pairs to "
                              "choose the inference mode of dropout")
        sketches, images = inputs.heldout_pairs
        expected = (len(sketches), *inputs.sample_shape)
        if len(sketches) == 0 or sketches.shape != expected or images.shape != expected:
            raise ExportError(f"held-out pairs have shapes {sketches.shape} and {images.shape}, "
                              f"expected (n > 0, {', '.join(map(str, inputs.sample_shape))})")
        return
    if inputs.latent_dim < 1:
        raise ExportError(f"a generator needs latent_dim >= 1, got {inputs.latent_dim}")
    if fam.conditional != (inputs.n_classes is not None):
        raise ExportError(f"model kind {inputs.model_kind!r}: n_classes is "
                          f"{'required' if inputs.n_classes is None else 'only for conditional'}"
                          " generators")
