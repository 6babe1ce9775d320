"""The exchangeability martingale: the Simple Jumper against a plain reference, the calibration
slack against the exact conditional mean of conformal p-values, and its behaviour on
exchangeable and drifted streams scored against one finite calibration set."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from latentwatch.scoring.conformal import p_values
from latentwatch.scoring.martingale import (
    CALIBRATION_DELTA,
    SimpleJumper,
    calibration_slack,
    calibration_slacks,
)

ALERT = 2.0  # deploy/prometheus/rules.yml: LatentwatchExchangeabilityLost


def reference_log10(p: list[float], slack: float, jumping_rate: float = 0.01) -> list[float]:
    """Vovk's Simple Jumper written plainly: three capitals, no normalisation (short streams)."""
    capital = {-1: 1 / 3, 0: 1 / 3, 1: 1 / 3}
    path = []
    for value in p:
        total = sum(capital.values())
        capital = {e: (1 - jumping_rate) * c + jumping_rate * total / 3
                   for e, c in capital.items()}
        capital = {e: c * (1 + e * (value - 0.5)) / (1 + abs(e) * slack)
                   for e, c in capital.items()}
        path.append(math.log10(sum(capital.values())))
    return path


@pytest.mark.parametrize("slack", [0.0, 0.05])
def test_the_martingale_equals_a_plain_simple_jumper_in_one_call_or_many(slack: float) -> None:
    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=100), rng.uniform(0, 0.1, size=100)])
    path = reference_log10(p.tolist(), slack)
    whole = SimpleJumper()
    whole.update(p, slack)
    assert whole.log10_martingale == pytest.approx(path[-1], abs=1e-9)
    assert whole.log10_cusum == pytest.approx(path[-1] - min(0.0, *path), abs=1e-9)
    pieces = SimpleJumper()
    for chunk in np.array_split(p, 7):
        pieces.update(chunk, slack)
    assert pieces.log10_martingale == pytest.approx(whole.log10_martingale, abs=1e-9)
    assert pieces.log10_minimum == pytest.approx(whole.log10_minimum, abs=1e-9)
    assert pieces.n_seen == 200


def test_the_slack_bounds_the_conditional_mean_of_conformal_p_values() -> None:
    """E[p | calibration] = (1 + sum_i F(s_i)) / (n + 1) exactly, F the score distribution's
    CDF; the slack must bound its distance from 1/2 for (nearly) every calibration draw."""
    rng = np.random.default_rng(1)
    for n in (19, 100, 1000):
        offsets = np.array([
            abs((1 + norm.cdf(rng.normal(size=n)).sum()) / (n + 1) - 0.5) for _ in range(3000)
        ])
        assert (offsets > calibration_slack(n)).mean() <= CALIBRATION_DELTA
        assert np.quantile(offsets, 0.999) > calibration_slack(n) / 4  # not vacuous
    assert calibration_slack(1000) < calibration_slack(100) < calibration_slack(19)
    np.testing.assert_array_equal(calibration_slacks(np.array([100, 19, 100])),
                                  [calibration_slack(100), calibration_slack(19),
                                   calibration_slack(100)])
    with pytest.raises(ValueError):
        calibration_slack(0)


def _stream(calibration: np.ndarray, rng: np.random.Generator, n: int, shift: float = 0.0
            ) -> np.ndarray:
    return p_values(calibration, rng.normal(shift, 1.0, size=n))


def _peak(p: np.ndarray, slack: float, chunk_rows: int = 500) -> float:
    martingale, peak = SimpleJumper(), 0.0
    for start in range(0, len(p), chunk_rows):
        martingale.update(p[start : start + chunk_rows], slack)
        peak = max(peak, martingale.log10_cusum)
    return peak


def test_it_stays_below_the_alert_on_long_exchangeable_streams_where_a_naive_one_does_not(
) -> None:
    naive_alarms = 0
    peaks = []
    for seed in range(8):
        rng = np.random.default_rng(100 + seed)
        calibration = np.sort(rng.normal(size=200))
        p = _stream(calibration, rng, 60_000)
        peaks.append(_peak(p, calibration_slack(200)))
        naive_alarms += _peak(p, 0.0) > ALERT
    print(f"peak log10 over 60000 exchangeable rows, 8 calibrations of 200: {max(peaks):.3f} "
          f"(without the slack: past {ALERT} for {naive_alarms} of 8)")
    assert max(peaks) < ALERT
    # Without the slack, a finite calibration set alone sets off the alarm on some draws.
    assert naive_alarms >= 2


def test_it_rises_past_the_alert_under_drift_even_after_a_long_calm() -> None:
    rng = np.random.default_rng(7)
    n = 1000
    calibration = np.sort(rng.normal(size=n))
    martingale = SimpleJumper()
    martingale.update(_stream(calibration, rng, 60_000), calibration_slack(n))
    calm = martingale.log10_cusum
    martingale.update(_stream(calibration, rng, 100, shift=2.0), calibration_slack(n))
    print(f"after 60000 calm rows {calm:.3f}; after 100 drifted rows "
          f"{martingale.log10_cusum:.2f}")
    assert calm < ALERT < martingale.log10_cusum
    # A drift towards p near 1 (scores lower than the calibration's) is found too.
    low = SimpleJumper()
    low.update(_stream(calibration, rng, 300, shift=-2.0), calibration_slack(n))
    assert low.log10_cusum > ALERT
