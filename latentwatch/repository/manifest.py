"""The manifest.json of a model version: the contract between export and the service.

Export writes it last (after every other file, with their sha256); the service reads it first
and trusts nothing it does not list. Pure pydantic: importing this never imports torch or onnx.

Where the files live (names, version directories, the walker): latentwatch.repository.layout.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from latentwatch.families import Capability
from latentwatch.repository.capabilities import check_capabilities
from latentwatch.repository.layout import (
    CALIBRATION_FILE,
    MANIFEST_FILE,
    REFERENCE_FILE,
    SECOND_STAGE_FILE,
)
from latentwatch.repository.manifest_v1 import is_v1, upgrade_v1
from latentwatch.scoring.preprocessing import Preprocessing

FORMAT_VERSION: Literal[2] = 2

DecoderKind = Literal["bernoulli", "gaussian", "gaussian-hetero"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    # Column names of the training data (CSV header, Parquet/Arrow schema), one per feature, in
    # graph order; clients put named inputs in this order. None for unnamed data and v1.
    feature_names: list[str] | None = None

    @model_validator(mode="after")
    def _one_name_per_feature(self) -> InputSpec:
        if self.feature_names is not None:
            if len(self.feature_names) != self.shape[-1]:
                raise ValueError(f"feature_names has {len(self.feature_names)} names for "
                                 f"{self.shape[-1]} features")
            if len(set(self.feature_names)) != len(self.feature_names):
                raise ValueError("feature_names has duplicates")
        return self


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

    file: str = CALIBRATION_FILE
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
    file: str = SECOND_STAGE_FILE
    statistics: list[str]
    combine: Literal["max", "max_abs", "sum"]
    k: int = Field(gt=0)
    n_reference_rows: int = Field(ge=0)
    fit_split: str  # which rows fitted the standardisation, in words


class ReferenceSpec(_Strict):
    """The training data's latent reference for bias reports (bias.drift.LatentReference):
    per-dimension histograms and deciles of the encoder means, their moments, and the mean
    posterior variance; drift and the reference plots of a bias report compare against it."""

    file: str = REFERENCE_FILE
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


class Recalibration(_Strict):
    """One `latentwatch recalibrate`: new calibration rows, the graphs of `from_version`."""

    from_version: str
    data: str  # where the calibration rows came from
    n_rows: int = Field(gt=0)
    recalibrated_at: str


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
    # The training data's column names as read (CSV header, Parquet/Arrow schema); export copies
    # them into input.feature_names, the field clients match named inputs against.
    feature_names: list[str] | None = None
    # Recalibrations since the training run, oldest first (export/recalibrate.py); the training
    # fields above still describe the run that made the graphs.
    recalibrations: list[Recalibration] = Field(default_factory=list)


class LatentSpec(_Strict):
    """The latent space of an encoder/decoder family (absent for families without one)."""

    latent_dim: int = Field(gt=0)
    beta: float | None = None  # the KL weight in training (variational families)
    decoder: DecoderKind | None = None  # the decoder's likelihood
    # Fixed latent draws the scorer averages over; 0 when it draws none (the AE).
    n_importance_samples: int = Field(default=0, ge=0)


class ScoringSpec(_Strict):
    """What the scorer graph (and the service's second stage) give, and their calibration."""

    # Names of per-row scores (higher = more anomalous): scorer outputs or the second stage's.
    score_kinds: list[str]
    default_score_kind: str
    # Why the default kind is the default (chosen without labels, or fixed by a benchmark).
    default_score_reason: str = ""
    # Present when one score kind is computed by the service after the scorer graph.
    second_stage: SecondStageSpec | None = None
    calibration: Calibration

    @model_validator(mode="after")
    def _consistent(self) -> ScoringSpec:
        if self.default_score_kind not in self.score_kinds:
            raise ValueError(
                f"default_score_kind {self.default_score_kind!r} is not in {self.score_kinds}"
            )
        missing = set(self.calibration.score_kinds) ^ set(self.score_kinds)
        if missing:
            raise ValueError(f"calibration kinds differ from score_kinds: {sorted(missing)}")
        return self


class Manifest(_Strict):
    """Format 2: a version lists its graphs and capabilities; family sections are optional.

    Format 1 manifests (flat latent and scoring fields) are upgraded when read
    (latentwatch.repository.manifest_v1); latentwatch.repository.capabilities checks that the
    capabilities, graphs and sections agree.
    """

    format_version: Literal[2] = FORMAT_VERSION
    name: str
    version: str
    model_kind: str  # a latentwatch.families kind
    capabilities: list[Capability]
    input: InputSpec
    # Graph name -> file and tensors: "scorer", "encoder", "decoder", ...
    graphs: dict[str, GraphSpec]
    latent: LatentSpec | None = None
    scoring: ScoringSpec | None = None
    # The latent reference of the training rows for bias reports; absent in older versions.
    reference: ReferenceSpec | None = None
    parity: Parity
    onnx: OnnxInfo
    provenance: Provenance
    # sha256 hex digest of every other file in the version directory.
    sha256: dict[str, str]
    created_at: str

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        return upgrade_v1(data) if is_v1(data) else data

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        check_capabilities(self)
        return self

    def require_scoring(self) -> ScoringSpec:
        """The scoring section; ValueError for a version that cannot score."""
        if self.scoring is None:
            raise ValueError(f"{self.name} version {self.version} has no scoring section")
        return self.scoring

    def require_latent(self) -> LatentSpec:
        """The latent section; ValueError for a version without a latent space."""
        if self.latent is None:
            raise ValueError(f"{self.name} version {self.version} has no latent section")
        return self.latent

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
