"""KServe v2 tensor contents: raw bytes and typed lists, checked before numpy sees them.

Raw BYTES contents are compared with what tritonclient itself sends (its serializer).
"""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import serialize_byte_tensor

from latentwatch.errors import InvalidInput
from latentwatch.wire.tensors import V2_DTYPES
from latentwatch.wire.v2_tensors import (
    CONTENTS_FIELD,
    datatype_of,
    from_contents,
    from_raw,
    to_contents,
    to_raw,
)


@pytest.mark.parametrize("datatype", sorted(V2_DTYPES))
def test_raw_round_trip_every_numeric_datatype(datatype: str) -> None:
    array = (np.arange(12) % 2 == 0) if datatype == "BOOL" else np.arange(12)
    array = array.astype(V2_DTYPES[datatype]).reshape(3, 4)
    raw = to_raw(array)
    assert raw == array.astype(V2_DTYPES[datatype].newbyteorder("<")).tobytes()
    back = from_raw(raw, datatype, [3, 4], "x")
    assert datatype_of(back) == datatype
    np.testing.assert_array_equal(back, array)


def test_big_endian_arrays_go_out_little_endian() -> None:
    array = np.array([1.5, -2.0], dtype=">f4")
    assert to_raw(array) == np.array([1.5, -2.0], dtype="<f4").tobytes()


def test_bytes_elements_are_length_prefixed_as_tritonclient_sends_them() -> None:
    array = np.array([b"a", b"", "\u00e9".encode()], dtype=object).reshape(3, 1)
    raw = to_raw(array)
    assert raw == serialize_byte_tensor(array).item()
    back = from_raw(raw, "BYTES", [3, 1], "names")
    assert back.shape == (3, 1) and back.ravel().tolist() == [b"a", b"", "\u00e9".encode()]


@pytest.mark.parametrize("raw, shape", [
    (b"\x05\x00\x00\x00abc", [1]),  # element longer than what is left
    (b"\x01\x00\x00\x00a\x01\x00", [2]),  # a cut length prefix
    (b"\x01\x00\x00\x00a\x01\x00\x00\x00b", [1]),  # bytes after the last element
])
def test_bad_bytes_contents_name_the_tensor(raw: bytes, shape: list[int]) -> None:
    with pytest.raises(InvalidInput, match="^names: "):
        from_raw(raw, "BYTES", shape, "names")


def test_byte_length_is_checked_and_named() -> None:
    with pytest.raises(InvalidInput) as caught:
        from_raw(b"\0" * 15, "FP32", [2, 2], "input")
    assert str(caught.value) == (
        "input: raw contents have 15 bytes; shape [2, 2] of FP32 needs 16"
    )


def test_unknown_datatype_and_bad_shapes() -> None:
    with pytest.raises(InvalidInput, match="input: datatype 'FP8'"):
        from_raw(b"", "FP8", [1], "input")
    with pytest.raises(InvalidInput, match="input: shape .* negative"):
        from_raw(b"", "FP32", [-1, 4], "input")
    with pytest.raises(InvalidInput, match="input: shape has 9 dimensions"):
        from_raw(b"", "FP32", [1] * 9, "input")


def test_typed_contents_round_trip_and_fields() -> None:
    array = np.arange(6, dtype=np.int16).reshape(2, 3) - 3
    field, values = to_contents(array)
    assert field == CONTENTS_FIELD["INT16"] == "int_contents"
    np.testing.assert_array_equal(from_contents(values, "INT16", [2, 3], "x"), array)
    field, values = to_contents(np.array([[True, False]]))
    assert (field, values) == ("bool_contents", [True, False])
    with pytest.raises(InvalidInput, match="FP16 has no typed contents"):
        to_contents(np.zeros(2, dtype=np.float16))


def test_typed_contents_are_checked() -> None:
    with pytest.raises(InvalidInput, match=r"^x: 5 values; shape \[2, 3\] needs 6$"):
        from_contents([1, 2, 3, 4, 5], "INT32", [2, 3], "x")
    with pytest.raises(InvalidInput, match="outside INT8's range"):
        from_contents([1, 200], "INT8", [2], "x")
    with pytest.raises(InvalidInput, match="x: values are not all UINT8"):
        from_contents([1, -1], "UINT8", [2], "x")
    with pytest.raises(InvalidInput, match="x: values are not all INT64"):
        from_contents([1, 2.5], "INT64", [2], "x")  # JSON data: a float is not an integer
    with pytest.raises(InvalidInput, match="x: values are not all BOOL"):
        from_contents([1, 0], "BOOL", [2], "x")
    with pytest.raises(InvalidInput, match="x: values are not all FP32"):
        from_contents(["a", "b"], "FP32", [2], "x")
    strings = from_contents(["ab", b"c"], "BYTES", [2], "x")
    assert strings.tolist() == [b"ab", b"c"]
