"""Generate, Traverse and Translate on a served version: latent draws, sweeps and their checks.

A version generates through its generator graph (gan, cgan: z [, label] -> samples in data
units, service/generative_graphs.py) or, for VAE families, through its decoder graph on latent
points (decoder means in model space, the manifest's preprocessing inverted). Draws come from a
numpy Generator seeded by the request, so a seed and a request give the same samples on every
call and every server. Latents are drawn first and labels after them, so one seed gives the
same latents whatever labels are asked for.

Every bad value is an InvalidInput naming the field. The limits are the same on every server
(module constants below), so a request valid on one is valid on all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput, quote
from latentwatch.families import family
from latentwatch.scoring.contract import validate_rows
from latentwatch.service.generative_graphs import in_data_range, output_name, pack
from latentwatch.service.repository import ModelVersion

MAX_SAMPLES = 4096  # samples of one Generate, and dimensions x steps of one Traverse
MIN_STEPS, MAX_STEPS = 2, 64  # steps of one traversal
DEFAULT_LOW, DEFAULT_HIGH, DEFAULT_STEPS = -3.0, 3.0, 7
MIN_TRUNCATION, MAX_TRUNCATION = 0.05, 10.0  # in prior standard deviations
DEFAULT_SPREAD, MAX_SPREAD = 0.5, 10.0  # draws around latent centres
MAX_LATENT_ABS = 1000.0  # centres, base points and traversal values
MAX_SEED = 2**64 - 1
# A traversed dimension is named inactive when its output moves less than INACTIVE_CHANGE (model
# space: standardised features, or pixels in [0, 1]: nothing one can see), or less than
# INACTIVE_SHARE of the most any swept dimension moves it: an MNIST VAE's 16 dimensions move
# pixels by 0.02 to 0.09, all above the absolute floor, and the weakest do little next to the
# strongest.
INACTIVE_CHANGE = 0.01
INACTIVE_SHARE = 0.1
# Rounds of redrawing values beyond the truncation: at the smallest truncation a value is kept
# with probability 0.04, so after 2,000 rounds none is left but with probability 0.96**2000.
REDRAW_ROUNDS = 2000


@dataclass(frozen=True)
class GenerateArgs:
    n: int
    seed: int | None = None  # None: a fresh one, named in the result
    labels: Sequence[int] = ()  # one for all, one per sample, or none (drawn)
    truncation: float | None = None
    centers: NDArray | None = None  # (k, Z)
    spread: float | None = None


@dataclass(frozen=True)
class GenerateResult:
    model_name: str
    model_version: str
    samples: NDArray[np.float32]  # (n, *sample_shape) in data units
    latents: NDArray[np.float32]  # (n, Z)
    labels: NDArray[np.int64] | None  # (n,) for conditional models
    seed: int
    class_names: tuple[str, ...]


@dataclass(frozen=True)
class TraverseArgs:
    rows: NDArray | None = None  # one row, encoded: the base point
    latent: NDArray | None = None  # (Z,) or (1, Z)
    dimensions: Sequence[int] = ()  # empty: all
    low: float | None = None
    high: float | None = None
    steps: int | None = None
    label: int | None = None  # conditional models


@dataclass(frozen=True)
class TraverseResult:
    model_name: str
    model_version: str
    base_latent: NDArray[np.float32]  # (Z,)
    dimensions: tuple[int, ...]
    values: NDArray[np.float64]  # (steps,)
    samples: NDArray[np.float32]  # (D, steps, *sample_shape) in data units
    change: NDArray[np.float64]  # (D,)
    inactive: tuple[int, ...]
    inactive_threshold: float


@dataclass(frozen=True)
class TranslateResult:
    model_name: str
    model_version: str
    output: NDArray[np.float32]  # (N, C, H, W) in data units


@dataclass(frozen=True)
class _Latents:
    """What a version generates from: its latent space and how samples come out of it."""

    latent_dim: int
    n_classes: int | None
    class_names: tuple[str, ...]
    has_prior: bool  # N(0, I): variational VAEs and generators; a plain AE has none
    sample_shape: tuple[int, ...]


def _latents_of(mv: ModelVersion) -> _Latents:
    m = mv.manifest
    if mv.generator is not None and m.generation is not None:
        g = m.generation
        return _Latents(g.latent_dim, g.n_classes, tuple(g.class_names or ()), True,
                        tuple(g.output_shape))
    if mv.decoding is not None and m.latent is not None:
        shape = tuple(m.input.image_shape or (m.n_features,))
        return _Latents(m.latent.latent_dim, None, (), family(m.model_kind).variational, shape)
    raise InvalidInput(
        f"model {quote(mv.name)} version {quote(mv.version)} cannot generate: its capabilities "
        f"are {m.capabilities} and it has no generator or decoder graph"
    )


async def _decode(mv: ModelVersion, z: NDArray, labels: NDArray | None) -> NDArray[np.float32]:
    """(n, Z) latents [and labels] -> (n, *sample_shape) samples in data units."""
    m = mv.manifest
    if mv.generator is not None:
        out = await mv.generator.submit(pack(z, labels))
        samples = in_data_range(m, out[output_name(m, "generator")])
    else:
        assert mv.decoding is not None  # _latents_of checked
        out = await mv.decoding.submit(np.ascontiguousarray(z, dtype=np.float32))
        model_space = out[output_name(m, "decoder")]  # (n, F)
        samples = m.input.preprocessing.invert(model_space).astype(np.float32)
    return samples.reshape(z.shape[0], *_latents_of(mv).sample_shape)


async def generate(mv: ModelVersion, args: GenerateArgs) -> GenerateResult:
    space = _latents_of(mv)
    n = check_count(args.n, "n")
    seed = check_seed(args.seed)
    truncation = check_truncation(args.truncation)
    centers = None if args.centers is None else check_centers(args.centers, space.latent_dim)
    spread = check_spread(args.spread, centers is not None)
    if centers is None and not space.has_prior:
        raise InvalidInput(
            f"model {quote(mv.name)} ({mv.manifest.model_kind}) has no prior to sample from; "
            "send centers (latent points) to sample around"
        )
    rng = np.random.default_rng(seed)
    z = draw_latents(rng, n, space.latent_dim, truncation, centers, spread)
    labels = resolve_labels(args.labels, n, space.n_classes, rng)
    samples = await _decode(mv, z, labels)
    return GenerateResult(mv.name, mv.version, samples, z, labels, seed, space.class_names)


async def traverse(mv: ModelVersion, args: TraverseArgs) -> TraverseResult:
    space = _latents_of(mv)
    dims = check_dimensions(args.dimensions, space.latent_dim)
    values = sweep_values(args.low, args.high, args.steps, len(dims))
    label = check_label(args.label, space.n_classes)
    if args.rows is not None and args.latent is not None:
        raise InvalidInput("set at most one of input (a row, encoded) and latent (a point)")
    if args.rows is not None:
        rows = validate_rows(args.rows, mv.contract)
        if rows.shape[0] != 1:
            raise InvalidInput(f"input: {rows.shape[0]} rows; a traversal starts at one row")
        base = np.asarray((await mv.encoder.submit(rows))["latent_mu"][0], dtype=np.float32)
    elif args.latent is not None:
        base = check_centers(args.latent, space.latent_dim, what="latent")
        if base.shape[0] != 1:
            raise InvalidInput(f"latent: {base.shape[0]} points; a traversal starts at one")
        base = base[0]
    else:
        base = np.zeros(space.latent_dim, dtype=np.float32)  # the prior mean
    z = sweep_latents(base, dims, values)  # (D * steps, Z)
    labels = None if label is None else np.full(z.shape[0], label, dtype=np.int64)
    samples = await _decode(mv, z, labels)
    samples = samples.reshape(len(dims), values.shape[0], *space.sample_shape)
    change = change_per_dimension(mv, samples)
    threshold = inactive_threshold(change)
    inactive = tuple(d for d, c in zip(dims, change.tolist(), strict=True) if c < threshold)
    return TraverseResult(mv.name, mv.version, base, dims, values, samples, change, inactive,
                          threshold)


async def translate(mv: ModelVersion, array: NDArray) -> TranslateResult:
    m = mv.manifest
    if mv.translator is None or not m.input.image_shape:
        raise InvalidInput(
            f"model {quote(mv.name)} version {quote(mv.version)} cannot translate: its "
            f"capabilities are {m.capabilities}"
        )
    rows = validate_rows(array, mv.contract)  # (N, F)
    images = rows.reshape(rows.shape[0], *m.input.image_shape)
    out = await mv.translator.submit(images)
    return TranslateResult(mv.name, mv.version,
                           in_data_range(m, out[output_name(m, "translator")]))


def change_per_dimension(mv: ModelVersion, samples: NDArray) -> NDArray[np.float64]:
    """(D, steps, *shape) sweep in data units -> (D,): per dimension the mean over output values
    of their standard deviation across the steps, in model space (the version's preprocessing
    applied), so one threshold fits images and standardised rows alike."""
    d, steps = samples.shape[:2]
    flat = samples.reshape(d * steps, -1)
    pre = mv.manifest.input.preprocessing
    if flat.shape[1] == mv.manifest.n_features:
        flat = pre.apply(flat)
    per_step = flat.reshape(d, steps, -1).astype(np.float64)
    return per_step.std(axis=1).mean(axis=1)


def inactive_threshold(change: NDArray[np.float64]) -> float:
    """The change below which a swept dimension is inactive: the absolute floor, or a share of
    the strongest swept dimension's change when that is higher."""
    return max(INACTIVE_CHANGE, INACTIVE_SHARE * float(change.max(initial=0.0)))


