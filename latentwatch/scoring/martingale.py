"""An exchangeability monitor: a conformal test martingale over the p-values a version serves.

Under exchangeability (today's rows come from the calibration data's distribution) conformal
p-values are uniform, and a martingale that bets against uniformity does not grow: by Ville's
inequality it reaches c with probability at most 1/c. Under drift the p-values pile up near 0
(or 1) and the bets pay off exponentially fast. This is Vovk's Simple Jumper: three bettors with
betting functions f_e(p) = 1 + e (p - 1/2), e in {-1, 0, +1}, whose capital is mixed a little
at every step (the jumping rate), so that it follows drift that starts late.

Served p-values come from one fixed calibration set of n rows, and given that set they are not
exactly uniform: their mean is (1 + n U) / (n + 1), U the mean of n uniforms (the calibration
scores' ranks in the score distribution), so it is off 1/2 by up to |U - 1/2| + 1/(2 (n + 1)).
A bettor that is paid f_e would win on that offset alone, on perfectly exchangeable traffic. So
each bettor's payout is divided by 1 + |e| slack(n), where slack(n) bounds the offset with
probability 1 - delta over the calibration draw (Bernstein's inequality, variance 1/12): given
such a calibration every bettor's expected payout is at most 1, and the martingale is a test
supermartingale. The alarm statistic is CUSUM-like: log10 of the martingale over its running
minimum, which starts again from 0 after a long calm instead of having to climb out of the
hole that calm dug.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

JUMPING_RATE = 0.01  # Vovk et al. use 0.01
CALIBRATION_DELTA = 1e-3  # probability that a calibration draw breaks the slack's bound


def calibration_slack(n_rows: int, delta: float = CALIBRATION_DELTA) -> float:
    """Bound on |E[p | calibration] - 1/2| for conformal p-values of n calibration rows, which
    holds with probability at least 1 - delta over the calibration draw."""
    if n_rows < 1:
        raise ValueError(f"calibration rows must be positive, got {n_rows}")
    log_term = math.log(2.0 / delta)
    deviation = math.sqrt(2.0 * log_term / (12.0 * n_rows)) + log_term / (3.0 * n_rows)
    return deviation + 1.0 / (2.0 * (n_rows + 1))


def calibration_slacks(calibration_rows: int | NDArray[np.integer]) -> float | NDArray[np.float64]:
    """calibration_slack of one calibration size, or of each row's (an array)."""
    if np.ndim(calibration_rows) == 0:
        return calibration_slack(int(calibration_rows))
    sizes, index = np.unique(np.asarray(calibration_rows), return_inverse=True)
    return np.array([calibration_slack(int(n)) for n in sizes.tolist()])[index]


class SimpleJumper:
    """The Simple Jumper martingale over a stream of p-values, with each p-value's calibration
    slack (see the module's note); log scale throughout, so it never overflows."""

    def __init__(self, jumping_rate: float = JUMPING_RATE) -> None:
        if not 0.0 < jumping_rate < 1.0:
            raise ValueError(f"jumping_rate must be in (0, 1), got {jumping_rate}")
        self.jumping_rate = jumping_rate
        self._weights = [1.0 / 3, 1.0 / 3, 1.0 / 3]  # capital shares of e = -1, 0, +1
        self.log10_martingale = 0.0
        self.log10_minimum = 0.0  # the running minimum of log10_martingale, from the start
        self.n_seen = 0

    @property
    def log10_cusum(self) -> float:
        """log10 of the martingale over its running minimum: 0 on a calm stream; rising by
        about log10 of the payout per row once the stream drifts."""
        return self.log10_martingale - self.log10_minimum

    def update(self, p: NDArray[np.floating], slack: NDArray[np.floating] | float) -> None:
        """Bets on each p-value (in order), paying each bettor f_e(p) / (1 + |e| slack)."""
        p_list = np.asarray(p, dtype=np.float64).reshape(-1).tolist()
        slacks = np.broadcast_to(np.asarray(slack, dtype=np.float64), (len(p_list),)).tolist()
        keep = 1.0 - self.jumping_rate
        spread = self.jumping_rate / 3.0
        down, flat, up = self._weights
        log_m, log_min = self.log10_martingale * math.log(10), self.log10_minimum * math.log(10)
        for value, s in zip(p_list, slacks, strict=True):
            down, flat, up = keep * down + spread, keep * flat + spread, keep * up + spread
            centred = value - 0.5
            down *= (1.0 - centred) / (1.0 + s)
            up *= (1.0 + centred) / (1.0 + s)
            total = down + flat + up
            log_m += math.log(total)
            down, flat, up = down / total, flat / total, up / total
            if log_m < log_min:
                log_min = log_m
        self._weights = [down, flat, up]
        self.log10_martingale = log_m / math.log(10)
        self.log10_minimum = log_min / math.log(10)
        self.n_seen += len(p_list)
