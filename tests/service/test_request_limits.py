"""Request limits on the gRPC port: quiet streams end (LATENTWATCH_STREAM_IDLE_TIMEOUT_S), and
messages are bounded by the row limit of the widest model, not a flat 256 MiB."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from repo_builder import build_repo
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.wire.tensors import to_tensor

IDLE_S = 0.5


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = build_repo(tmp_path_factory.mktemp("idle") / "repo")
    running = ServerThread(server_settings(repo, stream_idle_timeout_s=IDLE_S))
    try:
        yield running
    finally:
        running.close()


def _quiet_after_one(request: object, release: threading.Event) -> Iterator[object]:
    yield request
    release.wait(30)  # sends nothing more until the test is over


def _rows() -> pb.Tensor:
    return to_tensor(np.zeros((4, 64), np.float32))


@pytest.mark.parametrize("method", ["BiasReport", "ScoreStream"])
def test_a_quiet_stream_ends_with_deadline_exceeded_and_others_go_on(
    server: ServerThread, method: str, tmp_path: Path
) -> None:
    stub = pb_grpc.LatentwatchStub(server.channel)
    release = threading.Event()
    started = time.monotonic()
    try:
        with pytest.raises(grpc.RpcError) as err:
            if method == "BiasReport":
                first = pb.BiasReportRequest(model_name="img-vae", input=_rows())
                stub.BiasReport(_quiet_after_one(first, release), timeout=20)
            else:
                first = pb.ScoreRequest(model_name="img-vae", input=_rows())
                for _ in stub.ScoreStream(_quiet_after_one(first, release), timeout=20):
                    pass
    finally:
        release.set()
    elapsed_s = time.monotonic() - started
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "LATENTWATCH_STREAM_IDLE_TIMEOUT_S" in (err.value.details() or "")
    assert IDLE_S <= elapsed_s < 10  # without the limit: the client's own 20 s deadline
    reply = stub.Score(pb.ScoreRequest(model_name="img-vae", input=_rows()), timeout=10)
    assert len(reply.score) == 4


def test_a_stream_that_keeps_sending_is_not_cut(server: ServerThread) -> None:
    stub = pb_grpc.LatentwatchStub(server.channel)

    def steady() -> Iterator[pb.ScoreRequest]:
        for _ in range(4):
            yield pb.ScoreRequest(model_name="img-vae", input=_rows())
            time.sleep(IDLE_S / 3)

    replies = list(stub.ScoreStream(steady(), timeout=20))
    assert len(replies) == 4


def test_messages_are_bounded_by_the_row_limit_of_the_widest_model(tmp_path: Path) -> None:
    from repo_builder import build_version

    from latentwatch.service.server import MESSAGE_SLACK, receive_limit
    from latentwatch.wire.bias import BIAS_CHUNK_ROWS

    repo = tmp_path / "repo"
    build_version(repo, "narrow", "1", kind="ae", n_features=5, latent_dim=2)
    settings = server_settings(repo, max_request_rows=20_000)
    from latentwatch.repository.layout import find_versions

    limit = receive_limit(settings, find_versions(repo))
    labels = BIAS_CHUNK_ROWS * settings.bias_max_group_columns * (settings.bias_max_label_chars + 4)
    assert limit == 20_000 * 5 * 8 + labels + MESSAGE_SLACK  # not max_message_bytes' 256 MiB
    assert limit < 25 * 2**20
    running = ServerThread(settings)
    try:
        stub = pb_grpc.LatentwatchStub(running.channel)
        largest = np.zeros((20_000, 5), np.float64)  # the most rows, in the widest datatype
        reply = stub.Score(pb.ScoreRequest(model_name="narrow", input=to_tensor(largest)))
        assert len(reply.score) == 20_000
        too_big = np.zeros((1_500_000, 5), np.float32)  # 30 MB: gRPC refuses it unparsed
        with pytest.raises(grpc.RpcError) as err:
            stub.Score(pb.ScoreRequest(model_name="narrow", input=to_tensor(too_big)))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reply = stub.Score(pb.ScoreRequest(model_name="narrow", input=to_tensor(largest[:3])))
        assert len(reply.score) == 3
    finally:
        running.close()
