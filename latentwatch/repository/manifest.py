"""The manifest.json of a model version: the contract between export and the service.

Export writes it last (after every other file, with their sha256); the service reads it first
and trusts nothing it does not list. Pure pydantic: importing this never imports torch or onnx.

No sha256 covers the manifest itself (a signature can: latentwatch.repository.signing), so every
field is checked here, shapes and ranges included: whatever a manifest says, reading it either
gives values the service can allocate and compute with, or a ValidationError that says why.

Where the files live (names, version directories, the walker): latentwatch.repository.layout;
the field types the sections are built from: latentwatch.repository.manifest_fields.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from latentwatch.errors import quote
from latentwatch.families import Capability
from latentwatch.repository.capabilities import check_capabilities
from latentwatch.repository.files import (
    DEFAULT_MAX_FILE_BYTES,
    check_listed_files,
    sha256_stream,
)
from latentwatch.repository.layout import (
    CALIBRATION_FILE,
    MANIFEST_FILE,
    REFERENCE_FILE,
    SECOND_STAGE_FILE,
)
from latentwatch.repository.manifest_fields import (
    MAX_ROWS,
    MAX_TENSOR_RANK,
    MAX_WIDTH,
    DecoderKind,
    FileName,
    NonNegative,
    Sha256Hex,
    TensorName,
    Width,
    _model_name,
    _Strict,
    _version_name,
)
from latentwatch.repository.manifest_groups import GroupCalibration
from latentwatch.repository.manifest_selection import SelectionSpec, check_selection
from latentwatch.repository.manifest_v1 import is_v1, upgrade_v1
from latentwatch.scoring.preprocessing import Preprocessing

FORMAT_VERSION: Literal[2] = 2

FORMATS_READ = (1, 2)  # format 1 is upgraded when read (manifest_v1.py)

class InputSpec(_Strict):
    name: TensorName = "input"
    # Datatype the graphs take; the service casts other numeric datatypes to it.
    datatype: Literal["FP32"] = "FP32"
    # Features per row (without the batch axis): rows are (batch, n_features).
    shape: list[Width] = Field(min_length=1, max_length=1)
    # (channels, height, width) for image models: the service also accepts (N, H, W) and
    # (N, C, H, W) and flattens them to rows.
    image_shape: list[Width] | None = Field(default=None, min_length=3, max_length=3)
    preprocessing: Preprocessing
    # Column names of the training data (CSV header, Parquet/Arrow schema), one per feature, in
    # graph order; clients put named inputs in this order. None for unnamed data and v1.
    feature_names: list[Annotated[str, StringConstraints(max_length=1024)]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        n_features = self.shape[0]
        if self.image_shape is not None and math.prod(self.image_shape) != n_features:
            raise ValueError(f"image_shape {self.image_shape} holds {math.prod(self.image_shape)} "
                             f"values, not the {n_features} features")
        pre = self.preprocessing
        for what, values in (("shift", pre.shift), ("scale", pre.scale)):
            if len(values) not in (1, n_features):
                raise ValueError(f"preprocessing.{what} has {len(values)} values for "
                                 f"{n_features} features")
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"preprocessing.{what} holds NaN or infinite values")
        if not all(v != 0 for v in pre.scale):
            raise ValueError("preprocessing.scale holds a zero")
        if pre.clip is not None and not (
            all(math.isfinite(c) for c in pre.clip) and pre.clip[0] < pre.clip[1]
        ):
            raise ValueError(f"preprocessing.clip {list(pre.clip)} is not a finite (low, high)")
        if self.feature_names is not None:
            if len(self.feature_names) != self.shape[-1]:
                raise ValueError(f"feature_names has {len(self.feature_names)} names for "
                                 f"{self.shape[-1]} features")
            if len(set(self.feature_names)) != len(self.feature_names):
                raise ValueError("feature_names has duplicates")
        return self


class TensorSpec(_Strict):
    name: TensorName
    datatype: Annotated[str, StringConstraints(pattern=r"^[A-Z][A-Z0-9]{0,15}$")] = "FP32"
    # -1 marks the dynamic batch axis (named "batch" in the graphs).
    shape: list[Annotated[int, Field(ge=-1, le=MAX_WIDTH)]] = Field(max_length=MAX_TENSOR_RANK)

    @model_validator(mode="after")
    def _no_empty_axis(self) -> TensorSpec:
        if 0 in self.shape:
            raise ValueError(f"tensor {self.name!r} has an axis of length 0: {self.shape}")
        return self


class GraphSpec(_Strict):
    file: FileName
    inputs: list[TensorSpec] = Field(max_length=64)
    outputs: list[TensorSpec] = Field(max_length=64)


class Calibration(_Strict):
    """Conformal calibration scores on a held-out split of normal rows never used in training.

    `calibration.npy` is float64 of shape (size, len(score_kinds)), one column per kind.
    """

    file: FileName = CALIBRATION_FILE
    size: int = Field(gt=0, le=MAX_ROWS)
    score_kinds: list[TensorName] = Field(min_length=1, max_length=64)
    default_alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    split: str  # how the held-out split was made, in words (fraction, seed)
    # Each row's group, for group-conditional p-values; None: marginal p-values only.
    groups: GroupCalibration | None = None


class SecondStageSpec(_Strict):
    """The second-stage score kind, computed by the service from scorer outputs (numpy).

    See latentwatch.scoring.second_stage: each statistic is standardised with `file`'s mean and std
    (fitted on `fit_split`), kNN statistics measure distances to `file`'s reference rows, and
    `combine` ("max" or "sum") turns the standardised statistics into one score.
    """

    kind: TensorName = "stats_density"
    file: FileName = SECOND_STAGE_FILE
    statistics: list[TensorName] = Field(max_length=64)
    combine: Literal["max", "max_abs", "sum"]
    k: int = Field(gt=0, le=10_000)
    n_reference_rows: int = Field(ge=0, le=MAX_ROWS)
    fit_split: str  # which rows fitted the standardisation, in words


class ReferenceSpec(_Strict):
    """The training data's latent reference for bias reports (bias.drift.LatentReference):
    per-dimension histograms and deciles of the encoder means, their moments, and the mean
    posterior variance; drift and the reference plots of a bias report compare against it."""

    file: FileName = REFERENCE_FILE
    n_rows: int = Field(gt=1, le=MAX_ROWS)
    fit_split: str  # which rows were encoded, in words


class Parity(_Strict):
    """ONNX Runtime vs PyTorch on fixed inputs; export fails when a tolerance is not met."""

    batch_sizes: list[Annotated[int, Field(gt=0)]]
    rtol: NonNegative
    atol: NonNegative
    # Worst |ort - torch| per output name seen over the checked batches.
    max_abs_error: dict[str, NonNegative]


class OnnxInfo(_Strict):
    opset: int = Field(gt=0)
    ir_version: int = Field(gt=0)
    producer: str


class Recalibration(_Strict):
    """One `latentwatch recalibrate`: new calibration rows, the graphs of `from_version`."""

    from_version: str
    data: str  # where the calibration rows came from
    n_rows: int = Field(gt=0, le=MAX_ROWS)
    recalibrated_at: str


class Provenance(_Strict):
    model_config = ConfigDict(allow_inf_nan=True)  # training losses, as they were

    data: str
    n_train: int = Field(ge=0)
    n_validation: int = Field(ge=0)
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

    latent_dim: Width
    beta: NonNegative | None = None  # the KL weight in training (variational families)
    decoder: DecoderKind | None = None  # the decoder's likelihood
    # Fixed latent draws the scorer averages over; 0 when it draws none (the AE).
    n_importance_samples: int = Field(default=0, ge=0, le=1_000_000)


class ScoringSpec(_Strict):
    """What the scorer graph (and the service's second stage) give, and their calibration."""

    # Names of per-row scores (higher = more anomalous): scorer outputs or the second stage's.
    score_kinds: list[TensorName] = Field(min_length=1, max_length=64)
    default_score_kind: str
    # Why the default kind is the default (chosen without labels, or fixed by a benchmark).
    default_score_reason: str = ""
    # Present when one score kind is computed by the service after the scorer graph.
    second_stage: SecondStageSpec | None = None
    # How the second stage's statistics were chosen without labels (absent in older versions).
    selection: SelectionSpec | None = None
    calibration: Calibration

    @model_validator(mode="after")
    def _consistent(self) -> ScoringSpec:
        if len(set(self.score_kinds)) != len(self.score_kinds):
            raise ValueError(f"score_kinds {self.score_kinds} name one kind twice")
        if self.default_score_kind not in self.score_kinds:
            raise ValueError(
                f"default_score_kind {self.default_score_kind!r} is not in {self.score_kinds}"
            )
        missing = set(self.calibration.score_kinds) ^ set(self.score_kinds)
        if missing:
            raise ValueError(f"calibration kinds differ from score_kinds: {sorted(missing)}")
        if self.selection is not None and self.second_stage is not None:
            check_selection(self.selection, self.second_stage.statistics,
                            self.second_stage.combine)
        return self


MAX_CLASSES = 10_000  # labels a conditional generator may declare (0 .. n_classes - 1)
ClassName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class GenerationSpec(_Strict):
    """What a generator graph (generate) or a translator graph (translate) makes.

    Samples are in data units (the model's postprocessing is baked into the graph) and have
    `output_shape` each; latentwatch.repository.capabilities checks this section against the
    graph's tensors. A VAE's decoder-based generation uses the latent section instead.
    """

    latent_dim: int = Field(ge=0, le=MAX_WIDTH)  # Z of the generator's `z` (0 for a translator)
    prior: Literal["normal"] = "normal"  # z ~ N(0, I)
    n_classes: int | None = Field(default=None, ge=1, le=MAX_CLASSES)  # conditional: labels
    class_names: list[ClassName] | None = Field(default=None, max_length=MAX_CLASSES)
    output_shape: list[Width] = Field(min_length=1, max_length=MAX_TENSOR_RANK)  # [F] or [C, H, W]
    # [low, high] in data units: every sample value lies within (the graph clips to it).
    output_range: list[float] | None = Field(default=None, min_length=2, max_length=2)
    # Translator only: whether dropout stays on at inference (export/generator_graphs.py).
    dropout_at_inference: bool | None = None
    stabilisation: str = Field(default="", max_length=4096)  # what training used, in words

    @model_validator(mode="after")
    def _consistent(self) -> GenerationSpec:
        if math.prod(self.output_shape) > MAX_WIDTH:
            raise ValueError(f"output_shape {self.output_shape} holds more than {MAX_WIDTH} values")
        if self.class_names is not None:
            if self.n_classes is None:
                raise ValueError("class_names need n_classes")
            if len(self.class_names) != self.n_classes:
                raise ValueError(f"class_names has {len(self.class_names)} names for "
                                 f"{self.n_classes} classes")
            if len(set(self.class_names)) != len(self.class_names):
                raise ValueError("class_names has duplicates")
        if self.output_range is not None and not self.output_range[0] < self.output_range[1]:
            raise ValueError(f"output_range {self.output_range} is not a (low, high) with "
                             "low < high")
        return self


class Manifest(_Strict):
    """Format 2: a version lists its graphs and capabilities; family sections are optional.

    Format 1 manifests (flat latent and scoring fields) are upgraded when read
    (latentwatch.repository.manifest_v1); latentwatch.repository.capabilities checks that the
    capabilities, graphs and sections agree.
    """

    format_version: Literal[2] = FORMAT_VERSION
    name: Annotated[str, AfterValidator(_model_name)]
    version: Annotated[str, AfterValidator(_version_name)]
    model_kind: Annotated[str, StringConstraints(max_length=64)]  # a latentwatch.families kind
    capabilities: list[Capability]
    input: InputSpec
    # Graph name -> file and tensors: "scorer", "encoder", "decoder", ...
    graphs: dict[TensorName, GraphSpec] = Field(max_length=16)
    latent: LatentSpec | None = None
    scoring: ScoringSpec | None = None
    # The latent reference of the training rows for bias reports; absent in older versions.
    reference: ReferenceSpec | None = None
    # What the generator or translator graph makes (generate / translate families).
    generation: GenerationSpec | None = None
    parity: Parity
    onnx: OnnxInfo
    provenance: Provenance
    # sha256 hex digest of every other file in the version directory.
    sha256: dict[FileName, Sha256Hex] = Field(max_length=64)
    created_at: str

    @model_validator(mode="before")
    @classmethod
    def _upgrade(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # pydantic refuses it: a manifest is a JSON object
        version = data.get("format_version")
        if version is not None and (isinstance(version, bool) or version not in FORMATS_READ):
            shown = quote(version) if isinstance(version, str) else repr(version)[:40]
            raise ValueError(f"format_version {shown} is not one this version of latentwatch "
                             f"reads ({', '.join(map(str, FORMATS_READ))})")
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

    def require_generation(self) -> GenerationSpec:
        """The generation section; ValueError for a version without a generator graph."""
        if self.generation is None:
            raise ValueError(f"{self.name} version {self.version} has no generation section")
        return self.generation

    @property
    def n_features(self) -> int:
        return self.input.shape[0]

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"

    @classmethod
    def read(cls, version_dir: Path) -> Manifest:
        return cls.model_validate_json((version_dir / MANIFEST_FILE).read_bytes())


def sha256_file(path: Path) -> str:
    """The sha256 hex digest of a file export wrote (the service hashes through files.py)."""
    with path.open("rb") as f:
        return sha256_stream(f)


def verify_files(
    version_dir: Path, manifest: Manifest, max_bytes: int = DEFAULT_MAX_FILE_BYTES
) -> list[str]:
    """Problems with the version's files, in words; empty when every sha256 matches (each file
    a regular file of the directory within `max_bytes`: latentwatch.repository.files)."""
    return check_listed_files(version_dir, manifest.sha256, max_bytes)
