"""The torch modules that become generator.onnx and translator.onnx: data units out (and in).

    generator.onnx   z FP32 (batch, Z) [, label INT64 (batch,)] -> sample FP32 (batch, *shape)
    translator.onnx  image FP32 (batch, C, H, W)               -> translated FP32 (batch, C, H, W)

The model's postprocessing is baked in: the generator's model-space output [0, 1] goes back
through the training data's Preprocessing (`invert`: x / scale + shift) and is clipped to the
data's range (e.g. [0, 16] for the built-in digits), so a client gets pixels or rows in the
units it trained on. A translator also applies the Preprocessing to its input, as the scorer
does. No graph draws random numbers: a sample depends on z (and label) only, so the service
is deterministic for a seed by drawing z from it.

Pix2Pix and dropout. The reference keeps dropout on at test time as its noise source. An ONNX
graph that does that draws a fresh mask on every call (not deterministic), so the two
exportable modes are measured on the run's held-out pairs (mean |translated - true| in data
units): dropout off (eval mode, the expectation over masks up to the nonlinearity), and
dropout on with one mask drawn from the export seed and baked in (`FixedMaskDropout`, the same
mask for every row, so a row's output depends on the row only). The mode with the lower L1 is
exported and recorded in `generation.dropout_at_inference`, the fixed mask only when it wins
by more than 2% (MIN_DROPOUT_GAIN); the reference's train-mode L1 (fresh masks) is measured
too, for the log and the benchmark.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn

from latentwatch.export.generator_inputs import GeneratorInputs
from latentwatch.models.preprocessing import Preprocess
from latentwatch.repository.layout import graph_file
from latentwatch.scoring.preprocessing import Preprocessing

logger = logging.getLogger(__name__)

MAX_DROPOUT_PAIRS = 2048  # held-out pairs the dropout choice is measured on
MIN_DROPOUT_GAIN = 0.02  # relative L1 gain a fixed mask needs over eval mode to be exported


@dataclass(frozen=True)
class TensorDef:
    name: str
    shape: list[int]  # without the batch axis
    datatype: Literal["FP32", "INT64"] = "FP32"


@dataclass(frozen=True)
class DropoutChoice:
    """Mean |translated - true| in data units on held-out pairs, per inference mode."""

    l1_eval: float  # dropout off
    l1_fixed_mask: float  # dropout on, one seeded mask baked into the graph
    l1_train: float  # dropout on, fresh masks per call (the reference; not deterministic)
    n_pairs: int

    @property
    def at_inference(self) -> bool:
        """The fixed mask only when it clearly beats eval mode: one draw of a mask that wins
        by less than MIN_DROPOUT_GAIN is noise of the measurement, not a better model."""
        return self.l1_fixed_mask < (1.0 - MIN_DROPOUT_GAIN) * self.l1_eval


@dataclass(frozen=True)
class GeneratorGraphDef:
    """One generator or translator graph: the module and its tensors (shapes without batch)."""

    name: Literal["generator", "translator"]
    module: nn.Module
    inputs: tuple[TensorDef, ...]
    outputs: dict[str, list[int]]
    dropout: DropoutChoice | None = field(default=None)  # translators only

    @property
    def file(self) -> str:
        return graph_file(self.name)


def data_bounds(pre: Preprocessing) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
    """Per-feature (low, high) in data units that the clip of `pre` maps to; None unclipped."""
    if pre.clip is None:
        return None
    ends = pre.invert(np.array([pre.clip], dtype=np.float64).T.repeat(len(pre.shift), axis=1))
    return ends.min(axis=0), ends.max(axis=0)  # a negative scale swaps the ends


def output_range(pre: Preprocessing) -> list[float] | None:
    """[low, high] in data units that samples are clipped to, when every feature shares it
    (images: [0, pixel max]); None for unclipped data or per-feature ranges (min-max scaled
    rows are clipped to each column's training range, which one pair cannot state)."""
    bounds = data_bounds(pre)
    if bounds is None or np.ptp(bounds[0]) > 0 or np.ptp(bounds[1]) > 0:
        return None
    return [float(bounds[0][0]), float(bounds[1][0])]


class Postprocess(nn.Module):
    """The torch twin of Preprocessing.invert, clipped to the data's range: (B, F) model-space
    rows -> (B, F) rows in data units."""

    shift: Tensor  # (F,)
    scale: Tensor  # (F,)
    low: Tensor  # (F,)
    high: Tensor  # (F,)

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__()
        self.register_buffer("shift", torch.tensor(preprocessing.shift, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(preprocessing.scale, dtype=torch.float32))
        bounds = data_bounds(preprocessing)
        self.clipped = bounds is not None
        if bounds is not None:
            self.register_buffer("low", torch.tensor(bounds[0], dtype=torch.float32))
            self.register_buffer("high", torch.tensor(bounds[1], dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:  # (B, F) -> (B, F)
        x = x / self.scale + self.shift
        if self.clipped:  # per-feature bounds: Min/Max, as Clip takes scalars only
            x = torch.minimum(torch.maximum(x, self.low), self.high)
        return x


class SampleGenerator(nn.Module):
    """z (B, Z) [, label (B,)] -> sample (B, *shape) in data units."""

    def __init__(self, generator: nn.Module, preprocessing: Preprocessing, shape: list[int],
                 conditional: bool) -> None:
        super().__init__()
        self.generator = generator
        self.post = Postprocess(preprocessing)
        self.shape = list(shape)
        self.conditional = conditional

    def forward(self, z: Tensor, label: Tensor | None = None) -> Tensor:
        y = self.generator(z, label) if self.conditional else self.generator(z)  # (B, *shape)
        return self.post(y.flatten(1)).reshape(-1, *self.shape)  # model space -> data units


class Translator(nn.Module):
    """image (B, C, H, W) in data units -> translated (B, C, H, W) in data units."""

    def __init__(self, generator: nn.Module, preprocessing: Preprocessing,
                 shape: list[int]) -> None:
        super().__init__()
        self.generator = generator
        self.pre = Preprocess(preprocessing)
        self.post = Postprocess(preprocessing)
        self.shape = list(shape)

    def forward(self, image: Tensor) -> Tensor:
        x = self.pre(image.flatten(1)).reshape(-1, *self.shape)  # data units -> model space
        return self.post(self.generator(x).flatten(1)).reshape(-1, *self.shape)


class FixedMaskDropout(nn.Module):
    """Dropout with one mask fixed at export (scaled by 1 / keep), the same for every row."""

    mask: Tensor  # (1, *activation shape)

    def __init__(self, mask: Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.mask


def _dropouts(module: nn.Module) -> list[tuple[nn.Module, str, nn.Dropout]]:
    """(parent, attribute, dropout) for every nn.Dropout inside `module`."""
    found = []
    for parent in module.modules():
        for attribute, child in parent.named_children():
            if isinstance(child, nn.Dropout):
                found.append((parent, attribute, child))
    return found


def with_fixed_masks(generator: nn.Module, probe: Tensor, seed: int) -> nn.Module:
    """An eval-mode copy of `generator` whose dropouts apply one seeded mask each; `probe`
    (one model-space input) gives the activation shapes."""
    fixed = copy.deepcopy(generator).eval()
    shapes: dict[int, torch.Size] = {}
    hooks = [d.register_forward_hook(lambda m, _i, out: shapes.__setitem__(id(m), out.shape))
             for _, _, d in _dropouts(fixed)]
    with torch.no_grad():
        fixed(probe)
    for hook in hooks:
        hook.remove()
    draws = torch.Generator().manual_seed(seed)
    for parent, attribute, dropout in _dropouts(fixed):
        keep = 1.0 - dropout.p
        shape = (1, *shapes[id(dropout)][1:])
        mask = (torch.rand(shape, generator=draws) < keep).float() / keep
        setattr(parent, attribute, FixedMaskDropout(mask))
    return fixed


def _l1(translator: nn.Module, sketches: Tensor, images: Tensor) -> float:
    with torch.no_grad():
        return float((translator(sketches) - images).abs().mean())


def choose_dropout(inputs: GeneratorInputs, generator: nn.Module) -> tuple[nn.Module,
                                                                            DropoutChoice]:
    """The generator to export (eval mode, or with fixed masks) and the measured choice."""
    assert inputs.heldout_pairs is not None
    shape, pre, seed = inputs.sample_shape, inputs.preprocessing, inputs.provenance.seed
    sketches, images = (torch.from_numpy(np.ascontiguousarray(a[:MAX_DROPOUT_PAIRS],
                                                              dtype=np.float32))
                        for a in inputs.heldout_pairs)
    generator = generator.eval()
    fixed = with_fixed_masks(generator, torch.zeros(1, *shape), seed)
    l1_eval = _l1(Translator(generator, pre, shape), sketches, images)
    l1_fixed = _l1(Translator(fixed, pre, shape), sketches, images)
    train_mode = copy.deepcopy(generator).eval()
    for _, _, dropout in _dropouts(train_mode):
        dropout.train()  # batch norm keeps its running statistics
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        l1_train = _l1(Translator(train_mode, pre, shape), sketches, images)
    choice = DropoutChoice(l1_eval=l1_eval, l1_fixed_mask=l1_fixed, l1_train=l1_train,
                           n_pairs=len(sketches))
    logger.info("pix2pix dropout on %d held-out pairs, L1 in data units: eval %.4g, fixed mask "
                "%.4g, train mode %.4g -> exporting %s", choice.n_pairs, l1_eval, l1_fixed,
                l1_train, "the fixed mask" if choice.at_inference else "eval mode")
    return (fixed if choice.at_inference else generator), choice


def build_generator_graphs(inputs: GeneratorInputs) -> list[GeneratorGraphDef]:
    """generator.onnx for a gan or cgan run (the generator left in eval mode)."""
    generator = inputs.model.generator.eval()  # type: ignore[union-attr]
    conditional = inputs.n_classes is not None
    module = SampleGenerator(generator, inputs.preprocessing, inputs.sample_shape, conditional)
    tensors = [TensorDef("z", [inputs.latent_dim])]
    if conditional:
        tensors.append(TensorDef("label", [], "INT64"))
    return [GeneratorGraphDef("generator", module.eval(), tuple(tensors),
                              {"sample": list(inputs.sample_shape)})]


def build_translator_graphs(inputs: GeneratorInputs) -> list[GeneratorGraphDef]:
    """translator.onnx for a pix2pix run, in the dropout mode chosen on held-out pairs."""
    shape = list(inputs.sample_shape)
    generator, choice = choose_dropout(inputs, inputs.model.generator)  # type: ignore[arg-type]
    module = Translator(generator, inputs.preprocessing, shape).eval()
    return [GeneratorGraphDef("translator", module, (TensorDef("image", shape),),
                              {"translated": shape}, dropout=choice)]


def seeded_feeds(graph: GeneratorGraphDef, n_rows: int, seed: int, n_classes: int | None,
                 images: NDArray[np.float32] | None = None) -> dict[str, NDArray]:
    """Deterministic inputs for parity: seeded z, every label in turn, held-out images."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, NDArray] = {}
    for tensor in graph.inputs:
        if tensor.name == "label":
            assert n_classes is not None
            feeds["label"] = np.arange(n_rows, dtype=np.int64) % n_classes
        elif images is not None and tensor.name == "image":
            index = np.linspace(0, len(images) - 1, num=n_rows).round().astype(np.int64)
            feeds["image"] = np.ascontiguousarray(images[index], dtype=np.float32)
        else:
            shape = (n_rows, *tensor.shape)
            feeds[tensor.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds
