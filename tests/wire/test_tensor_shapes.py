"""Shapes a caller sends are checked before anything is computed from them (numpy only).

A shape is a list of int64s of any length: its rank is bounded before any entry is read, and its
element count (zero dimensions left out) before numpy sees it, so a long or huge shape is a quick
InvalidInput, not seconds of big-integer products on the event loop or a numpy ValueError.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from latentwatch.errors import InvalidInput
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.tensors import MAX_ELEMENTS, MAX_RANK, from_tensor, to_tensor

HUGE = 2**62


def _tensor(shape: list[int], raw: bytes = b"", datatype: str = "FP32") -> pb.Tensor:
    return pb.Tensor(datatype=datatype, shape=shape, raw_data=raw)


@pytest.mark.parametrize("entries", [40_000, 100_000])
def test_a_shape_of_many_huge_entries_is_refused_at_once(entries: int) -> None:
    # 40,000 entries near 2**62 (a 360 KB request) took 5 to 8 s here before the rank check,
    # and then failed converting the product to a string; 100,000 took more than a minute.
    tensor = _tensor([HUGE + 12345] * entries, b"\0" * 8)
    start = time.perf_counter()
    with pytest.raises(InvalidInput) as caught:
        from_tensor(tensor)
    elapsed_s = time.perf_counter() - start
    assert elapsed_s < 0.1, f"{elapsed_s:.3f} s"  # about 10 us; seconds before
    assert str(caught.value) == (
        f"input: shape has {entries:,} dimensions; a tensor has at most {MAX_RANK}: "
        "(rows, features) or (rows, *image_shape)"
    )


@pytest.mark.parametrize(
    "shape",
    [[0, HUGE], [HUGE, 0], [0, HUGE, HUGE], [0, 2**31, 2], [2**40, 2**40], [3, 2**63 - 1]],
    ids=str,
)
def test_a_shape_describing_more_elements_than_a_message_holds_is_refused(
    shape: list[int],
) -> None:
    # Zero-size shapes passed the byte-length check and failed in numpy's reshape (INTERNAL).
    with pytest.raises(InvalidInput, match=f"describes more than {MAX_ELEMENTS:,} elements"):
        from_tensor(_tensor(shape))


@pytest.mark.parametrize("rank", [MAX_RANK + 1, 33, 65, 100])
@pytest.mark.parametrize("dim", [0, 1])
def test_ranks_above_the_limit_are_refused_even_for_zero_size_tensors(rank: int, dim: int) -> None:
    # Ranks above 64 (numpy's limit) failed in numpy with a ValueError (INTERNAL).
    raw = b"\0" * 4 if dim else b""
    with pytest.raises(InvalidInput, match=f"shape has {rank} dimensions; a tensor has at most"):
        from_tensor(_tensor([dim] * rank, raw))


@pytest.mark.parametrize("shape", [[-1, 4], [2, -3], [-(2**63), 1]], ids=str)
def test_negative_dimensions_are_refused(shape: list[int]) -> None:
    with pytest.raises(InvalidInput, match="has a negative dimension"):
        from_tensor(_tensor(shape))


def test_shapes_within_the_limits_decode() -> None:
    image = np.arange(2 * 8 * 8, dtype=np.float32).reshape(2, 1, 8, 8)
    np.testing.assert_array_equal(from_tensor(to_tensor(image)), image)
    assert from_tensor(_tensor([0, 64])).shape == (0, 64)  # "no rows" is the contract's to say
    assert from_tensor(_tensor([0, MAX_ELEMENTS])).shape == (0, MAX_ELEMENTS)
    deepest = np.zeros((1,) * MAX_RANK, np.float32)
    assert from_tensor(to_tensor(deepest)).shape == deepest.shape


def test_a_huge_datatype_is_quoted_not_echoed() -> None:
    with pytest.raises(InvalidInput) as caught:
        from_tensor(_tensor([1, 1], b"\0" * 4, datatype="X\n" * 100_000))
    message = str(caught.value)
    assert "(200,000 characters)" in message and "\n" not in message
    assert len(message) < 400
