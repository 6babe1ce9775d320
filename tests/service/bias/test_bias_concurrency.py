"""At most `max_concurrent_bias_reports` BiasReport streams at once: the next is refused at once
with RESOURCE_EXHAUSTED naming the limit and its setting, and a report that finishes, fails or
is cancelled gives its slot back."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from bias_support import PLAIN, call, chunked, normal_rows, stub
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2 as pb

LIMIT = 2
WAIT_S = 15.0  # for the server to see a stream start or end; a pass takes milliseconds


@pytest.fixture(scope="module")
def limited(wide_repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(wide_repo, max_concurrent_bias_reports=LIMIT))
    yield running
    running.close()


class HeldReport:
    """A BiasReport whose chunks the test sends one at a time; it holds a slot until it ends."""

    def __init__(self, server: ServerThread) -> None:
        self._requests = chunked(PLAIN, normal_rows(300, seed=1), 100)
        self._chunks: queue.Queue[pb.BiasReportRequest | None] = queue.Queue()
        self._chunks.put(self._requests[0])
        self.future = stub(server).BiasReport.future(iter(self._chunks.get, None), timeout=60)

    def finish(self) -> pb.BiasReportResponse:
        for request in self._requests[1:]:
            self._chunks.put(request)
        self._chunks.put(None)
        return self.future.result(timeout=30)

    def fail(self) -> grpc.RpcError:
        self._chunks.put(pb.BiasReportRequest(input=self._requests[1].input, ids=["one id"]))
        self._chunks.put(None)
        error = self.future.exception(timeout=30)
        assert isinstance(error, grpc.RpcError)
        return error

    def refused(self) -> bool:
        return self.future.done() and self.future.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

    def cancel(self) -> None:
        self.future.cancel()
        self._chunks.put(None)  # ends the request iterator's wait


def _small_report(server: ServerThread) -> pb.BiasReportResponse:
    return call(server, chunked(PLAIN, normal_rows(60, seed=2), 30))


def _refusal_within(server: ServerThread, held: list[HeldReport]) -> grpc.RpcError:
    """The refusal a report gets while every held report is open. A held report starts
    asynchronously, so a probe can take the slot it was to take: it is opened again."""
    deadline = time.monotonic() + WAIT_S
    while True:
        for i, report in enumerate(held):
            if report.refused():
                held[i] = HeldReport(server)
        try:
            _small_report(server)
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            if not any(report.refused() for report in held):
                return err
        if time.monotonic() > deadline:
            pytest.fail(f"{LIMIT} reports were held open, and another one was still taken")
        time.sleep(0.02)


def _taken_within(server: ServerThread) -> None:
    """A report is taken again once a slot is free (a cancel reaches the server a bit later)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        try:
            assert _small_report(server).n_rows == 60
            return
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
        time.sleep(0.02)


def test_reports_past_the_limit_are_refused_and_every_ending_frees_a_slot(
    limited: ServerThread,
) -> None:
    held = [HeldReport(limited) for _ in range(LIMIT)]
    try:
        refusal = _refusal_within(limited, held)
        assert f"LATENTWATCH_MAX_CONCURRENT_BIAS_REPORTS = {LIMIT}" in refusal.details()
        assert f"{LIMIT} bias reports are running" in refusal.details()
        start = time.perf_counter()
        with pytest.raises(grpc.RpcError) as caught:  # at once, not after a wait
            _small_report(limited)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert time.perf_counter() - start < 2.0

        held[0].cancel()
        _taken_within(limited)
        held[0] = HeldReport(limited)
        _refusal_within(limited, held)

        error = held[1].fail()
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "ids: 1 given for a chunk of 100 rows" in error.details()
        _taken_within(limited)
        held[1] = HeldReport(limited)
        _refusal_within(limited, held)

        assert held[0].finish().n_rows == 300
        _taken_within(limited)
        assert held[1].finish().n_rows == 300
    finally:
        for report in held:
            report.cancel()
