"""BiasReport streams that are refused get the right status and message, options included
(validated once, by the service), and the server goes on."""

from __future__ import annotations

import grpc
import pytest
from bias_support import BIAS_MAX_ROWS, VAE, WIDE, call, chunked, normal_rows
from numpy.typing import NDArray
from server_harness import ServerThread

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.tensors import to_tensor


def _requests(case: str, x: NDArray) -> tuple[list[pb.BiasReportRequest], str, str]:
    """A bad stream for `case`, the status it gets and text its message must hold."""
    good = chunked(VAE, x, 50)
    if case == "empty stream":
        return [], "INVALID_ARGUMENT", "empty stream"
    if case == "no rows":
        return [pb.BiasReportRequest(model_name=VAE)], "INVALID_ARGUMENT", "no rows"
    if case == "unknown model":
        return chunked("no-such-model", x, 50), "NOT_FOUND", "this server has"
    if case == "model changes mid-stream":
        good[2].model_name = "digits-ae"
        return good, "INVALID_ARGUMENT", "model_name: 'digits-ae' in a later chunk"
    if case == "version changes mid-stream":
        good[1].model_version = "12345"
        return good, "INVALID_ARGUMENT", "model_version"
    if case == "ids length":
        good[1].ids.extend(["a"] * 49)
        return good, "INVALID_ARGUMENT", "ids: 49 given for a chunk of 50 rows"
    if case == "ids in some chunks only":
        good[1].ids.extend(["a"] * 50)
        return good, "INVALID_ARGUMENT", "with every chunk or with none"
    if case == "group columns change":
        good[0].groups.append(pb.GroupColumn(name="g", values=["a"] * 50))
        return good, "INVALID_ARGUMENT", "group columns must be the same"
    if case == "bad shape in chunk 2":
        good[2].input.CopyFrom(to_tensor(x[:3, :-1]))
        return good, "INVALID_ARGUMENT", "chunk 2 input: expected shape"
    options = {
        "bins 1": (pb.BiasReportOptions(bins=1), "bins"),
        "negative alpha": (pb.BiasReportOptions(alpha=-1.0), "alpha"),
        "unknown mode": (pb.BiasReportOptions(mode="median"), "mode: expected one of paper, max"),
        "sparse fraction": (pb.BiasReportOptions(sparse_fraction=0.9), "sparse_fraction"),
        "n_decoded above top_k": (pb.BiasReportOptions(top_k=3, n_decoded=4), "n_decoded"),
        "negative n_decoded": (
            pb.BiasReportOptions(n_decoded=-1), "n_decoded: expected 0 to top_k (20) rows, got -1"
        ),
    }[case]
    good[0].options.CopyFrom(options[0])
    return good, "INVALID_ARGUMENT", options[1]


BAD_CASES = [
    "empty stream", "no rows", "unknown model", "model changes mid-stream",
    "version changes mid-stream", "ids length", "ids in some chunks only", "group columns change",
    "bad shape in chunk 2", "bins 1", "negative alpha", "unknown mode", "sparse fraction",
    "n_decoded above top_k", "negative n_decoded",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_streams_get_the_right_status_and_then_a_good_one_works(
    case: str, digits_server: ServerThread, digits: tuple[NDArray, NDArray]
) -> None:
    x = digits[0][:200]
    requests, code, text = _requests(case, x)
    with pytest.raises(grpc.RpcError) as caught:
        call(digits_server, requests)
    assert caught.value.code().name == code
    assert text in caught.value.details(), caught.value.details()
    assert call(digits_server, chunked(VAE, x, 50)).n_rows == 200


def test_too_many_rows_name_the_setting_and_the_server_goes_on(wide_server: ServerThread) -> None:
    x = normal_rows(BIAS_MAX_ROWS + 1)
    with pytest.raises(grpc.RpcError) as caught:
        call(wide_server, chunked(WIDE, x, 1000))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "LATENTWATCH_BIAS_MAX_ROWS" in caught.value.details()
    assert call(wide_server, chunked(WIDE, x[:BIAS_MAX_ROWS], 1000)).n_rows == BIAS_MAX_ROWS
