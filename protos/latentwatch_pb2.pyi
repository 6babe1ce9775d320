from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tensor(_message.Message):
    __slots__ = ("datatype", "shape", "raw_data")
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    RAW_DATA_FIELD_NUMBER: _ClassVar[int]
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    raw_data: bytes
    def __init__(self, datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., raw_data: _Optional[bytes] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "input", "score_kinds", "alpha", "fdr", "request_id", "score_kind", "explain", "explain_top_k", "groups")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    SCORE_KINDS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    FDR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_KIND_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_TOP_K_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    input: Tensor
    score_kinds: _containers.RepeatedScalarFieldContainer[str]
    alpha: float
    fdr: float
    request_id: str
    score_kind: str
    explain: bool
    explain_top_k: int
    groups: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., input: _Optional[_Union[Tensor, _Mapping]] = ..., score_kinds: _Optional[_Iterable[str]] = ..., alpha: _Optional[float] = ..., fdr: _Optional[float] = ..., request_id: _Optional[str] = ..., score_kind: _Optional[str] = ..., explain: _Optional[bool] = ..., explain_top_k: _Optional[int] = ..., groups: _Optional[_Iterable[str]] = ...) -> None: ...

class ScoreColumn(_message.Message):
    __slots__ = ("kind", "values")
    KIND_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    kind: str
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, kind: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class FdrDecision(_message.Message):
    __slots__ = ("level", "is_outlier", "n_flagged", "p_value_threshold")
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    IS_OUTLIER_FIELD_NUMBER: _ClassVar[int]
    N_FLAGGED_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    level: float
    is_outlier: _containers.RepeatedScalarFieldContainer[bool]
    n_flagged: int
    p_value_threshold: float
    def __init__(self, level: _Optional[float] = ..., is_outlier: _Optional[_Iterable[bool]] = ..., n_flagged: _Optional[int] = ..., p_value_threshold: _Optional[float] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "request_id", "score_kind", "alpha", "score", "p_value", "outlier_probability", "is_outlier", "scores", "fdr", "explanations", "group_conditional")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_KIND_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    OUTLIER_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    IS_OUTLIER_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    FDR_FIELD_NUMBER: _ClassVar[int]
    EXPLANATIONS_FIELD_NUMBER: _ClassVar[int]
    GROUP_CONDITIONAL_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    request_id: str
    score_kind: str
    alpha: float
    score: _containers.RepeatedScalarFieldContainer[float]
    p_value: _containers.RepeatedScalarFieldContainer[float]
    outlier_probability: _containers.RepeatedScalarFieldContainer[float]
    is_outlier: _containers.RepeatedScalarFieldContainer[bool]
    scores: _containers.RepeatedCompositeFieldContainer[ScoreColumn]
    fdr: FdrDecision
    explanations: _containers.RepeatedCompositeFieldContainer[Explanation]
    group_conditional: bool
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ..., score_kind: _Optional[str] = ..., alpha: _Optional[float] = ..., score: _Optional[_Iterable[float]] = ..., p_value: _Optional[_Iterable[float]] = ..., outlier_probability: _Optional[_Iterable[float]] = ..., is_outlier: _Optional[_Iterable[bool]] = ..., scores: _Optional[_Iterable[_Union[ScoreColumn, _Mapping]]] = ..., fdr: _Optional[_Union[FdrDecision, _Mapping]] = ..., explanations: _Optional[_Iterable[_Union[Explanation, _Mapping]]] = ..., group_conditional: _Optional[bool] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("features", "names", "contributions")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    NAMES_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    contributions: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, features: _Optional[_Iterable[int]] = ..., names: _Optional[_Iterable[str]] = ..., contributions: _Optional[_Iterable[float]] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "input")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    input: Tensor
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., input: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "latent_mu", "latent_logvar")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    LATENT_MU_FIELD_NUMBER: _ClassVar[int]
    LATENT_LOGVAR_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    latent_mu: Tensor
    latent_logvar: Tensor
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., latent_mu: _Optional[_Union[Tensor, _Mapping]] = ..., latent_logvar: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("name", "versions", "latest_version", "model_kind")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_KIND_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedScalarFieldContainer[str]
    latest_version: str
    model_kind: str
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[str]] = ..., latest_version: _Optional[str] = ..., model_kind: _Optional[str] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("model_name", "model_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "datatype", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DATATYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    datatype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., datatype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "model_kind", "inputs", "outputs", "image_shape", "score_kinds", "default_score_kind", "calibration_size", "default_alpha", "min_alpha", "latent_dim", "execution_provider", "manifest_json", "max_batch_rows", "calibration_group_column", "calibration_groups", "explains")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_KIND_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SHAPE_FIELD_NUMBER: _ClassVar[int]
    SCORE_KINDS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_SCORE_KIND_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_SIZE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_ALPHA_FIELD_NUMBER: _ClassVar[int]
    MIN_ALPHA_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    EXECUTION_PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_ROWS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_GROUP_COLUMN_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_GROUPS_FIELD_NUMBER: _ClassVar[int]
    EXPLAINS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    model_kind: str
    inputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    outputs: _containers.RepeatedCompositeFieldContainer[TensorSpec]
    image_shape: _containers.RepeatedScalarFieldContainer[int]
    score_kinds: _containers.RepeatedScalarFieldContainer[str]
    default_score_kind: str
    calibration_size: int
    default_alpha: float
    min_alpha: float
    latent_dim: int
    execution_provider: str
    manifest_json: str
    max_batch_rows: int
    calibration_group_column: str
    calibration_groups: _containers.RepeatedScalarFieldContainer[str]
    explains: bool
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., model_kind: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., image_shape: _Optional[_Iterable[int]] = ..., score_kinds: _Optional[_Iterable[str]] = ..., default_score_kind: _Optional[str] = ..., calibration_size: _Optional[int] = ..., default_alpha: _Optional[float] = ..., min_alpha: _Optional[float] = ..., latent_dim: _Optional[int] = ..., execution_provider: _Optional[str] = ..., manifest_json: _Optional[str] = ..., max_batch_rows: _Optional[int] = ..., calibration_group_column: _Optional[str] = ..., calibration_groups: _Optional[_Iterable[str]] = ..., explains: _Optional[bool] = ...) -> None: ...

