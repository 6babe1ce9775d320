"""Score streams with flow control and retries, against a real server with a small queue."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.client.client import LatentwatchClient, ScoreResult
from latentwatch.client.streaming import StreamPolicy, score_chunks
from latentwatch.errors import NotReady, QueueFull
from latentwatch.protos import latentwatch_pb2 as pb

VAE = "digits-vae"


@pytest.fixture(scope="module")
def digits() -> NDArray[np.float32]:
    from latentwatch.data import load_source

    return load_source("digits").X  # (1797, 64)


@pytest.fixture(scope="module")
def small_queue(
    model_repo: Path, serve: Callable[..., AbstractContextManager[str]]
) -> Iterator[str]:
    with serve(model_repo, max_queue_rows=1024) as host_port:
        yield host_port


def _chunks(X: NDArray, rows: int) -> Iterator[NDArray]:
    for start in range(0, X.shape[0], rows):
        yield X[start : start + rows]


def test_a_stream_past_the_queue_limit_is_paced_and_retried(
    small_queue: str, digits: NDArray
) -> None:
    """Before: the stream's own requests filled the queue (RESOURCE_EXHAUSTED, nothing back)."""
    X = np.tile(digits, (4, 1))[:6000]  # > the 1024-row queue many times over
    policy = StreamPolicy(max_in_flight_rows=4096, backoff_initial_s=0.01, max_attempts=50)
    with LatentwatchClient(small_queue, stream_policy=policy) as client:
        client.wait_ready(30.0)
        parts = list(client.score_stream(VAE, _chunks(X, 512)))
        expected = client.score(VAE, X[:1797])
    combined = ScoreResult.concat(parts)
    assert len(parts) == -(-6000 // 512) and len(combined) == 6000
    np.testing.assert_allclose(combined.score[:1797], expected.score, rtol=1e-6)
    np.testing.assert_allclose(combined.score[1797:3594], expected.score, rtol=1e-6)


class _Refused(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """What a full server queue answers, as the channel raises it."""

    def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.RESOURCE_EXHAUSTED

    def details(self) -> str:
        return "8192 rows are queued; retry later"


class _AlwaysFull:
    """A ScoreStream whose server queue never drains: each attempt fails after reading."""

    def __init__(self) -> None:
        self.attempts = 0
        self.sent: list[str] = []

    def __call__(self, requests: Iterator[pb.ScoreRequest]) -> _AlwaysFull:
        self.attempts += 1
        self.sent.append(next(requests).request_id)
        return self

    def __iter__(self) -> Iterator[pb.ScoreResponse]:
        raise _Refused()

    def cancel(self) -> None:
        pass


def test_retries_are_bounded_with_a_clear_error(digits: NDArray) -> None:
    stream = _AlwaysFull()
    policy = StreamPolicy(max_attempts=3, backoff_initial_s=0.01)
    make = lambda i, rows: pb.ScoreRequest(request_id=str(i))  # noqa: E731
    with pytest.raises(QueueFull, match="retry later .gave up after 3 attempts"):
        list(score_chunks(stream, _chunks(digits, 100), make, policy, "here"))
    assert stream.attempts == 3
    assert stream.sent == ["0", "0", "0"]  # the unanswered chunk again, not the next one
    assert policy.backoff_s(1) == 0.01 and policy.backoff_s(3) == 0.04


def test_a_failing_source_ends_the_stream_with_its_error(small_queue: str, digits: NDArray) -> None:
    def source() -> Iterator[NDArray]:
        yield digits[:100]
        raise ValueError("the file broke")

    with LatentwatchClient(small_queue) as client, pytest.raises(ValueError, match="broke"):
        list(client.score_stream(VAE, source()))


def test_connect_fails_fast_on_an_unreachable_server() -> None:
    """Before: no connect check; the CLI waited 30 s, then DEADLINE_EXCEEDED."""
    start_s = time.monotonic()
    with LatentwatchClient("127.0.0.1:1", timeout_s=20.0) as client:
        with pytest.raises(NotReady, match="cannot connect to 127.0.0.1:1"):
            client.connect()
    assert time.monotonic() - start_s < 5.0


def test_dataframes_are_put_in_the_model_order_by_name(
    small_queue: str, digits: NDArray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pandas as pd

    from latentwatch.client import frames
    from latentwatch.errors import InvalidInput

    names = tuple(f"p{i}" for i in range(64))
    monkeypatch.setattr(frames, "feature_names", lambda info: names)
    frame = pd.DataFrame(digits[:50], columns=list(names))
    with LatentwatchClient(small_queue) as client:
        expected = client.score(VAE, digits[:50])
        reordered = client.score(VAE, frame[list(reversed(names))])
        np.testing.assert_allclose(reordered.score, expected.score, rtol=1e-6)
        with pytest.raises(InvalidInput, match=r"missing 1: 'p3'.*unexpected 1: 'extra'"):
            client.score(VAE, frame.rename(columns={"p3": "extra"}))
