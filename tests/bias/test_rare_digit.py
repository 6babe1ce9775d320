"""A real digits VAE trained with one digit kept at 3% of the rows: the report flags that digit.

benchmarks/bias_digits.py measures every digit over several seeds; this is its run of seed 3 for
digit 8 (k-NN: ratio 4.0, p 2e-7; histograms: ratio 0). Digit 8 sits near the middle of every
latent marginal, so the product of marginal histograms never finds it (0 of 10 seeds there); the
k-NN density finds it in 7 of 10.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentwatch.bias.accumulator import BiasAccumulator
from latentwatch.bias.options import BiasOptions
from latentwatch.data import load_source

RARE_DIGIT, SHARE, SEED = 8, 0.03, 3


def _means_of_a_vae_trained_with_a_rare_digit(
    work: Path,
) -> tuple[np.ndarray, np.ndarray]:
    torch = pytest.importorskip("torch")
    from latentwatch.models import load_checkpoint, preprocess
    from latentwatch.models.dbvae import encoder_means
    from latentwatch.models.training import TrainConfig, run_training

    digits = load_source("digits")
    assert digits.y is not None
    others = np.flatnonzero(digits.y != RARE_DIGIT)
    n_rare = int(round(SHARE / (1 - SHARE) * len(others)))  # 50 rows of 1,667
    rare = np.random.default_rng([SEED, RARE_DIGIT]).choice(
        np.flatnonzero(digits.y == RARE_DIGIT), n_rare, replace=False)
    rows = np.sort(np.concatenate([others, rare]))
    X = digits.X[rows] / 16.0  # images in [0, 1], as the digits source scales them
    np.savez(work / "data.npz", X=X.reshape(-1, 8, 8).astype(np.float32))
    run_training(TrainConfig(data=str(work / "data.npz"), model="vae", out=work / "run",
                             seed=SEED, progress=False))
    model, checkpoint = load_checkpoint(work / "run" / "checkpoint.pt")
    mu = encoder_means(model, torch.from_numpy(preprocess(X, checkpoint.preprocessing)))
    return mu, digits.y[rows]


@pytest.mark.slow
def test_a_digit_kept_at_3_percent_is_flagged_where_the_histograms_miss_it(
    tmp_path: Path,
) -> None:
    mu, labels = _means_of_a_vae_trained_with_a_rare_digit(tmp_path)
    found = {}
    for density in ("knn", "histogram"):
        acc = BiasAccumulator(mu.shape[1], max_rows=len(mu))
        acc.add(mu, groups={"digit": [str(v) for v in labels]})
        report = acc.finish(BiasOptions(density=density), None)
        found[density] = next(g for g in report.groups if g.value == str(RARE_DIGIT))
    knn, histogram = found["knn"], found["histogram"]
    assert knn.flagged and knn.representation_ratio > 2.0, knn
    assert not (histogram.flagged and histogram.representation_ratio > 1), histogram
    assert histogram.representation_ratio < 0.8
