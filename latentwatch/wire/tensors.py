"""Tensors on the wire: raw little-endian bytes + shape + KServe v2 datatype name.

A shape is checked before anything is computed from it: a caller's shape is a list of up to
millions of int64s, and their product as a Python integer grows with every entry (a 40,000-entry
shape took seconds on the event loop). So the rank is bounded first, then the sign of each
dimension, then the element count, which never exceeds what a gRPC message (under 2 GiB) holds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput, quote
from latentwatch.protos import latentwatch_pb2 as pb

# Dimensions a tensor on the wire may have: rows (N, F), images (N, C, H, W), with room to spare.
MAX_RANK = 8
# Elements a tensor's shape may describe (zero dimensions left out): a gRPC message is under
# 2 GiB, so no tensor on the wire holds more one-byte elements than this.
MAX_ELEMENTS = 2**31

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
    # Native little-endian dtypes hash as their "<" form: the lookup alone, on the request path.
    name = _NAMES.get(dtype) or _NAMES.get(np.dtype(dtype).newbyteorder("<"))
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
            f"{what}: datatype {quote(tensor.datatype)} is not supported; expected one of "
            f"{', '.join(sorted(V2_DTYPES))}"
        )
    shape = checked_shape(tensor.shape, what)
    expected = math.prod(shape) * dtype.itemsize  # at most MAX_ELEMENTS * 8
    if len(tensor.raw_data) != expected:
        raise InvalidInput(
            f"{what}: raw_data has {len(tensor.raw_data)} bytes; shape {list(shape)} of "
            f"{tensor.datatype} needs {expected}"
        )
    return np.frombuffer(tensor.raw_data, dtype=dtype).reshape(shape)


def checked_shape(dims: Sequence[int], what: str = "input") -> tuple[int, ...]:
    """A caller's shape as a tuple, once its rank, its dimensions and the elements it describes
    are in bounds. Zero dimensions are left out of the count, since numpy refuses (0, 2**62)
    too, and the partial products stay small: at most MAX_RANK factors, each checked as it
    comes."""
    if not dims:
        raise InvalidInput(f"{what}: shape is empty; expected (rows, features)")
    if len(dims) > MAX_RANK:  # before anything reads every entry
        raise InvalidInput(
            f"{what}: shape has {len(dims):,} dimensions; a tensor has at most {MAX_RANK}: "
            "(rows, features) or (rows, *image_shape)"
        )
    shape = tuple(int(d) for d in dims)
    if any(d < 0 for d in shape):
        raise InvalidInput(f"{what}: shape {list(shape)} has a negative dimension")
    elements = 1
    for d in shape:
        elements *= d or 1
        if elements > MAX_ELEMENTS:
            raise InvalidInput(
                f"{what}: shape {list(shape)} describes more than {MAX_ELEMENTS:,} elements "
                "(zero dimensions left out), more than any message can carry"
            )
    return shape
