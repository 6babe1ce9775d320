"""Abandoned work, on a real server over a real channel: a caller that leaves (its deadline
passes, or it cancels) takes its rows out of the queue at once, so other callers get in; a
request bigger than the queue enters it window by window, with other callers beside it.

Every ONNX Runtime run is made SLOW_RUN_S slower, so a 65,536-row request takes seconds of
runs (256 runs of 256 rows), as a big request on a real model does.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client.parser import text_string_to_metric_families
from repo_builder import reference_outputs
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.service.ort_runtime import OrtRuntime
from latentwatch.wire.tensors import to_tensor

log = logging.getLogger(__name__)

MODEL = "tab-ae"  # 5 features: a 65,536-row request is 1.3 MB
N_FEATURES = 5
BIG_ROWS = 65_536  # the default max_request_rows, 8 times the default max_queue_rows
MAX_QUEUE_ROWS = 8192
WINDOW_ROWS = MAX_QUEUE_ROWS // 2
SLOW_RUN_S = 0.01  # a big request: 256 runs, at least 2.6 s
DEADLINE_S = 0.5
# Bounds after the callers left: the old batcher needed a big request's whole runs (>= 2 s).
QUEUE_EMPTY_WITHIN_S = 1.0
REFUSED_WITHIN_S = 0.5
ANSWERED_WITHIN_S = 1.5


@pytest.fixture(scope="module")
def slow_server(synthetic_repo: Path) -> Iterator[ServerThread]:
    original = OrtRuntime.run

    def slow_run(self: OrtRuntime, feeds: Mapping[str, NDArray]) -> dict[str, NDArray]:
        time.sleep(SLOW_RUN_S)
        return original(self, feeds)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(OrtRuntime, "run", slow_run)
        running = ServerThread(server_settings(
            synthetic_repo, max_request_rows=BIG_ROWS, max_queue_rows=MAX_QUEUE_ROWS,
            max_batch_rows=256, intra_op_threads=1,
        ))
        yield running
        running.close()


def stub(server: ServerThread) -> pb_grpc.LatentwatchStub:
    return pb_grpc.LatentwatchStub(server.channel)


def rows(n: int, seed: int = 0) -> NDArray[np.float32]:
    return np.random.default_rng(seed).normal(size=(n, N_FEATURES)).astype(np.float32)


def queued_rows(server: ServerThread) -> float:
    """The latentwatch_queue_rows gauge of MODEL (its scorer's and encoder's queues)."""
    url = f"http://127.0.0.1:{server.running.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "latentwatch_queue_rows" and sample.labels["model"] == MODEL:
                return sample.value
    raise AssertionError("no latentwatch_queue_rows sample for the model")


def seconds_until(condition: Callable[[], bool], limit_s: float = 15.0) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < limit_s, "condition not met in time"
        time.sleep(0.005)
    return time.monotonic() - start


def answer_a_normal_caller(server: ServerThread, method: str = "Score") -> tuple[float, float]:
    """(seconds until a 10-row call is answered OK, seconds until its last RESOURCE_EXHAUSTED
    answer; it retries every 5 ms until answered)."""
    x = to_tensor(rows(10, seed=1))
    start, refused_s = time.monotonic(), 0.0
    while True:
        try:
            if method == "Score":
                reply = stub(server).Score(pb.ScoreRequest(model_name=MODEL, input=x), timeout=15)
                n = len(reply.score)
            else:
                encoded = stub(server).Encode(pb.EncodeRequest(model_name=MODEL, input=x),
                                              timeout=15)
                n = encoded.latent_mu.shape[0]
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            assert "limit of" in (err.details() or "")  # says what the limit is
            refused_s = time.monotonic() - start
            time.sleep(0.005)
            continue
        assert n == 10
        return time.monotonic() - start, refused_s


def big_call(server: ServerThread, method: str) -> grpc.Future:
    x = to_tensor(rows(BIG_ROWS))
    if method == "Score":
        return stub(server).Score.future(pb.ScoreRequest(model_name=MODEL, input=x),
                                         timeout=DEADLINE_S)
    return stub(server).Encode.future(pb.EncodeRequest(model_name=MODEL, input=x),
                                      timeout=DEADLINE_S)


def check_released(server: ServerThread, what: str, method: str = "Score") -> None:
    """Right after the callers left: the queue empties, and a normal caller is answered and
    not refused (RESOURCE_EXHAUSTED), within bounds."""
    left = time.monotonic()
    empty_at: list[float] = []
    watcher = threading.Thread(target=lambda: empty_at.append(
        left + seconds_until(lambda: queued_rows(server) == 0)))
    watcher.start()
    answered_s, refused_s = answer_a_normal_caller(server, method)
    watcher.join(20)
    empty_s = empty_at[0] - left
    log.info("%s: after the callers left, the queue was empty in %.3f s; a normal caller was "
             "refused for %.3f s and answered in %.3f s", what, empty_s, refused_s, answered_s)
    assert empty_s < QUEUE_EMPTY_WITHIN_S, f"the queue still held rows {empty_s:.2f} s after"
    assert refused_s < REFUSED_WITHIN_S, f"others refused for {refused_s:.2f} s after"
    assert answered_s < ANSWERED_WITHIN_S, f"a normal caller answered after {answered_s:.2f} s"


@pytest.mark.parametrize("method", ["Score", "Encode"])
def test_big_calls_past_their_deadline_release_the_queue_at_once(
    slow_server: ServerThread, method: str
) -> None:
    calls = [big_call(slow_server, method) for _ in range(2)]  # together 16 times the queue
    for call in calls:
        assert call.exception(timeout=30).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    check_released(slow_server, f"two big {method} calls past their deadline", method)


def test_a_cancelled_score_stream_releases_the_work_of_its_messages(
    slow_server: ServerThread,
) -> None:
    request = pb.ScoreRequest(model_name=MODEL, input=to_tensor(rows(BIG_ROWS)))
    responses = stub(slow_server).ScoreStream(iter([request, request]), timeout=30)
    seconds_until(lambda: queued_rows(slow_server) > 0)  # the server is working on them
    responses.cancel()
    with pytest.raises(grpc.RpcError) as caught:
        next(responses)
    assert caught.value.code() == grpc.StatusCode.CANCELLED
    check_released(slow_server, "a cancelled ScoreStream of two big messages")


def test_a_request_bigger_than_the_queue_succeeds_with_others_answered_beside_it(
    slow_server: ServerThread,
) -> None:
    x = rows(BIG_ROWS, seed=2)
    peak = 0.0
    with ThreadPoolExecutor(1) as pool:
        start = time.monotonic()
        request = pb.ScoreRequest(model_name=MODEL, input=to_tensor(x))
        big = pool.submit(stub(slow_server).Score, request, timeout=60)
        time.sleep(0.3)  # its first windows have run
        answered_s, refused_s = answer_a_normal_caller(slow_server)
        while not big.done():  # the queue never holds more than the big request's window
            peak = max(peak, queued_rows(slow_server))
            time.sleep(0.002)
        reply = big.result()
        big_s = time.monotonic() - start
    log.info("a %d-row Score took %.2f s; a normal caller beside it was answered in %.3f s "
             "(refused for %.3f s); queue peak %d rows", BIG_ROWS, big_s, answered_s, refused_s,
             peak)
    np.testing.assert_allclose(
        reply.score, reference_outputs(x, "ae", 2)["recon_error"], rtol=1e-5, atol=1e-5
    )
    assert refused_s == 0
    assert answered_s < big_s / 2  # between the big request's windows, not after all of them
    assert peak <= WINDOW_ROWS
