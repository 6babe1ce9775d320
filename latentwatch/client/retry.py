"""Retries of the client's calls: which ones, how often, and how long to wait in between.

A call is tried again only when the server (or the channel) says it could not take it now:
UNAVAILABLE (no server, a server shutting down or still loading, a connection that broke) and
RESOURCE_EXHAUSTED (queue full, too many calls at once). Any other status is the answer.

Only calls that read are retried: Score, ScoreStream, Encode, BiasReport, Generate, Traverse,
Translate, ListModels and GetModel give the same result when they run twice. ModelControl
changes what the server serves and is never retried.

Waits grow exponentially with "full jitter": attempt n waits a uniform draw from
[0, min(backoff_max_s, backoff_initial_s * 2**(n-1))], so many clients refused at the same moment
(a pod that died, a queue that filled) come back spread out instead of together.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import grpc

from latentwatch.errors import error_for_status

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRIED_CODES = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE})
# Calls that read: running one twice gives the same answer and changes nothing on the server.
IDEMPOTENT_METHODS = frozenset({
    "Score", "ScoreStream", "Encode", "BiasReport", "Generate", "Traverse", "Translate",
    "ListModels", "GetModel",
})


@dataclass(frozen=True)
class RetryPolicy:
    """How the client retries a refused call (see the module docstring)."""

    max_attempts: int = 6  # tries of one call (a stream: in a row without a response) in all
    backoff_initial_s: float = 0.1  # the cap of the first wait; doubles per failed attempt
    backoff_max_s: float = 5.0  # the cap of every wait
    retry_methods: frozenset[str] = IDEMPOTENT_METHODS  # RPC names that may run again

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.backoff_initial_s < 0 or self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("need 0 <= backoff_initial_s <= backoff_max_s")

    def backoff_s(self, failed_attempts: int) -> float:
        """The longest wait after `failed_attempts` (1, 2, ...) failures; the wait is drawn
        uniformly below it."""
        return min(self.backoff_initial_s * 2 ** (failed_attempts - 1), self.backoff_max_s)

    def attempts_of(self, method: str) -> int:
        return self.max_attempts if method in self.retry_methods else 1


def status_of(err: grpc.RpcError) -> tuple[grpc.StatusCode, str]:
    """The status code and details of a failed call (UNKNOWN for errors that carry none)."""
    if isinstance(err, grpc.Call):
        return err.code(), err.details() or str(err)
    return grpc.StatusCode.UNKNOWN, str(err)


class Retrier:
    """Runs calls under a RetryPolicy and a deadline. `rng`, `sleep` and `clock` are the sources
    of randomness and time (a seeded random.Random and a fake clock make the waits testable)."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self.sleep = sleep
        self.clock = clock

    def wait_s(self, failed_attempts: int) -> float:
        """Full jitter: uniform in [0, policy.backoff_s(failed_attempts)]."""
        return self._rng.uniform(0.0, self.policy.backoff_s(failed_attempts))

    def call(
        self,
        method: str,
        attempt: Callable[[float | None], T],
        timeout_s: float | None,
        where: str,
    ) -> T:
        """`attempt(seconds left or None)` until it returns, fails for good, or runs out of
        attempts or time. `timeout_s` bounds every attempt and wait together. Errors are raised
        as latentwatch.errors classes with the server's message as their text (how many
        attempts were made goes to the log); a deadline of ours that passed says so instead."""
        deadline = None if timeout_s is None else self.clock() + timeout_s
        attempts = self.policy.attempts_of(method)
        failed = 0
        while True:
            left_s = None if deadline is None else max(deadline - self.clock(), 0.0)
            try:
                return attempt(left_s)
            except grpc.RpcError as err:
                code, details = status_of(err)
                failed += 1
                # Ours when the deadline has passed; else the server's own DEADLINE_EXCEEDED.
                if (code == grpc.StatusCode.DEADLINE_EXCEEDED and deadline is not None
                        and self.clock() >= deadline):
                    raise error_for_status(
                        code, f"{method} on {where}: no answer within the {timeout_s:g} s "
                        f"deadline (timeout_s)",
                    ) from err
                if code not in RETRIED_CODES:
                    raise error_for_status(code, details) from err
                wait_s = self.wait_s(failed)
                if failed >= attempts:
                    if attempts > 1:
                        logger.warning("%s on %s: %s, %s; gave up after %d attempts", method,
                                       where, code.name, details, failed)
                    raise error_for_status(code, details) from err
                if deadline is not None and self.clock() + wait_s >= deadline:
                    logger.warning("%s on %s: %s, %s; the %g s deadline ran out after %d "
                                   "attempts", method, where, code.name, details, timeout_s,
                                   failed)
                    raise error_for_status(code, details) from err
                logger.warning("%s on %s: %s, %s; attempt %d of %d in %.2f s", method, where,
                               code.name, details, failed + 1, attempts, wait_s)
                self.sleep(wait_s)
