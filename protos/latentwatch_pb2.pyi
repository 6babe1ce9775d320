from google.protobuf.internal import containers as _containers
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
    __slots__ = ("model_name", "model_version", "input", "score_kinds", "alpha", "fdr", "request_id", "score_kind")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    SCORE_KINDS_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    FDR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_KIND_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    model_version: str
    input: Tensor
    score_kinds: _containers.RepeatedScalarFieldContainer[str]
    alpha: float
    fdr: float
    request_id: str
    score_kind: str
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., input: _Optional[_Union[Tensor, _Mapping]] = ..., score_kinds: _Optional[_Iterable[str]] = ..., alpha: _Optional[float] = ..., fdr: _Optional[float] = ..., request_id: _Optional[str] = ..., score_kind: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("model_name", "model_version", "request_id", "score_kind", "alpha", "score", "p_value", "outlier_probability", "is_outlier", "scores", "fdr")
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
    def __init__(self, model_name: _Optional[str] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ..., score_kind: _Optional[str] = ..., alpha: _Optional[float] = ..., score: _Optional[_Iterable[float]] = ..., p_value: _Optional[_Iterable[float]] = ..., outlier_probability: _Optional[_Iterable[float]] = ..., is_outlier: _Optional[_Iterable[bool]] = ..., scores: _Optional[_Iterable[_Union[ScoreColumn, _Mapping]]] = ..., fdr: _Optional[_Union[FdrDecision, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("name", "version", "model_kind", "inputs", "outputs", "image_shape", "score_kinds", "default_score_kind", "calibration_size", "default_alpha", "min_alpha", "latent_dim", "execution_provider", "manifest_json", "max_batch_rows")
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
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., model_kind: _Optional[str] = ..., inputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., outputs: _Optional[_Iterable[_Union[TensorSpec, _Mapping]]] = ..., image_shape: _Optional[_Iterable[int]] = ..., score_kinds: _Optional[_Iterable[str]] = ..., default_score_kind: _Optional[str] = ..., calibration_size: _Optional[int] = ..., default_alpha: _Optional[float] = ..., min_alpha: _Optional[float] = ..., latent_dim: _Optional[int] = ..., execution_provider: _Optional[str] = ..., manifest_json: _Optional[str] = ..., max_batch_rows: _Optional[int] = ...) -> None: ...
