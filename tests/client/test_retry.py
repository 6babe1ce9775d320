"""Retries of refused calls: jittered exponential waits, which codes and calls are retried, the
deadline, and score streams that move to a new stream and resend only unanswered chunks.

The calls here are plain functions raising what the channel raises, so the waits run on a fake
clock with a seeded random source; tests/client/test_client_at_scale.py runs the same code
against real servers."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.client.retry import Retrier, RetryPolicy
from latentwatch.client.streaming import StreamPolicy, score_chunks
from latentwatch.errors import InvalidInput, LatentwatchError, NotReady, QueueFull
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.tensors import from_tensor, to_tensor


class _Failed(grpc.RpcError, grpc.Call):  # type: ignore[misc]
    """A call that ended with `code`, as the channel raises it."""

    def __init__(self, code: grpc.StatusCode, details: str = "try later") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


class _Clock:
    def __init__(self) -> None:
        self.now_s = 100.0
        self.waits: list[float] = []

    def __call__(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now_s += seconds


def _retrier(policy: RetryPolicy, clock: _Clock, seed: int = 7) -> Retrier:
    return Retrier(policy, rng=random.Random(seed), sleep=clock.sleep, clock=clock)


def _failing(codes: list[grpc.StatusCode], calls: list[float | None]):  # type: ignore[no-untyped-def]
    """An attempt that fails with each of `codes` in turn, then answers "done"."""
    def attempt(left_s: float | None) -> str:
        calls.append(left_s)
        if len(calls) <= len(codes):
            raise _Failed(codes[len(calls) - 1])
        return "done"

    return attempt


def test_waits_grow_exponentially_with_full_jitter() -> None:
    policy = RetryPolicy(max_attempts=9, backoff_initial_s=0.1, backoff_max_s=1.6)
    clock = _Clock()
    calls: list[float | None] = []
    unavailable = [grpc.StatusCode.UNAVAILABLE] * 8
    assert _retrier(policy, clock).call("Score", _failing(unavailable, calls), None, "x") == "done"
    caps = [0.1, 0.2, 0.4, 0.8, 1.6, 1.6, 1.6, 1.6]
    assert [policy.backoff_s(n) for n in range(1, 9)] == caps
    # Jitter: the waits are draws below the caps, not the caps, and the seed fixes them.
    assert len(clock.waits) == 8
    assert all(0 <= w < c for w, c in zip(clock.waits, caps, strict=True))
    again = _Clock()
    _retrier(policy, again).call("Score", _failing(unavailable, []), None, "x")
    assert again.waits == clock.waits
    other = _Clock()
    _retrier(policy, other, seed=8).call("Score", _failing(unavailable, []), None, "x")
    assert other.waits != clock.waits


def test_jittered_waits_fill_the_range_below_the_cap() -> None:
    retrier = Retrier(RetryPolicy(backoff_initial_s=1.0, backoff_max_s=1.0), rng=random.Random(0))
    waits = np.array([retrier.wait_s(3) for _ in range(4000)])
    assert waits.min() >= 0 and waits.max() <= 1.0
    assert abs(waits.mean() - 0.5) < 0.03 and waits.std() > 0.25  # uniform: mean 1/2, sd 0.29


def test_refusals_are_retried_up_to_max_attempts_then_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = _Clock()
    calls: list[float | None] = []
    refused = [grpc.StatusCode.RESOURCE_EXHAUSTED] * 10
    retrier = _retrier(RetryPolicy(max_attempts=4), clock)
    with pytest.raises(QueueFull, match="^try later$"):  # the server's message, as it was
        retrier.call("Score", _failing(refused, calls), None, "x")
    assert len(calls) == 4 and len(clock.waits) == 3
    assert "gave up after 4 attempts" in caplog.text


@pytest.mark.parametrize(
    ("code", "error"),
    [(grpc.StatusCode.INVALID_ARGUMENT, InvalidInput),
     (grpc.StatusCode.INTERNAL, LatentwatchError)],
)
def test_other_codes_are_the_answer(code: grpc.StatusCode, error: type[Exception]) -> None:
    clock = _Clock()
    calls: list[float | None] = []
    with pytest.raises(error, match="try later$"):
        _retrier(RetryPolicy(), clock).call("Score", _failing([code], calls), None, "x")
    assert len(calls) == 1 and clock.waits == []


def test_calls_that_change_the_server_are_not_retried() -> None:
    clock = _Clock()
    calls: list[float | None] = []
    with pytest.raises(NotReady, match="try later$"):
        _retrier(RetryPolicy(), clock).call(
            "ModelControl", _failing([grpc.StatusCode.UNAVAILABLE], calls), None, "x")
    assert len(calls) == 1
    assert "ModelControl" not in RetryPolicy().retry_methods


def test_the_deadline_covers_every_attempt_and_wait(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    calls: list[float | None] = []
    policy = RetryPolicy(max_attempts=100, backoff_initial_s=1.0, backoff_max_s=1.0)
    with pytest.raises(NotReady, match="^try later$"):
        _retrier(policy, clock).call(
            "Score", _failing([grpc.StatusCode.UNAVAILABLE] * 100, calls), 3.0, "x")
    assert re.search(r"Score on x: UNAVAILABLE, try later; the 3 s deadline ran out after \d+ "
                     "attempts", caplog.text)
    assert clock.now_s - 100.0 <= 3.0
    # Each attempt gets what is left of the deadline.
    assert calls[0] == 3.0 and all(b < a for a, b in zip(calls, calls[1:], strict=False))


def test_deadline_exceeded_says_which_call_and_deadline() -> None:
    clock = _Clock()

    def slow(left_s: float | None) -> str:
        assert left_s is not None
        clock.now_s += left_s  # the channel waited out the deadline
        raise _Failed(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    with pytest.raises(LatentwatchError, match=r"^Score on h:1: no answer within the 2 s "
                                               r"deadline \(timeout_s\)$") as caught:
        _retrier(RetryPolicy(), clock).call("Score", slow, 2.0, "h:1")
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and clock.waits == []


def test_a_deadline_exceeded_from_the_server_keeps_its_message() -> None:
    """A server's own DEADLINE_EXCEEDED (a stream that went idle) is not the caller's deadline."""
    clock = _Clock()
    with pytest.raises(LatentwatchError, match="^try later$"):
        _retrier(RetryPolicy(), clock).call(
            "Score", _failing([grpc.StatusCode.DEADLINE_EXCEEDED], []), 2.0, "h:1")


class _EchoStreams:
    """ScoreStream calls that answer each request with its first column as the score; stream
    `fail_on` ends with UNAVAILABLE after `answer` responses (a server that died)."""

    def __init__(self, fail_on: int = -1, answer: int = 0) -> None:
        self.fail_on, self.answer = fail_on, answer
        self.sent: list[list[str]] = []

    def __call__(self, requests: Iterator[pb.ScoreRequest]) -> _EchoStreams:
        self._requests = requests
        self.sent.append([])
        return self

    def __iter__(self) -> Iterator[pb.ScoreResponse]:
        failing = len(self.sent) - 1 == self.fail_on
        for n, request in enumerate(self._requests):
            self.sent[-1].append(request.request_id)
            if failing and n == self.answer:
                raise _Failed(grpc.StatusCode.UNAVAILABLE, "connection reset")
            rows = from_tensor(request.input)
            score = rows[:, 0].tolist()
            yield pb.ScoreResponse(
                request_id=request.request_id, model_name="m", model_version="1", score=score,
                p_value=[1.0] * len(score), outlier_probability=[0.0] * len(score),
                is_outlier=[False] * len(score),
            )

    def cancel(self) -> None:
        pass


def _chunks(n_chunks: int, rows: int) -> Iterator[NDArray]:
    for i in range(n_chunks):
        yield np.arange(i * rows, (i + 1) * rows, dtype=np.float64)[:, None]


def _make(index: int, rows: NDArray) -> pb.ScoreRequest:
    return pb.ScoreRequest(request_id=str(index), input=to_tensor(rows))


def test_a_stream_moves_to_a_new_stream_after_rows_per_stream() -> None:
    streams = _EchoStreams()
    policy = StreamPolicy(max_in_flight_rows=30, rows_per_stream=40)
    parts = list(score_chunks(streams, _chunks(10, 10), _make, policy, "x"))
    assert [len(s) for s in streams.sent] == [4, 4, 2]  # a new call (and server) every 40 rows
    assert np.concatenate([p.score for p in parts]).tolist() == list(range(100))


def test_a_broken_stream_resends_exactly_the_unanswered_chunks() -> None:
    streams = _EchoStreams(fail_on=0, answer=3)  # chunks 0-2 answered, then the server dies
    clock = _Clock()
    policy = StreamPolicy(max_in_flight_rows=20, rows_per_stream=1000)
    parts = list(score_chunks(streams, _chunks(8, 10), _make, policy, "x",
                              _retrier(policy, clock)))
    assert streams.sent[0][:3] == ["0", "1", "2"]
    resent = streams.sent[1]
    assert resent[0] == "3" and resent == [str(i) for i in range(3, 8)]  # in order, none lost
    assert np.concatenate([p.score for p in parts]).tolist() == list(range(80))  # none twice
    assert len(clock.waits) == 1 and 0 <= clock.waits[0] <= policy.backoff_s(1)