def check_count(n: int, what: str) -> int:
    if not 1 <= n <= MAX_SAMPLES:
        raise InvalidInput(f"{what}: {n} is not in 1..{MAX_SAMPLES}")
    return int(n)


def check_seed(seed: int | None) -> int:
    """The request's seed, or a fresh one from the operating system's entropy."""
    if seed is None:
        return int(np.random.SeedSequence().entropy) % (MAX_SEED + 1)  # type: ignore[arg-type]
    if not 0 <= seed <= MAX_SEED:
        raise InvalidInput(f"seed: {seed} is not in 0..2**64-1")
    return int(seed)


def check_truncation(truncation: float | None) -> float | None:
    if truncation is not None and not MIN_TRUNCATION <= truncation <= MAX_TRUNCATION:
        raise InvalidInput(
            f"truncation: {truncation} is not in [{MIN_TRUNCATION}, {MAX_TRUNCATION}] "
            "(prior standard deviations); leave it unset for none"
        )
    return truncation


def check_spread(spread: float | None, has_centers: bool) -> float:
    if spread is None:
        return DEFAULT_SPREAD
    if not has_centers:
        raise InvalidInput("spread: set without centers; it is the spread around each centre")
    if not 0.0 < spread <= MAX_SPREAD:
        raise InvalidInput(f"spread: {spread} is not in (0, {MAX_SPREAD}]")
    return spread


