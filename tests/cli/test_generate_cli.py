"""`latentwatch generate`, `traverse` and `translate` against a real server: PNG grids that decode
to the expected size and pixels, .npy arrays, and one-line errors."""

from __future__ import annotations

import json
import struct
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from gen_builder import HIGH, build_generative_repo  # noqa: E402
from gen_builder import reference_generate as gen_reference  # noqa: E402
from repo_builder import build_version  # noqa: E402
from server_harness import ServerThread, server_settings  # noqa: E402

from latentwatch.cli.image_grid import FONT_SCALE, GAP_PX, GLYPH_W  # noqa: E402
from latentwatch.cli.main import main  # noqa: E402

TILE_PX = 32  # 8x8 tiles scaled by 4


def decode_png(data: bytes) -> NDArray[np.uint8]:
    """The pixels of a PNG png_bytes wrote: 8-bit grey or RGB, one IDAT, filter 0 rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks, at = {}, 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at : at + 4])
        tag = data[at + 4 : at + 8]
        chunks[tag] = data[at + 8 : at + 8 + length]
        at += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert depth == 8 and b"IEND" in chunks
    channels = 3 if colour == 2 else 1
    raw = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8)
    rows = raw.reshape(height, 1 + width * channels)
    assert (rows[:, 0] == 0).all()
    return rows[:, 1:].reshape(height, width, channels).squeeze(-1 if channels == 1 else ())


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    repo = build_generative_repo(tmp_path_factory.mktemp("gen_cli"))
    build_version(repo, "img-vae", kind="vae", image_shape=[1, 8, 8], with_decoder=True)
    server = ServerThread(server_settings(repo))
    try:
        yield f"127.0.0.1:{server.running.port}"
    finally:
        server.close()


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gen_cli_data") / "images.npy"
    rng = np.random.default_rng(5)
    np.save(path, rng.integers(0, 17, size=(10, 8, 8)).astype(np.float32))
    return path


def test_generate_writes_a_grid_whose_pixels_are_the_samples(target: str, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    png, npy = tmp_path / "grid.png", tmp_path / "out.npy"
    assert main(["generate", "--server", target, "--model", "img-gan", "-n", "6", "--seed", "3",
                 "--png", str(png), "--npy", str(npy)]) == 0
    samples = np.load(npy, allow_pickle=False)
    assert samples.shape == (6, 1, 8, 8)
    pixels = decode_png(png.read_bytes())
    # 3 columns (about sqrt(6)), 2 rows, no labels: a gap around every tile.
    assert pixels.shape == (GAP_PX + 2 * (TILE_PX + GAP_PX), GAP_PX + 3 * (TILE_PX + GAP_PX))
    tile = pixels[GAP_PX : GAP_PX + TILE_PX : 4, GAP_PX : GAP_PX + TILE_PX : 4]  # sample 0
    np.testing.assert_array_equal(tile, np.round(samples[0, 0] / HIGH * 255))
    assert "seed 3" in capsys.readouterr().out


def test_generate_conditional_grid_has_a_labelled_row_per_class(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png, npy = tmp_path / "grid.png", tmp_path / "out.npy"
    assert main(["generate", "--server", target, "--model", "img-cgan", "-n", "6", "--seed", "1",
                 "--png", str(png), "--npy", str(npy)]) == 0
    pixels = decode_png(png.read_bytes())
    left = GLYPH_W * FONT_SCALE + 2 * GAP_PX  # one digit of row label
    assert pixels.shape == (GAP_PX + 3 * (TILE_PX + GAP_PX), left + 2 * (TILE_PX + GAP_PX))
    assert (pixels[:, :left] == 0).any()  # the labels are inked
    assert "rows: 0 = zero, 1 = one, 2 = two" in capsys.readouterr().out
    samples = np.load(npy)
    z = np.random.default_rng(1).standard_normal((6, 4))  # the server's draws for seed 1
    np.testing.assert_allclose(samples, gen_reference(z, np.array([0, 0, 1, 1, 2, 2]),
                                                      [1, 8, 8], 3), atol=1e-3)


def test_generate_from_a_bias_report_samples_around_its_sparsest_rows(
    target: str, tmp_path: Path, images: Path
) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"model": {"name": "img-vae", "version": "1"},
                                  "sparsest": [{"position": 3}, {"position": 0}]}))
    png, npy = tmp_path / "grid.png", tmp_path / "out.npy"
    assert main(["generate", "--server", target, "--from-bias-report", str(report), "--data",
                 str(images), "-n", "8", "--spread", "0.01", "--png", str(png), "--npy",
                 str(npy)]) == 0
    samples = np.load(npy)
    assert samples.shape == (8, 1, 8, 8)
    # Tiny spread: samples i and i + 2 come from the same row's latent mean.
    np.testing.assert_allclose(samples[0], samples[2], atol=0.5)
    assert not np.allclose(samples[0], samples[1], atol=0.5)
    assert decode_png(png.read_bytes()).shape[0] == GAP_PX + 2 * (TILE_PX + GAP_PX)


def test_a_bias_report_carries_the_latent_means_generate_samples_around(
    target: str, tmp_path: Path, images: Path
) -> None:
    report = tmp_path / "report.json"
    assert main(["bias-report", "--server", target, "--model", "img-vae", "--data", str(images),
                 "--top-k", "3", "--json", str(report)]) == 0
    sparsest = json.loads(report.read_text())["sparsest"]
    assert [len(entry["latent_mu"]) for entry in sparsest] == [3, 3, 3]
    runs = {}
    for how, extra in (("carried", []), ("encoded again", ["--data", str(images)])):
        npy = tmp_path / f"{how}.npy"
        # Without latent means in the report, --data would be needed: "carried" proves it is not.
        report_file = report if how == "carried" else tmp_path / "old.json"
        if how != "carried":
            old = json.loads(report.read_text())
            for entry in old["sparsest"]:
                del entry["latent_mu"]
            report_file.write_text(json.dumps(old))
        assert main(["generate", "--server", target, "--from-bias-report", str(report_file),
                     *extra, "-n", "6", "--seed", "4", "--png", str(tmp_path / "g.png"),
                     "--npy", str(npy)]) == 0
        runs[how] = np.load(npy)
    np.testing.assert_allclose(runs["carried"], runs["encoded again"], atol=1e-4)


def test_an_old_report_without_latent_means_needs_the_data(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"model": {"name": "img-vae", "version": "1"},
                                  "sparsest": [{"position": 3}]}))
    assert main(["generate", "--server", target, "--from-bias-report", str(report),
                 "--png", str(tmp_path / "g.png")]) != 0
    assert "carries no latent means" in capsys.readouterr().err


def test_traverse_and_translate_write_grids(
    target: str, tmp_path: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = tmp_path / "sweep.png"
    assert main(["traverse", "--server", target, "--model", "img-gan", "--latent", "0,0,0,0",
                 "--steps", "4", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    # The threshold is a tenth of the strongest dimension's change, 0.114.
    assert "4 dimensions x 4 steps" in out and "inactive (change < 0.0114): 3" in out
    assert decode_png(png.read_bytes()).shape[0] > 4 * TILE_PX  # column labels on top
    assert main(["traverse", "--server", target, "--model", "img-vae", "--data", str(images),
                 "--row", "2", "--dimensions", "0,2", "--png", str(png)]) == 0
    assert "2 dimensions x 7 steps" in capsys.readouterr().out
    npy = tmp_path / "translated.npy"
    assert main(["translate", "--server", target, "--model", "img-p2p", "--data", str(images),
                 "--max-rows", "4", "--png", str(png), "--npy", str(npy)]) == 0
    sent = np.load(images)[:4].reshape(4, 1, 8, 8)
    np.testing.assert_allclose(np.load(npy), HIGH - sent, atol=1e-5)
    assert decode_png(png.read_bytes()).shape[0] > 4 * TILE_PX


def test_bad_requests_are_one_line_errors(target: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "x.png"
    assert main(["generate", "--server", target, "--model", "img-gan", "--label", "1",
                 "--png", str(png)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("latentwatch generate: error: labels: this model is not class-")
    assert main(["generate", "--server", target, "--model", "img-gan", "-n", "5000",
                 "--png", str(png)]) == 2
    assert "n: 5000 is not in 1..4096" in capsys.readouterr().err
    assert not png.exists()