class GroupColumn(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class BiasReportOptions(_message.Message):
    __slots__ = ("bins", "alpha", "mode", "top_k", "sparse_fraction", "n_decoded", "significance_level", "density")
    BINS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    N_DECODED_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANCE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    bins: int
    alpha: float
    mode: str
    top_k: int
    sparse_fraction: float
    n_decoded: int
    significance_level: float
    density: str
    def __init__(self, bins: _Optional[int] = ..., alpha: _Optional[float] = ..., mode: _Optional[str] = ..., top_k: _Optional[int] = ..., sparse_fraction: _Optional[float] = ..., n_decoded: _Optional[int] = ..., significance_level: _Optional[float] = ..., density: _Optional[str] = ...) -> None: ...

class BiasReportRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "input", "ids", "groups", "options")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    input: Tensor
    ids: _containers.RepeatedScalarFieldContainer[str]
    groups: _containers.RepeatedCompositeFieldContainer[GroupColumn]
    options: BiasReportOptions
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., input: _Optional[_Union[Tensor, _Mapping]] = ..., ids: _Optional[_Iterable[str]] = ..., groups: _Optional[_Iterable[_Union[GroupColumn, _Mapping]]] = ..., options: _Optional[_Union[BiasReportOptions, _Mapping]] = ...) -> None: ...

class DimensionHistogram(_message.Message):
    __slots__ = ("edges", "counts")
    EDGES_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    edges: _containers.RepeatedScalarFieldContainer[float]
    counts: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, edges: _Optional[_Iterable[float]] = ..., counts: _Optional[_Iterable[int]] = ...) -> None: ...

class ReferenceComparison(_message.Message):
    __slots__ = ("edges", "reference_share", "share", "below", "above")
    EDGES_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SHARE_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    BELOW_FIELD_NUMBER: _ClassVar[int]
    ABOVE_FIELD_NUMBER: _ClassVar[int]
    edges: Tensor
    reference_share: Tensor
    share: Tensor
    below: _containers.RepeatedScalarFieldContainer[float]
    above: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, edges: _Optional[_Union[Tensor, _Mapping]] = ..., reference_share: _Optional[_Union[Tensor, _Mapping]] = ..., share: _Optional[_Union[Tensor, _Mapping]] = ..., below: _Optional[_Iterable[float]] = ..., above: _Optional[_Iterable[float]] = ...) -> None: ...

