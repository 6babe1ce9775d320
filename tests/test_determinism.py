"""Same row, same score: alone, inside one request, or merged with other callers' rows."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from latentwatch.client.client import LatentwatchClient
from latentwatch.data import load_source


def test_a_row_scores_the_same_alone_in_a_batch_and_micro_batched(
    model_repo: Path, serve: Callable[..., AbstractContextManager[str]]
) -> None:
    rows = load_source("digits").X[:48]
    # A long delay makes the micro-batcher merge the concurrent single-row requests.
    with serve(model_repo, max_batch_delay_ms=20.0) as target, LatentwatchClient(target) as client:
        for model in ("digits-vae", "digits-ae"):
            together = client.score(model, rows, kinds=["*"])
            one_row = [(model, row[None]) for row in rows]
            with ThreadPoolExecutor(max_workers=16) as pool:
                alone = list(pool.map(lambda job: client.score(*job, kinds=["*"]), one_row))
            again = client.score(model, rows[::-1], kinds=["*"])
            np.testing.assert_array_equal(np.concatenate([r.score for r in alone]), together.score)
            np.testing.assert_array_equal(again.score[::-1], together.score)
            for kind, values in together.scores.items():
                np.testing.assert_array_equal(
                    np.concatenate([r.scores[kind] for r in alone]), values, err_msg=kind
                )
            p_alone = np.concatenate([r.p_value for r in alone])
            np.testing.assert_array_equal(p_alone, together.p_value)
