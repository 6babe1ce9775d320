"""ScoreStream with flow control and retries: any number of chunks in bounded memory.

At most `max_in_flight_rows` rows are sent and not yet answered, so one stream never fills the
server's queue by itself (its queue limit is in rows, shared by every caller). When the server
answers RESOURCE_EXHAUSTED (queue full) or UNAVAILABLE, the unanswered chunks are sent again on
a new stream after an exponential backoff; a chunk is read from the source once, and results
come back in source order, one per chunk.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc
from numpy.typing import NDArray

from latentwatch.errors import LatentwatchError, error_for_status
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.scoring.results import ScoreResult
from latentwatch.wire.score import result_from_response

logger = logging.getLogger(__name__)

RETRIED_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})


@dataclass(frozen=True)
class StreamPolicy:
    """Flow control and retries of one stream."""

    max_in_flight_rows: int = 4096  # sent and unanswered; half the server's default queue
    max_attempts: int = 6  # consecutive failed attempts (no response in between) before giving up
    backoff_initial_s: float = 0.1  # first wait; doubles per failed attempt
    backoff_max_s: float = 5.0

    def __post_init__(self) -> None:
        if self.max_in_flight_rows < 1 or self.max_attempts < 1:
            raise ValueError("max_in_flight_rows and max_attempts must be at least 1")
        if self.backoff_initial_s < 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("need 0 <= backoff_initial_s <= backoff_max_s")

    def backoff_s(self, failed_attempts: int) -> float:
        return min(self.backoff_initial_s * 2 ** (failed_attempts - 1), self.backoff_max_s)


class _Flow:
    """Chunks between the source and the server, shared by the request and response threads."""

    def __init__(self, source: Iterable[NDArray], max_in_flight_rows: int) -> None:
        self._source = iter(source)
        self._limit = max_in_flight_rows
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
        while True:
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


def score_chunks(
    open_stream: Callable[[Iterator[pb.ScoreRequest]], grpc.Call],
    chunks: Iterable[NDArray],
    make: Callable[[int, NDArray], pb.ScoreRequest],
    policy: StreamPolicy,
    target: str,
) -> Iterator[ScoreResult]:
    """One result per chunk, in order, over as many ScoreStream calls as retries need."""
    flow = _Flow(chunks, policy.max_in_flight_rows)
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
                code = err.code() if isinstance(err, grpc.Call) else grpc.StatusCode.UNKNOWN
                details = (err.details() if isinstance(err, grpc.Call) else None) or str(err)
                failed_attempts += 1
                if code not in RETRIED_CODES:
                    raise error_for_status(code, details) from err
                if failed_attempts >= policy.max_attempts:
                    raise error_for_status(
                        code, f"{details} (gave up after {failed_attempts} attempts)"
                    ) from err
                wait_s = policy.backoff_s(failed_attempts)
                logger.warning("%s: %s, %s; retrying the unanswered rows in %.1f s",
                               target, code.name, details, wait_s)
                time.sleep(wait_s)
                continue
            finally:
                responses.cancel()
            if flow.failure is not None:
                raise flow.failure
            if not flow.done():
                raise LatentwatchError(f"{target}: the stream ended before every chunk was "
                                       "answered")
            return
    finally:
        flow.stop()
