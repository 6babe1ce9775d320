"""Tensors on the wire: raw little-endian bytes + shape + KServe v2 datatype name."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput
from latentwatch.protos import latentwatch_pb2 as pb

# KServe v2 datatype names <-> little-endian numpy dtypes: the one mapping table.
V2_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
_NAMES = {dtype: name for name, dtype in V2_DTYPES.items()}


def v2_name(dtype: np.dtype) -> str:
    name = _NAMES.get(np.dtype(dtype).newbyteorder("<"))
    if name is None:
        raise InvalidInput(
            f"dtype {dtype} has no KServe v2 datatype; use one of {sorted(V2_DTYPES)}"
        )
    return name


def to_tensor(array: NDArray) -> pb.Tensor:
    array = np.asarray(array)
    name = v2_name(array.dtype)
    data = np.ascontiguousarray(array, dtype=V2_DTYPES[name])
    return pb.Tensor(datatype=name, shape=list(data.shape), raw_data=data.tobytes())


def from_tensor(tensor: pb.Tensor, what: str = "input") -> NDArray:
    """Decodes after checking datatype, shape and byte length; raises InvalidInput otherwise."""
    dtype = V2_DTYPES.get(tensor.datatype)
    if dtype is None:
        raise InvalidInput(
            f"{what}: datatype {tensor.datatype!r} is not supported; expected one of "
            f"{', '.join(sorted(V2_DTYPES))}"
        )
    shape = tuple(tensor.shape)
    if not shape:
        raise InvalidInput(f"{what}: shape is empty; expected (rows, features)")
    if any(d < 0 for d in shape):
        raise InvalidInput(f"{what}: shape {list(shape)} has a negative dimension")
    expected = math.prod(shape) * dtype.itemsize
    if len(tensor.raw_data) != expected:
        raise InvalidInput(
            f"{what}: raw_data has {len(tensor.raw_data)} bytes; shape {list(shape)} of "
            f"{tensor.datatype} needs {expected}"
        )
    return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(shape)
