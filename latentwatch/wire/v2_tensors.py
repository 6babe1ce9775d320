"""KServe v2 (Open Inference Protocol) tensor contents: raw bytes and typed lists <-> numpy.

The datatype table is latentwatch/wire/tensors.py's V2_DTYPES (one home), plus BYTES, whose
elements are numpy object arrays of `bytes`. On the wire:
- raw contents are little-endian, row-major; a BYTES element is a 4-byte little-endian length
  followed by that many bytes (as Triton sends them);
- typed contents are flat row-major lists in the field of the datatype (CONTENTS_FIELD); FP16
  has no typed field and travels raw only. The same lists are JSON's `data` over REST.

Every decode checks the shape (bounded rank and element count, tensors.checked_shape) and the
byte length or element count before numpy sees the data, and raises InvalidInput naming the
tensor, what was expected and what came.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import cast

import numpy as np
from numpy.typing import NDArray

from latentwatch.errors import InvalidInput, quote
from latentwatch.wire.tensors import V2_DTYPES, checked_shape, v2_name

BYTES = "BYTES"
DATATYPES = (*V2_DTYPES, BYTES)
# The typed-contents field (InferTensorContents) that carries each datatype.
CONTENTS_FIELD: dict[str, str] = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    BYTES: "bytes_contents",
}
_LENGTH = struct.Struct("<I")  # a BYTES element's length prefix


def check_datatype(datatype: str, name: str) -> str:
    """`datatype` if it is a v2 datatype; InvalidInput naming the tensor otherwise."""
    if datatype not in DATATYPES:
        raise InvalidInput(
            f"{name}: datatype {quote(datatype)} is not a KServe v2 datatype; expected one of "
            f"{', '.join(DATATYPES)}"
        )
    return datatype


def datatype_of(array: NDArray) -> str:
    """The v2 datatype of an array: BYTES for object or bytes arrays, else the dtype's name."""
    if array.dtype.kind in "OS":
        return BYTES
    return v2_name(array.dtype)


def from_raw(raw: bytes, datatype: str, shape: Sequence[int], name: str) -> NDArray:
    """One tensor's raw contents as an array of `shape` (read-only for numeric datatypes)."""
    dims = checked_shape(shape, name)
    count = math.prod(dims)
    if check_datatype(datatype, name) == BYTES:
        return _bytes_array(_split_bytes(raw, count, name), dims)
    dtype = V2_DTYPES[datatype]
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise InvalidInput(
            f"{name}: raw contents have {len(raw):,} bytes; shape {list(dims)} of {datatype} "
            f"needs {expected:,}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def to_raw(array: NDArray, datatype: str = "") -> bytes:
    """An array as raw contents: little-endian row-major, or length-prefixed BYTES elements.
    `datatype`: the array's v2 datatype when the caller knows it ("": found from the array)."""
    array = np.asarray(array)
    datatype = datatype or datatype_of(array)
    if datatype == BYTES:
        return b"".join(_LENGTH.pack(len(item)) + item for item in _as_bytes(array.ravel()))
    return np.ascontiguousarray(array, dtype=V2_DTYPES[datatype]).tobytes()


def from_contents(
    values: Sequence[object], datatype: str, shape: Sequence[int], name: str
) -> NDArray:
    """A flat row-major list (typed contents, or JSON `data`) as an array of `shape`; integers
    outside the datatype's range and values of the wrong kind are InvalidInput."""
    dims = checked_shape(shape, name)
    count = math.prod(dims)
    if len(values) != count:
        raise InvalidInput(
            f"{name}: {len(values):,} values; shape {list(dims)} needs {count:,}"
        )
    if check_datatype(datatype, name) == BYTES:
        items = [v.encode("utf-8") if isinstance(v, str) else v for v in values]
        if not all(isinstance(v, bytes) for v in items):
            raise InvalidInput(f"{name}: BYTES values must be bytes or strings")
        return _bytes_array(cast(list[bytes], items), dims)
    dtype = V2_DTYPES[datatype]
    try:
        if dtype.kind in "iu":
            wide = np.asarray(values, dtype=np.uint64 if dtype.kind == "u" else np.int64)
            if isinstance(values, list) and not all(_is_int(v) for v in values):
                raise TypeError("not integers")
            info = np.iinfo(dtype)
            if wide.size and (wide.min() < info.min or wide.max() > info.max):
                raise InvalidInput(
                    f"{name}: a value is outside {datatype}'s range [{info.min}, {info.max}]"
                )
            array = wide.astype(dtype)
        elif dtype.kind == "b":
            if isinstance(values, list) and not all(isinstance(v, bool) for v in values):
                raise TypeError("not booleans")
            array = np.asarray(values, dtype=dtype)
        else:
            array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as err:
        raise InvalidInput(f"{name}: values are not all {datatype} ({quote(err)})") from err
    return array.reshape(dims)


def to_contents(array: NDArray) -> tuple[str, list[object]]:
    """The typed-contents field and flat row-major values of an array (FP16 has none)."""
    array = np.asarray(array)
    datatype = datatype_of(array)
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidInput(f"{datatype} has no typed contents; send it as raw contents")
    if datatype == BYTES:
        return field, list(_as_bytes(array.ravel()))
    return field, array.ravel().tolist()


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _split_bytes(raw: bytes, count: int, name: str) -> list[bytes]:
    """`count` length-prefixed elements that fill `raw` exactly."""
    items: list[bytes] = []
    offset = 0
    view = memoryview(raw)
    while offset < len(raw) and len(items) < count:
        if offset + _LENGTH.size > len(raw):
            break
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += _LENGTH.size
        if offset + length > len(raw):
            raise InvalidInput(
                f"{name}: BYTES element {len(items)} says {length:,} bytes but "
                f"{len(raw) - offset:,} are left"
            )
        items.append(bytes(view[offset:offset + length]))
        offset += length
    if len(items) != count or offset != len(raw):
        raise InvalidInput(
            f"{name}: raw contents of {len(raw):,} bytes do not hold exactly {count:,} BYTES "
            "elements (each a 4-byte little-endian length, then the bytes)"
        )
    return items


def _bytes_array(items: Sequence[bytes], dims: tuple[int, ...]) -> NDArray:
    array = np.empty(len(items), dtype=object)
    array[:] = list(items)
    return array.reshape(dims)


def _as_bytes(flat: NDArray) -> list[bytes]:
    out = []
    for item in flat.tolist():
        if isinstance(item, str):
            item = item.encode("utf-8")
        if not isinstance(item, bytes):
            raise InvalidInput(f"a BYTES element is {type(item).__name__}, not bytes")
        out.append(item)
    return out