def check_centers(array: NDArray, latent_dim: int, what: str = "centers") -> NDArray[np.float32]:
    """(k, Z) (or one (Z,)) finite latent points within MAX_LATENT_ABS -> float32 (k, Z)."""
    points = np.asarray(array)
    if points.ndim == 1:
        points = points[None, :]
    if points.dtype.kind not in "iuf" or points.ndim != 2 or points.shape[1] != latent_dim:
        raise InvalidInput(
            f"{what}: shape {list(np.asarray(array).shape)} {points.dtype}; expected numeric "
            f"(k, {latent_dim}) latent points"
        )
    if not 1 <= points.shape[0] <= MAX_SAMPLES:
        raise InvalidInput(f"{what}: {points.shape[0]} points is not in 1..{MAX_SAMPLES}")
    values = points.astype(np.float64)
    if not np.isfinite(values).all() or np.abs(values).max() > MAX_LATENT_ABS:
        raise InvalidInput(f"{what}: every value must be finite and within +-{MAX_LATENT_ABS:g}")
    return values.astype(np.float32)


def check_label(label: int | None, n_classes: int | None) -> int | None:
    """A traversal's label: None for unconditional models, 0 when a conditional one gets none."""
    if n_classes is None:
        if label is not None:
            raise InvalidInput("label: this model is not class-conditional; leave it unset")
        return None
    label = 0 if label is None else label
    if not 0 <= label < n_classes:
        raise InvalidInput(f"label: {label} is not in 0..{n_classes - 1}")
    return int(label)


