"""The manifest contract and the tensor codec: pure Python, no models."""

from __future__ import annotations

import numpy as np
import pytest

from latentwatch.errors import InvalidInput
from latentwatch.repository.manifest import sha256_file, verify_files
from latentwatch.wire.tensors import V2_DTYPES, from_tensor, to_tensor


@pytest.mark.parametrize("name", sorted(V2_DTYPES))
def test_tensor_round_trip_every_datatype(name: str) -> None:
    array = (np.arange(12) % 2).astype(V2_DTYPES[name]).reshape(3, 4)
    tensor = to_tensor(array)
    assert tensor.datatype == name
    np.testing.assert_array_equal(from_tensor(tensor), array)


def test_big_endian_arrays_travel_little_endian() -> None:
    array = np.arange(4, dtype=">f4")
    tensor = to_tensor(array)
    assert tensor.raw_data == np.arange(4, dtype="<f4").tobytes()


def test_byte_length_is_checked_before_decoding() -> None:
    tensor = to_tensor(np.zeros((2, 3), np.float32))
    tensor.raw_data = tensor.raw_data[:-1]
    with pytest.raises(InvalidInput, match="23 bytes.*needs 24"):
        from_tensor(tensor)


def test_unknown_datatype_names_the_supported_ones() -> None:
    tensor = to_tensor(np.zeros((1, 1), np.float32))
    tensor.datatype = "BF16"
    with pytest.raises(InvalidInput, match="FP32"):
        from_tensor(tensor)


def test_verify_files_reports_tampering(tmp_path) -> None:
    from latentwatch.repository.manifest import Manifest

    class _Stub:
        sha256: dict[str, str]

    (tmp_path / "a.bin").write_bytes(b"abc")
    stub = _Stub()
    stub.sha256 = {"a.bin": sha256_file(tmp_path / "a.bin"), "gone.bin": "0" * 64}
    problems = verify_files(tmp_path, stub)  # type: ignore[arg-type]
    assert problems == ["gone.bin: missing"]
    (tmp_path / "a.bin").write_bytes(b"abd")
    del stub.sha256["gone.bin"]  # with a file missing, the others are not hashed: refused anyway
    assert any(p.startswith("a.bin: sha256") for p in verify_files(tmp_path, stub))  # type: ignore[arg-type]
    assert Manifest.model_fields["sha256"]
