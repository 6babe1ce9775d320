"""A version's exchangeability monitor for the metrics: the martingale of
latentwatch.scoring.martingale fed with the p-values Score served, off the event loop."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
from numpy.typing import NDArray

from latentwatch.scoring.martingale import SimpleJumper, calibration_slacks


class Exchangeability:
    """A version's exchangeability martingale (latentwatch.scoring.martingale) over the p-values
    it served, in the order served. The event loop queues each request's p-values (no per-row
    work); the scrape, on the metrics thread, bets on them. A queue past MAX_PENDING_ROWS (no
    scrape for long) is drained on the event loop instead, so memory stays bounded."""

    MAX_PENDING_ROWS = 1 << 20

    def __init__(self) -> None:
        self.martingale = SimpleJumper()
        self._pending: deque[tuple[NDArray[np.float64], int | NDArray[np.int64]]] = deque()
        self._queued_rows = 0  # written by the event loop only
        self._drained_rows = 0  # written under the lock only
        self._lock = threading.Lock()

    def observe(self, p_values: NDArray[np.float64],
                calibration_rows: int | NDArray[np.int64]) -> None:
        """One request's served p-values and the calibration size (or each row's) behind them."""
        self._pending.append((p_values, calibration_rows))
        self._queued_rows += len(p_values)
        if self._queued_rows - self._drained_rows > self.MAX_PENDING_ROWS:
            self.log10_cusum()

    def log10_cusum(self) -> float:
        """The martingale's log10 over its running minimum, after betting on every queued row."""
        with self._lock:
            while self._pending:
                p, rows = self._pending.popleft()
                self.martingale.update(p, calibration_slacks(rows))
                self._drained_rows += len(p)
            return self.martingale.log10_cusum
