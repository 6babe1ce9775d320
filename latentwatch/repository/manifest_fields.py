"""The field types every manifest section is built from: names, widths, the strict base model.

Split from latentwatch.repository.manifest (the sections and the Manifest itself), which
re-exports what its users import.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from latentwatch.errors import quote
from latentwatch.repository.layout import (
    MANIFEST_FILE,
    SIGNATURE_FILE,
    is_safe_name,
    is_version_name,
)

DecoderKind = Literal["bernoulli", "gaussian", "gaussian-hetero"]

# Most features, latent dimensions or values along one tensor axis a manifest may declare: a
# 2048 x 2048 image. Warm-up allocates (2, features) rows, so the bound keeps that small.
MAX_WIDTH = 2**22
MAX_ROWS = 2**31  # calibration and reference rows
MAX_TENSOR_RANK = 8


def _file_name(name: str) -> str:
    if not is_safe_name(name):
        raise ValueError(
            f"file name {quote(name)} is not a file of the version directory (letters, digits, "
            "'.', '_' and '-', not starting with '.')"
        )
    if name in (MANIFEST_FILE, SIGNATURE_FILE):
        raise ValueError(f"{name} cannot be listed: it is not covered by its own sha256")
    return name


def _model_name(name: str) -> str:
    if not is_safe_name(name):
        raise ValueError(f"model name {quote(name)} is not a directory name the repository uses")
    return name


def _version_name(version: str) -> str:
    if not is_version_name(version):
        raise ValueError(f"version {quote(version)} is not an integer")
    return version


# A file directly inside the version directory (no separators, "..", absolute paths).
FileName = Annotated[str, AfterValidator(_file_name)]
Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Width = Annotated[int, Field(gt=0, le=MAX_WIDTH)]
# A tensor, graph or score-kind name as graphs, manifests and protos spell it.
TensorName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,127}$")]
NonNegative = Annotated[float, Field(ge=0.0)]


class _Strict(BaseModel):
    # NaN and infinities are refused in every number but the provenance's (informational).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