def resolve_labels(
    labels: Sequence[int], n: int, n_classes: int | None, rng: np.random.Generator
) -> NDArray[np.int64] | None:
    """(n,) labels: one repeated, one per sample, or drawn uniformly; None when unconditional."""
    if n_classes is None:
        if len(labels):
            raise InvalidInput("labels: this model is not class-conditional; send none")
        return None
    if not len(labels):
        return rng.integers(0, n_classes, size=n, dtype=np.int64)
    if len(labels) not in (1, n):
        raise InvalidInput(f"labels: {len(labels)} labels for n = {n}; send 1 or {n}")
    out = np.asarray(list(labels), dtype=np.int64)
    bad = np.flatnonzero((out < 0) | (out >= n_classes))
    if bad.size:
        raise InvalidInput(
            f"labels: {int(out[bad[0]])} (at {int(bad[0])}) is not in 0..{n_classes - 1}"
        )
    return np.broadcast_to(out, (n,)).copy()


def truncated_normal(
    rng: np.random.Generator, shape: tuple[int, ...], truncation: float | None
) -> NDArray[np.float64]:
    """N(0, 1) draws; with a truncation, values beyond +-truncation are drawn again."""
    z = rng.standard_normal(shape)
    if truncation is None:
        return z
    for _ in range(REDRAW_ROUNDS):
        beyond = np.abs(z) > truncation
        if not beyond.any():
            break
        z[beyond] = rng.standard_normal(int(beyond.sum()))
    return np.clip(z, -truncation, truncation)  # a no-op but with vanishing probability


def draw_latents(
    rng: np.random.Generator,
    n: int,
    latent_dim: int,
    truncation: float | None = None,
    centers: NDArray | None = None,
    spread: float = DEFAULT_SPREAD,
) -> NDArray[np.float32]:
    """(n, Z) latent points: prior draws, or centre i mod k + spread * draw."""
    z = truncated_normal(rng, (n, latent_dim), truncation)
    if centers is not None:
        z = centers[np.arange(n) % centers.shape[0]].astype(np.float64) + spread * z
    return z.astype(np.float32)


def check_dimensions(dimensions: Sequence[int], latent_dim: int) -> tuple[int, ...]:
    if not len(dimensions):
        return tuple(range(latent_dim))
    dims = tuple(int(d) for d in dimensions)
    bad = [d for d in dims if not 0 <= d < latent_dim]
    if bad:
        raise InvalidInput(f"dimensions: {bad[0]} is not in 0..{latent_dim - 1}")
    if len(set(dims)) != len(dims):
        raise InvalidInput("dimensions: a dimension is named more than once")
    return dims


def sweep_values(
    low: float | None, high: float | None, steps: int | None, n_dimensions: int
) -> NDArray[np.float64]:
    """(steps,) values from low to high, after checking the range and the sweep's size."""
    low = DEFAULT_LOW if low is None else low
    high = DEFAULT_HIGH if high is None else high
    steps = DEFAULT_STEPS if steps is None else steps
    if not (math.isfinite(low) and math.isfinite(high) and low < high
            and max(abs(low), abs(high)) <= MAX_LATENT_ABS):
        raise InvalidInput(
            f"low, high: {low}, {high} is not a finite range with low < high within "
            f"+-{MAX_LATENT_ABS:g}"
        )
    if not MIN_STEPS <= steps <= MAX_STEPS:
        raise InvalidInput(f"steps: {steps} is not in {MIN_STEPS}..{MAX_STEPS}")
    if n_dimensions * steps > MAX_SAMPLES:
        raise InvalidInput(
            f"dimensions x steps: {n_dimensions} x {steps} samples is more than {MAX_SAMPLES}; "
            "sweep fewer dimensions or steps"
        )
    return np.linspace(low, high, steps)


def sweep_latents(
    base: NDArray, dimensions: Sequence[int], values: NDArray
) -> NDArray[np.float32]:
    """(D * steps, Z): the base point with dimension d set to each value, dimension by
    dimension."""
    steps = values.shape[0]
    z = np.tile(np.asarray(base, dtype=np.float32), (len(dimensions) * steps, 1))
    for i, d in enumerate(dimensions):
        z[i * steps : (i + 1) * steps, d] = values
    return z
