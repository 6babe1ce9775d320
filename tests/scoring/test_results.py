"""The client and the service return one result family and apply one Benjamini-Hochberg."""

from __future__ import annotations

import numpy as np

from latentwatch.client import client
from latentwatch.scoring import conformal, results
from latentwatch.service import core


def test_client_and_service_share_the_result_types_and_bh() -> None:
    assert core.ScoreResult is client.ScoreResult is results.ScoreResult
    assert core.FdrResult is client.FdrResult is results.FdrResult
    assert client.benjamini_hochberg is conformal.benjamini_hochberg
    assert core.benjamini_hochberg is conformal.benjamini_hochberg


def test_concat_keeps_rows_in_order_and_drops_fdr() -> None:
    def part(scores: list[float]) -> results.ScoreResult:
        s = np.array(scores)
        p = np.full_like(s, 0.5)
        return results.ScoreResult(
            "m", "1", "k", 0.1, s, p, 1 - p, p <= 0.1, {"k": s},
            conformal.benjamini_hochberg(p, 0.1),
        )

    whole = results.ScoreResult.concat([part([1.0, 2.0]), part([3.0])])
    np.testing.assert_array_equal(whole.score, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(whole.scores["k"], [1.0, 2.0, 3.0])
    assert len(whole) == 3 and whole.fdr is None
