"""explain.npz: per-feature NLL statistics of the calibration rows, as PyTorch computes them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch

from latentwatch.export.run_inputs import load_run
from latentwatch.repository.manifest import Manifest
from latentwatch.repository.reader import read_version
from latentwatch.scoring.explain import STD_FLOOR_SHARE

if TYPE_CHECKING:
    from conftest import Exported


@pytest.mark.parametrize("kind", ["vae", "ae", "beta-vae"])
def test_explain_statistics_match_the_torch_model(
    exported: dict[str, Exported], kind: str
) -> None:
    version_dir, run_dir = exported[kind].version_dir, exported[kind].run_dir
    inputs = load_run(run_dir)
    rows = inputs.calibration_rows
    x = torch.from_numpy(inputs.preprocessing.apply(rows))
    model = inputs.model.eval()
    with torch.no_grad():
        mu, _ = model.encode(x)
        mean = model.reconstruct(model.decode(mu)).double().numpy()
    xs = x.double().numpy()
    if inputs.decoder == "bernoulli":  # the likelihood of each pixel, then its log
        p = np.clip(mean, 1e-6, 1 - 1e-6)
        nll = -np.log(p**xs * (1 - p) ** (1 - xs))
    else:
        nll = 0.5 * (xs - mean) ** 2
    sd = nll.std(axis=0, ddof=1)
    floor = STD_FLOOR_SHARE * sd.mean()

    stats = read_version(f"digits-{kind}", version_dir.name, version_dir).explain
    assert stats is not None
    assert stats.statistic == ("bernoulli_nll" if inputs.decoder == "bernoulli"
                               else "gaussian_nll")
    np.testing.assert_allclose(stats.mean, nll.mean(axis=0), rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(stats.std, np.maximum(sd, floor), rtol=1e-3, atol=1e-5)
    assert "explain.npz" in Manifest.read(version_dir).sha256
