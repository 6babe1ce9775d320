"""The manifest.json of a model version: the contract between export and the service.

Export writes it last (after every other file, with their sha256); the service reads it first
and trusts nothing it does not list. Pure pydantic: importing this never imports torch or onnx.

Repository layout::

    <repo>/<model>/<version>/manifest.json
                             scorer.onnx  encoder.onnx  decoder.onnx  calibration.npy
                             second_stage.npz (when the manifest has `second_stage`)

Versions are positive integers as strings ("1", "2", ...); the latest is the largest.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1

ModelKind = Literal["ae", "vae", "beta-vae", "dbvae"]
DecoderKind = Literal["bernoulli", "gaussian", "gaussian-hetero"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Preprocessing(_Strict):
    """x_model = clip((x_raw - shift) * scale), per feature; baked into scorer and encoder graphs.

    `scale` images: shift 0, scale 1/max (digits 1/16, MNIST 1/255), clip [0, 1].
    `standardize` tabular rows: shift = training mean, scale = 1/std (std floored), no clip.
    """

    kind: Literal["scale", "standardize"]
    shift: list[float]
    scale: list[float]
    clip: tuple[float, float] | None = None

    def apply(self, rows: NDArray) -> NDArray[np.float32]:
        """(N, F) raw rows -> (N, F) float32 rows in model space, as the graphs compute them."""
        shift = np.asarray(self.shift, dtype=np.float32)
        scale = np.asarray(self.scale, dtype=np.float32)
        out = (np.asarray(rows, dtype=np.float32) - shift) * scale
        if self.clip is not None:
            np.clip(out, self.clip[0], self.clip[1], out=out)
        return out


class InputSpec(_Strict):
    name: str = "input"
    # Datatype the graphs take; the service casts other numeric datatypes to it.
    datatype: Literal["FP32"] = "FP32"
    # Features per row (without the batch axis): rows are (batch, n_features).
    shape: list[int]
    # (channels, height, width) for image models: the service also accepts (N, H, W) and
    # (N, C, H, W) and flattens them to rows.
    image_shape: list[int] | None = None
    preprocessing: Preprocessing


class TensorSpec(_Strict):
    name: str
    datatype: str = "FP32"
    # -1 marks the dynamic batch axis (named "batch" in the graphs).
    shape: list[int]


class GraphSpec(_Strict):
    file: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class Calibration(_Strict):
    """Conformal calibration scores on a held-out split of normal rows never used in training.

    `calibration.npy` is float64 of shape (size, len(score_kinds)), one column per kind.
    """

    file: str = "calibration.npy"
    size: int = Field(gt=0)
    score_kinds: list[str]
    default_alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    split: str  # how the held-out split was made, in words (fraction, seed)


class SecondStageSpec(_Strict):
    """The second-stage score kind, computed by the service from scorer outputs (numpy).

    See latentwatch.scoring.second_stage: each statistic is standardised with `file`'s mean and std
    (fitted on `fit_split`), kNN statistics measure distances to `file`'s reference rows, and
    `combine` ("max" or "sum") turns the standardised statistics into one score.
    """

    kind: str = "stats_density"
    file: str = "second_stage.npz"
    statistics: list[str]
    combine: Literal["max", "max_abs", "sum"]
    k: int = Field(gt=0)
    n_reference_rows: int = Field(ge=0)
    fit_split: str  # which rows fitted the standardisation, in words


class ReferenceSpec(_Strict):
    """The training data's latent reference for bias reports (bias.drift.LatentReference):
    per-dimension histograms and deciles of the encoder means, their moments, and the mean
    posterior variance; drift and the reference plots of a bias report compare against it."""

    file: str = "reference.npz"
    n_rows: int = Field(gt=1)
    fit_split: str  # which rows were encoded, in words


class Parity(_Strict):
    """ONNX Runtime vs PyTorch on fixed inputs; export fails when a tolerance is not met."""

    batch_sizes: list[int]
    rtol: float
    atol: float
    # Worst |ort - torch| per output name seen over the checked batches.
    max_abs_error: dict[str, float]


class OnnxInfo(_Strict):
    opset: int
    ir_version: int
    producer: str


class Provenance(_Strict):
    data: str
    n_train: int
    n_validation: int
    seed: int
    epochs: int
    final_losses: dict[str, float]
    trained_at: str
    latentwatch_version: str
    torch_version: str


class Manifest(_Strict):
    format_version: int = FORMAT_VERSION
    name: str
    version: str
    model_kind: ModelKind
    decoder: DecoderKind
    beta: float
    latent_dim: int
    n_importance_samples: int
    input: InputSpec
    # "scorer" (required), "encoder", "decoder".
    graphs: dict[str, GraphSpec]
    # Names of scorer outputs that are per-row scores (higher = more anomalous).
    score_kinds: list[str]
    default_score_kind: str
    # Why the default kind is the default (chosen without labels, or fixed by a benchmark).
    default_score_reason: str = ""
    # Present when one score kind is computed by the service after the scorer graph.
    second_stage: SecondStageSpec | None = None
    # The latent reference of the training rows; absent in versions exported before it existed.
    reference: ReferenceSpec | None = None
    calibration: Calibration
    parity: Parity
    onnx: OnnxInfo
    provenance: Provenance
    # sha256 hex digest of every other file in the version directory.
    sha256: dict[str, str]
    created_at: str

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        if "scorer" not in self.graphs:
            raise ValueError("graphs must include 'scorer'")
        if self.default_score_kind not in self.score_kinds:
            raise ValueError(
                f"default_score_kind {self.default_score_kind!r} is not in {self.score_kinds}"
            )
        missing = set(self.calibration.score_kinds) ^ set(self.score_kinds)
        if missing:
            raise ValueError(f"calibration kinds differ from score_kinds: {sorted(missing)}")
        scorer_outputs = {t.name for t in self.graphs["scorer"].outputs}
        computed = {self.second_stage.kind} if self.second_stage else set()
        if not set(self.score_kinds) <= scorer_outputs | computed:
            raise ValueError("every score kind must be a scorer output or the second stage's")
        return self

    @property
    def n_features(self) -> int:
        return self.input.shape[0]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, version_dir: Path) -> Manifest:
        return cls.model_validate_json((version_dir / MANIFEST_FILE).read_bytes())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_files(version_dir: Path, manifest: Manifest) -> list[str]:
    """Problems with the version's files, in words; empty when every sha256 matches."""
    problems = []
    for name, expected in sorted(manifest.sha256.items()):
        path = version_dir / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif (actual := sha256_file(path)) != expected:
            problems.append(
                f"{name}: sha256 {actual[:12]}… does not match manifest {expected[:12]}…"
            )
    return problems


def next_version(model_dir: Path) -> str:
    """The next free integer version under <repo>/<model>/."""
    existing = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return str(max(existing, default=0) + 1)
