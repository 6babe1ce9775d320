"""ScoreStream with flow control and retries: any number of chunks in bounded memory.

At most `max_in_flight_rows` rows are sent and not yet answered, so one stream never fills the
server's queue by itself (its queue limit is in rows, shared by every caller). When the server
answers RESOURCE_EXHAUSTED (queue full) or UNAVAILABLE (a server that stopped or died), the
unanswered chunks are sent again, in order, on a new stream after a jittered exponential backoff
(latentwatch.client.retry); a chunk is read from the source once, and results come back in
source order, one per chunk, each exactly once.

A stream half-closes after `rows_per_stream` rows and the next chunks go on a new one: a new
call is placed by the channel's load balancing, so one long file is spread over every server
behind a headless Service (one stream would stay on one server for its whole length).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc
from numpy.typing import NDArray

from latentwatch.client.retry import RETRIED_CODES, Retrier, RetryPolicy, status_of
from latentwatch.errors import LatentwatchError, error_for_status
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.scoring.results import ScoreResult
from latentwatch.wire.score import result_from_response

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamPolicy(RetryPolicy):
    """Flow control of one score stream, and its retries (the RetryPolicy fields; max_attempts
    counts failed attempts in a row, with no response in between)."""

    max_in_flight_rows: int = 4096  # sent and unanswered; half the server's default queue
    rows_per_stream: int = 16384  # then a new stream, which load balancing may place elsewhere

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_in_flight_rows < 1 or self.rows_per_stream < 1:
            raise ValueError("max_in_flight_rows and rows_per_stream must be at least 1")


class _Flow:
    """Chunks between the source and the server, shared by the request and response threads."""

    def __init__(self, source: Iterable[NDArray], max_in_flight_rows: int,
                 rows_per_stream: int) -> None:
        self._source = iter(source)
        self._limit = max_in_flight_rows
        self._rows_per_stream = rows_per_stream
        self._cond = threading.Condition()
        self._pull = threading.Lock()  # one reader of the source at a time
        self._sent: deque[tuple[int, NDArray]] = deque()  # sent, unanswered, in order
        self._unsent: deque[tuple[int, NDArray]] = deque()  # read, to send (again) first
        self._rows_in_flight = 0
        self._next_index = 0
        self._exhausted = False
        self._generation = 0
        self.failure: Exception | None = None  # raised by the source

    def restart(self) -> int:
        """Puts unanswered chunks back in front; returns the new attempt's generation."""
        with self._cond:
            self._generation += 1
            self._unsent.extendleft(reversed(self._sent))
            self._sent.clear()
            self._rows_in_flight = 0
            self._cond.notify_all()
            return self._generation

    def stop(self) -> None:
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def requests(self, generation: int, make: Callable[[int, NDArray], pb.ScoreRequest]
                 ) -> Iterator[pb.ScoreRequest]:
        sent_rows = 0
        while sent_rows < self._rows_per_stream:  # then half-close: the next stream goes on
            with self._pull:
                with self._cond:
                    need = not self._unsent and not self._exhausted
                if need:
                    try:
                        rows = next(self._source)
                    except StopIteration:
                        with self._cond:
                            self._exhausted = True
                    except Exception as err:  # the source failed: end this stream with it
                        self.failure = err
                        raise
                    else:
                        with self._cond:
                            self._unsent.append((self._next_index, rows))
                            self._next_index += 1
            item: tuple[int, NDArray] | None = None
            with self._cond:
                while True:
                    if generation != self._generation:
                        return
                    if not self._unsent:
                        if self._exhausted:
                            return  # half-close: every chunk is sent
                        break  # read the next chunk first
                    head = self._unsent[0]
                    n_rows = len(head[1])
                    if self._rows_in_flight == 0 or self._rows_in_flight + n_rows <= self._limit:
                        item = self._unsent.popleft()
                        self._sent.append(item)
                        self._rows_in_flight += n_rows
                        break
                    self._cond.wait()
            if item is not None:
                sent_rows += len(item[1])
                yield make(*item)

    def answered(self, request_id: str) -> tuple[int, int]:
        """Index and rows of the oldest sent chunk, which `request_id` must answer."""
        with self._cond:
            if not self._sent:
                raise LatentwatchError(f"stream answered request {request_id!r} it was not sent")
            index, rows = self._sent.popleft()
            if request_id != str(index):
                raise LatentwatchError(
                    f"stream out of order: got response {request_id!r} for request {index}"
                )
            self._rows_in_flight -= len(rows)
            self._cond.notify_all()
            return index, len(rows)

    def done(self) -> bool:
        with self._cond:
            return self._exhausted and not self._sent and not self._unsent

    def unanswered(self) -> int:
        with self._cond:
            return len(self._sent)


def score_chunks(
    open_stream: Callable[[Iterator[pb.ScoreRequest]], grpc.Call],
    chunks: Iterable[NDArray],
    make: Callable[[int, NDArray], pb.ScoreRequest],
    policy: StreamPolicy,
    target: str,
    retrier: Retrier | None = None,
) -> Iterator[ScoreResult]:
    """One result per chunk, in order, over as many ScoreStream calls as retries and
    `policy.rows_per_stream` need. `open_stream` starts one call (on whichever server the
    channel picks); `retrier` draws the waits (default: one over `policy`)."""
    retrier = retrier or Retrier(policy)
    attempts = policy.attempts_of("ScoreStream")
    flow = _Flow(chunks, policy.max_in_flight_rows, policy.rows_per_stream)
    failed_attempts = 0
    try:
        while True:
            generation = flow.restart()
            responses = open_stream(flow.requests(generation, make))
            try:
                for response in responses:
                    _, n_rows = flow.answered(response.request_id)
                    failed_attempts = 0
                    yield result_from_response(response, n_rows)
            except grpc.RpcError as err:
                if flow.failure is not None:
                    raise flow.failure from err
                code, details = status_of(err)
                failed_attempts += 1
                if code not in RETRIED_CODES or attempts == 1:
                    raise error_for_status(code, details) from err
                if failed_attempts >= attempts:
                    raise error_for_status(
                        code, f"{details} (gave up after {failed_attempts} attempts)"
                    ) from err
                wait_s = retrier.wait_s(failed_attempts)
                logger.warning("%s: %s, %s; retrying the unanswered rows in %.2f s",
                               target, code.name, details, wait_s)
                retrier.sleep(wait_s)
                continue
            finally:
                responses.cancel()
            if flow.failure is not None:
                raise flow.failure
            if flow.done():
                return
            if flow.unanswered():
                raise LatentwatchError(f"{target}: the stream ended before every chunk was "
                                       "answered")
            # rows_per_stream reached and every row answered: the next chunks on a new stream.
    finally:
        flow.stop()