class GroupStats(_message.Message):
    __slots__ = ("column", "value", "n_rows", "share", "sparse_share", "representation_ratio", "mean_weight", "flagged", "n_sparse_rows", "ratio_low", "ratio_high", "p_value", "significant", "even_share", "share_ratio", "share_ratio_low", "share_ratio_high", "share_p_value", "share_significant", "share_flagged")
    COLUMN_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    SPARSE_SHARE_FIELD_NUMBER: _ClassVar[int]
    REPRESENTATION_RATIO_FIELD_NUMBER: _ClassVar[int]
    MEAN_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    FLAGGED_FIELD_NUMBER: _ClassVar[int]
    N_SPARSE_ROWS_FIELD_NUMBER: _ClassVar[int]
    RATIO_LOW_FIELD_NUMBER: _ClassVar[int]
    RATIO_HIGH_FIELD_NUMBER: _ClassVar[int]
    P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    EVEN_SHARE_FIELD_NUMBER: _ClassVar[int]
    SHARE_RATIO_FIELD_NUMBER: _ClassVar[int]
    SHARE_RATIO_LOW_FIELD_NUMBER: _ClassVar[int]
    SHARE_RATIO_HIGH_FIELD_NUMBER: _ClassVar[int]
    SHARE_P_VALUE_FIELD_NUMBER: _ClassVar[int]
    SHARE_SIGNIFICANT_FIELD_NUMBER: _ClassVar[int]
    SHARE_FLAGGED_FIELD_NUMBER: _ClassVar[int]
    column: str
    value: str
    n_rows: int
    share: float
    sparse_share: float
    representation_ratio: float
    mean_weight: float
    flagged: bool
    n_sparse_rows: int
    ratio_low: float
    ratio_high: float
    p_value: float
    significant: bool
    even_share: float
    share_ratio: float
    share_ratio_low: float
    share_ratio_high: float
    share_p_value: float
    share_significant: bool
    share_flagged: bool
    def __init__(self, column: _Optional[str] = ..., value: _Optional[str] = ..., n_rows: _Optional[int] = ..., share: _Optional[float] = ..., sparse_share: _Optional[float] = ..., representation_ratio: _Optional[float] = ..., mean_weight: _Optional[float] = ..., flagged: _Optional[bool] = ..., n_sparse_rows: _Optional[int] = ..., ratio_low: _Optional[float] = ..., ratio_high: _Optional[float] = ..., p_value: _Optional[float] = ..., significant: _Optional[bool] = ..., even_share: _Optional[float] = ..., share_ratio: _Optional[float] = ..., share_ratio_low: _Optional[float] = ..., share_ratio_high: _Optional[float] = ..., share_p_value: _Optional[float] = ..., share_significant: _Optional[bool] = ..., share_flagged: _Optional[bool] = ...) -> None: ...

class Drift(_message.Message):
    __slots__ = ("overall", "level", "psi", "mean_shift", "active", "max_psi", "max_psi_dimension", "gaussian_kl", "reference_rows")
    OVERALL_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    PSI_FIELD_NUMBER: _ClassVar[int]
    MEAN_SHIFT_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    MAX_PSI_FIELD_NUMBER: _ClassVar[int]
    MAX_PSI_DIMENSION_FIELD_NUMBER: _ClassVar[int]
    GAUSSIAN_KL_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_ROWS_FIELD_NUMBER: _ClassVar[int]
    overall: float
    level: str
    psi: _containers.RepeatedScalarFieldContainer[float]
    mean_shift: _containers.RepeatedScalarFieldContainer[float]
    active: _containers.RepeatedScalarFieldContainer[bool]
    max_psi: float
    max_psi_dimension: int
    gaussian_kl: float
    reference_rows: int
    def __init__(self, overall: _Optional[float] = ..., level: _Optional[str] = ..., psi: _Optional[_Iterable[float]] = ..., mean_shift: _Optional[_Iterable[float]] = ..., active: _Optional[_Iterable[bool]] = ..., max_psi: _Optional[float] = ..., max_psi_dimension: _Optional[int] = ..., gaussian_kl: _Optional[float] = ..., reference_rows: _Optional[int] = ...) -> None: ...

class BiasReportResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "n_rows", "latent_dim", "mode", "bins", "alpha", "sparse_fraction", "top_k", "log_density", "weight", "effective_sample_size", "sparsest", "densest", "histograms", "reference", "groups", "worst_group_ratio", "drift", "kl_to_prior", "reference_kl_to_prior", "decoded_sparsest", "decoded_densest", "significance_level", "density", "sparsest_latent")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    N_ROWS_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    SPARSE_FRACTION_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    LOG_DENSITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_SAMPLE_SIZE_FIELD_NUMBER: _ClassVar[int]
    SPARSEST_FIELD_NUMBER: _ClassVar[int]
    DENSEST_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAMS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    WORST_GROUP_RATIO_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    KL_TO_PRIOR_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_KL_TO_PRIOR_FIELD_NUMBER: _ClassVar[int]
    DECODED_SPARSEST_FIELD_NUMBER: _ClassVar[int]
    DECODED_DENSEST_FIELD_NUMBER: _ClassVar[int]
    SIGNIFICANCE_LEVEL_FIELD_NUMBER: _ClassVar[int]
    DENSITY_FIELD_NUMBER: _ClassVar[int]
    SPARSEST_LATENT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    n_rows: int
    latent_dim: int
    mode: str
    bins: int
    alpha: float
    sparse_fraction: float
    top_k: int
    log_density: Tensor
    weight: Tensor
    effective_sample_size: float
    sparsest: _containers.RepeatedScalarFieldContainer[int]
    densest: _containers.RepeatedScalarFieldContainer[int]
    histograms: _containers.RepeatedCompositeFieldContainer[DimensionHistogram]
    reference: ReferenceComparison
    groups: _containers.RepeatedCompositeFieldContainer[GroupStats]
    worst_group_ratio: float
    drift: Drift
    kl_to_prior: _containers.RepeatedScalarFieldContainer[float]
    reference_kl_to_prior: _containers.RepeatedScalarFieldContainer[float]
    decoded_sparsest: Tensor
    decoded_densest: Tensor
    significance_level: float
    density: str
    sparsest_latent: Tensor
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., n_rows: _Optional[int] = ..., latent_dim: _Optional[int] = ..., mode: _Optional[str] = ..., bins: _Optional[int] = ..., alpha: _Optional[float] = ..., sparse_fraction: _Optional[float] = ..., top_k: _Optional[int] = ..., log_density: _Optional[_Union[Tensor, _Mapping]] = ..., weight: _Optional[_Union[Tensor, _Mapping]] = ..., effective_sample_size: _Optional[float] = ..., sparsest: _Optional[_Iterable[int]] = ..., densest: _Optional[_Iterable[int]] = ..., histograms: _Optional[_Iterable[_Union[DimensionHistogram, _Mapping]]] = ..., reference: _Optional[_Union[ReferenceComparison, _Mapping]] = ..., groups: _Optional[_Iterable[_Union[GroupStats, _Mapping]]] = ..., worst_group_ratio: _Optional[float] = ..., drift: _Optional[_Union[Drift, _Mapping]] = ..., kl_to_prior: _Optional[_Iterable[float]] = ..., reference_kl_to_prior: _Optional[_Iterable[float]] = ..., decoded_sparsest: _Optional[_Union[Tensor, _Mapping]] = ..., decoded_densest: _Optional[_Union[Tensor, _Mapping]] = ..., significance_level: _Optional[float] = ..., density: _Optional[str] = ..., sparsest_latent: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ModelControlRequest(_message.Message):
    __slots__ = ("action", "model_name", "model_version")
    class Action(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        ACTION_UNSPECIFIED: _ClassVar[ModelControlRequest.Action]
        RELOAD: _ClassVar[ModelControlRequest.Action]
        LOAD: _ClassVar[ModelControlRequest.Action]
        UNLOAD: _ClassVar[ModelControlRequest.Action]
    ACTION_UNSPECIFIED: ModelControlRequest.Action
    RELOAD: ModelControlRequest.Action
    LOAD: ModelControlRequest.Action
    UNLOAD: ModelControlRequest.Action
    ACTION_FIELD_NUMBER: _ClassVar[int]
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    action: ModelControlRequest.Action
    model_name: str
    model_version: str
    def __init__(self, action: _Optional[_Union[ModelControlRequest.Action, str]] = ..., model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class ModelVersionRef(_message.Message):
    __slots__ = ("model_name", "model_version")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class VersionRefusal(_message.Message):
    __slots__ = ("model_name", "model_version", "reason")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    reason: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ModelControlResponse(_message.Message):
    __slots__ = ("loaded", "reloaded", "unloaded", "refused")
    LOADED_FIELD_NUMBER: _ClassVar[int]
    RELOADED_FIELD_NUMBER: _ClassVar[int]
    UNLOADED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    loaded: _containers.RepeatedCompositeFieldContainer[ModelVersionRef]
    reloaded: _containers.RepeatedCompositeFieldContainer[ModelVersionRef]
    unloaded: _containers.RepeatedCompositeFieldContainer[ModelVersionRef]
    refused: _containers.RepeatedCompositeFieldContainer[VersionRefusal]
    def __init__(self, loaded: _Optional[_Iterable[_Union[ModelVersionRef, _Mapping]]] = ..., reloaded: _Optional[_Iterable[_Union[ModelVersionRef, _Mapping]]] = ..., unloaded: _Optional[_Iterable[_Union[ModelVersionRef, _Mapping]]] = ..., refused: _Optional[_Iterable[_Union[VersionRefusal, _Mapping]]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "n", "seed", "labels", "truncation", "centers", "spread")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATION_FIELD_NUMBER: _ClassVar[int]
    CENTERS_FIELD_NUMBER: _ClassVar[int]
    SPREAD_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    n: int
    seed: int
    labels: _containers.RepeatedScalarFieldContainer[int]
    truncation: float
    centers: Tensor
    spread: float
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., n: _Optional[int] = ..., seed: _Optional[int] = ..., labels: _Optional[_Iterable[int]] = ..., truncation: _Optional[float] = ..., centers: _Optional[_Union[Tensor, _Mapping]] = ..., spread: _Optional[float] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "samples", "latents", "labels", "seed", "class_names")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    CLASS_NAMES_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    samples: Tensor
    latents: Tensor
    labels: _containers.RepeatedScalarFieldContainer[int]
    seed: int
    class_names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., samples: _Optional[_Union[Tensor, _Mapping]] = ..., latents: _Optional[_Union[Tensor, _Mapping]] = ..., labels: _Optional[_Iterable[int]] = ..., seed: _Optional[int] = ..., class_names: _Optional[_Iterable[str]] = ...) -> None: ...

class TraverseRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "input", "latent", "dimensions", "low", "high", "steps", "label")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    input: Tensor
    latent: Tensor
    dimensions: _containers.RepeatedScalarFieldContainer[int]
    low: float
    high: float
    steps: int
    label: int
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., input: _Optional[_Union[Tensor, _Mapping]] = ..., latent: _Optional[_Union[Tensor, _Mapping]] = ..., dimensions: _Optional[_Iterable[int]] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., steps: _Optional[int] = ..., label: _Optional[int] = ...) -> None: ...

class TraverseResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "base_latent", "dimensions", "values", "samples", "change", "inactive_dimensions", "inactive_threshold")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    BASE_LATENT_FIELD_NUMBER: _ClassVar[int]
    DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_DIMENSIONS_FIELD_NUMBER: _ClassVar[int]
    INACTIVE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    base_latent: Tensor
    dimensions: _containers.RepeatedScalarFieldContainer[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    samples: Tensor
    change: _containers.RepeatedScalarFieldContainer[float]
    inactive_dimensions: _containers.RepeatedScalarFieldContainer[int]
    inactive_threshold: float
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., base_latent: _Optional[_Union[Tensor, _Mapping]] = ..., dimensions: _Optional[_Iterable[int]] = ..., values: _Optional[_Iterable[float]] = ..., samples: _Optional[_Union[Tensor, _Mapping]] = ..., change: _Optional[_Iterable[float]] = ..., inactive_dimensions: _Optional[_Iterable[int]] = ..., inactive_threshold: _Optional[float] = ...) -> None: ...

class TranslateRequest(_message.Message):
    __slots__ = ("model_name", "model_version", "input")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    input: Tensor
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., input: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class TranslateResponse(_message.Message):
    __slots__ = ("model_name", "model_version", "output")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    output: Tensor
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., output: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...
