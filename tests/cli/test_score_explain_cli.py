"""`latentwatch score --explain` and `--anomaly-maps` against a real server."""

from __future__ import annotations

import csv
import zlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest

from latentwatch.cli.anomaly_maps import HOT_SD, heat_rgb
from latentwatch.cli.main import main
from latentwatch.client import LatentwatchClient

VAE = "digits-vae"
N_ROWS = 12


@pytest.fixture(scope="module")
def target(model_repo: Path, serve: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with serve(model_repo) as host_port:
        yield host_port


def _png_pixels(data: bytes) -> np.ndarray:
    """(H, W, 3) pixels of an 8-bit RGB PNG of one IDAT chunk, filter 0 (what png_bytes writes)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert data[25] == 2  # RGB
    start = data.index(b"IDAT") + 4
    length = int.from_bytes(data[start - 8 : start - 4], "big")
    raw = np.frombuffer(zlib.decompress(data[start : start + length]), dtype=np.uint8)
    lines = raw.reshape(height, 1 + 3 * width)
    assert (lines[:, 0] == 0).all()
    return lines[:, 1:].reshape(height, width, 3)


def test_explain_adds_top_features_and_maps_show_a_bright_patch(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from latentwatch.data import load_source

    images = load_source("digits").X[:N_ROWS].reshape(-1, 8, 8).copy()
    images[:, 0:2, 6:8] = 16.0  # a bright patch in the top right corner, where digits are dark
    np.save(tmp_path / "images.npy", images)
    out, maps = tmp_path / "scores.csv", tmp_path / "maps"
    assert main(["score", "--server", target, "--model", VAE, "--data",
                 str(tmp_path / "images.npy"), "--out", str(out), "--explain",
                 "--explain-top-k", "3", "--anomaly-maps", str(maps), "--batch-rows", "5"]) == 0
    assert f"wrote {N_ROWS} anomaly maps" in capsys.readouterr().out

    with out.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_ROWS
    assert [k for k in rows[0] if k.startswith("top")] == [
        "top1_feature", "top1_contribution", "top2_feature", "top2_contribution",
        "top3_feature", "top3_contribution"]
    with LatentwatchClient(target, timeout_s=30) as client:
        expected = client.score(VAE, images, explain=True, explain_top_k=3)
    assert expected.explanations is not None
    for row, features, contributions in zip(rows, expected.explanations.features,
                                            expected.explanations.contributions, strict=True):
        assert [row[f"top{r}_feature"] for r in (1, 2, 3)] == [str(f) for f in features]
        np.testing.assert_allclose([float(row[f"top{r}_contribution"]) for r in (1, 2, 3)],
                                   contributions, rtol=1e-6)

    files = sorted(p.name for p in maps.iterdir())
    assert files == [f"row-{i:06d}.png" for i in range(N_ROWS)]
    pixels = _png_pixels((maps / "row-000003.png").read_bytes())
    height = pixels.shape[0]
    heat = pixels[:, pixels.shape[1] - height :]  # the right half: the heat map, square
    cell = height // 8
    brightness = heat.astype(int).sum(axis=-1)[::cell, ::cell]  # one value per pixel
    hottest = np.unravel_index(int(np.argmax(brightness)), brightness.shape)
    assert hottest[0] < 2 and hottest[1] >= 6


def test_heat_scale() -> None:
    assert heat_rgb(np.array([[-3.0, 0.0]])).tolist() == [[[0, 0, 0], [0, 0, 0]]]
    assert heat_rgb(np.array([[HOT_SD, 2 * HOT_SD]])).tolist() == [[[255] * 3, [255] * 3]]
    assert heat_rgb(np.array([[HOT_SD / 3]])).tolist() == [[[255, 0, 0]]]


def test_anomaly_maps_refuse_a_tabular_model(tmp_path: Path) -> None:
    from latentwatch.cli.anomaly_maps import anomaly_maps
    from latentwatch.errors import InvalidInput
    from latentwatch.repository.catalog import ModelInfo

    info = ModelInfo("rows", "1", "vae", (), (), (), (), "", 0, 0.0, 0.0, 0, "", 0, "")
    with pytest.raises(InvalidInput, match="takes rows, not images"):
        anomaly_maps(tmp_path / "maps", info)
    assert not (tmp_path / "maps").exists()
