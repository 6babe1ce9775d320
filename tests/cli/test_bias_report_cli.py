"""`latentwatch bias-report` on a real server: JSON, HTML, and the page in headless Chromium."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from latentwatch.cli.bias_report import examples_for_display, read_groups
from latentwatch.cli.main import main
from latentwatch.client.client import LatentwatchClient
from latentwatch.data import load_source
from latentwatch.errors import DataError
from latentwatch.repository.manifest import Manifest

VAE = "digits-vae"
WINDOW = (1280, 2400)


@dataclass(frozen=True)
class CliRun:
    target: str
    json_path: Path
    html_path: Path
    stdout: str
    labels: list[int]


@pytest.fixture(scope="module")
def target(model_repo: Path, serve: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with serve(model_repo) as host_port:
        yield host_port


def _write_groups(path: Path, columns: dict[str, list[object]]) -> Path:
    names = list(columns)
    lines = [",".join(names)]
    lines += [",".join(str(v) for v in row) for row in zip(*columns.values(), strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def cli_run(target: str, tmp_path_factory: pytest.TempPathFactory) -> CliRun:
    """One full run: every digit, a `label` group column, no ids (so ids are positions)."""
    out = tmp_path_factory.mktemp("bias_cli")
    y = load_source("digits").y
    assert y is not None
    labels = [int(v) for v in y]
    groups = _write_groups(out / "groups.csv", {"label": labels})
    # capsys is per test; this fixture is per module, so stdout is captured here.
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        rc = main(["bias-report", "--server", target, "--model", VAE, "--data", "digits",
                   "--groups", str(groups), "--html", str(out / "report.html"),
                   "--json", str(out / "report.json")])
    assert rc == 0
    return CliRun(target, out / "report.json", out / "report.html", stdout.getvalue(), labels)


def test_json_holds_every_row_groups_and_drift(cli_run: CliRun) -> None:
    document = json.loads(cli_run.json_path.read_text())
    n = len(cli_run.labels)

    assert document["model"]["name"] == VAE and document["model"]["version"]
    assert document["data"] == "digits" and document["n_rows"] == n
    assert [row["id"] for row in document["rows"]] == list(range(n))
    weights = np.array([row["weight"] for row in document["rows"]])
    assert np.isfinite(weights).all() and weights.mean() == pytest.approx(1.0)
    assert all(isinstance(row["log_density"], float) for row in document["rows"])
    ess = document["effective_sample_size"]
    assert 1.0 <= ess <= n
    assert ess == pytest.approx(weights.sum() ** 2 / (weights**2).sum(), rel=1e-6)
    assert len(document["sparsest"]) == document["top_k"] == 20
    sparsest = document["sparsest"][0]
    assert sparsest["id"] == sparsest["position"]
    assert sparsest["log_density"] == min(row["log_density"] for row in document["rows"])

    groups = document["groups"]
    assert sorted(g["value"] for g in groups) == [str(d) for d in range(10)]
    for group in groups:
        assert group["column"] == "label"
        assert group["n_rows"] == cli_run.labels.count(int(group["value"]))
        assert {"sparse_share", "representation_ratio", "flagged", "ratio_low", "ratio_high",
                "p_value", "significant", "n_sparse_rows", "even_share", "share_ratio",
                "share_ratio_low", "share_ratio_high", "share_p_value", "share_significant",
                "share_flagged"} <= set(group)
        assert group["even_share"] == 0.1 and not group["share_flagged"]  # ~180 rows a digit
        assert group["flagged"] == (group["significant"] and
                                    not 0.8 <= group["representation_ratio"] <= 1.25)
        assert group["ratio_low"] <= group["representation_ratio"] <= group["ratio_high"]
    assert sum(g["sparse_share"] for g in groups) == pytest.approx(1.0)
    assert document["density"] == "knn"  # the server's default, echoed
    assert "(knn density, max weighting, 10 bins)" in cli_run.stdout

    drift = document["drift"]
    # A model exported before reference.npz existed has no drift; accept both, check the shape.
    if drift is not None:
        assert drift["overall"] >= 0 and drift["level"] in {"none", "moderate", "significant"}
        assert len(drift["per_dimension"]) == document["latent_dim"]
        assert all(d["dimension"] is not None for d in document["dimensions"])
        assert document["dimensions"][0]["reference"] is not None
    assert len(document["dimensions"]) == document["latent_dim"]
    assert document["summary"] and all(isinstance(s, str) for s in document["summary"])
    for sentence in document["summary"]:
        assert sentence in cli_run.stdout


def test_html_is_self_contained_with_decoded_images(cli_run: CliRun) -> None:
    page = cli_run.html_path.read_text()
    for external in ("http://", "https://", 'src="//', "<script"):
        assert external not in page
    for heading in ("Summary", "Key figures", "Groups", "Resampling weights",
                    "Latent dimensions", "Examples"):
        assert f"<h2>{heading}</h2>" in page
    assert "label=0" in page
    # The server decodes 8 sparsest and 8 densest rows by default: input and decoded of each.
    assert page.count("data:image/png;base64,") == 2 * 2 * 8


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


def test_html_renders_in_headless_chromium(cli_run: CliRun, tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (looked on PATH and at /usr/bin/chromium)")
    shot = tmp_path / "report.png"
    subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}",
         cli_run.html_path.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    assert struct.unpack(">II", data[16:24]) == WINDOW
    image_module = pytest.importorskip("PIL.Image", reason="Pillow reads the screenshot's pixels")
    with image_module.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.int64)  # (H, W, 3)
    assert pixels.shape == (WINDOW[1], WINDOW[0], 3)
    assert pixels.std() > 20  # not one flat colour
    colours = np.unique(pixels.reshape(-1, 3) // 16, axis=0)
    assert len(colours) >= 12  # text, charts, cards: many distinct colours
    blue = np.all(np.abs(pixels - [0x25, 0x63, 0xEB]) < 24, axis=-1)
    assert blue.mean() > 0.005  # the charts' bars and lines are drawn


def test_ids_come_from_the_groups_file_and_options_reach_the_report(
    cli_run: CliRun, tmp_path: Path
) -> None:
    n = len(cli_run.labels)
    ids = [f"digit-{i:04d}" for i in range(n)]
    groups = _write_groups(tmp_path / "groups.csv",
                           {"id": ids, "parity": [d % 2 for d in cli_run.labels]})
    out = tmp_path / "report.json"
    rc = main(["bias-report", "--server", cli_run.target, "--model", VAE, "--data", "digits",
               "--groups", str(groups), "--json", str(out), "--max-rows", "300", "--mode", "max",
               "--bins", "8", "--top-k", "5", "--chunk-rows", "64",
               "--significance-level", "0.01", "--density", "histogram"])
    assert rc == 0
    document = json.loads(out.read_text())
    assert document["significance_level"] == 0.01
    assert document["density"] == "histogram"

    assert document["n_rows"] == 300  # the groups file's 1,797 lines are cut like the data
    assert [row["id"] for row in document["rows"]] == ids[:300]
    assert (document["mode"], document["bins"], document["top_k"]) == ("max", 8, 5)
    assert [row["id"] for row in document["sparsest"]] == [
        ids[row["position"]] for row in document["sparsest"]]
    assert {g["column"] for g in document["groups"]} == {"parity"}
    assert all(len(d["counts"]) == 8 for d in document["dimensions"])


def test_examples_are_the_servers_decoded_rows_in_the_data_units(cli_run: CliRun) -> None:
    with LatentwatchClient(cli_run.target) as client:
        dataset = load_source("digits", max_rows=200)
        report = client.bias_report(VAE, dataset.X, top_k=4, n_decoded=3)
        info = client.get_model(VAE)
    # The server inverts the preprocessing (x / 16 for digits) and shapes the rows as images.
    assert report.decoded_sparsest is not None and report.decoded_densest is not None
    assert report.decoded_sparsest.shape == (3, 1, 8, 8)
    assert np.all((report.decoded_sparsest >= 0) & (report.decoded_sparsest <= 16))
    assert report.decoded_sparsest.max() > 1  # not the Bernoulli means in [0, 1]
    # Seen as a table model, the rows are shown exactly as they came.
    table = replace(info, image_shape=())
    examples = examples_for_display(report, dataset, table)

    assert examples.image_shape is None
    np.testing.assert_array_equal(examples.sparsest.positions, report.sparsest[:3])
    np.testing.assert_allclose(examples.sparsest.inputs, dataset.X[report.sparsest[:3]])
    assert examples.sparsest.decoded is not None
    np.testing.assert_array_equal(examples.sparsest.decoded, report.decoded_sparsest)
    # As images: drawn on the pixel scale, the intensities the model sees (as before the move).
    images = examples_for_display(report, dataset, info)
    assert images.image_shape == (1, 8, 8) and images.pixel_max == 16.0
    assert images.densest.inputs is not None and images.densest.decoded is not None
    preprocessing = Manifest.model_validate_json(info.manifest_json).input.preprocessing
    np.testing.assert_allclose(images.densest.inputs / images.pixel_max,
                               preprocessing.apply(dataset.X[report.densest[:3]]), rtol=1e-6)
    drawn = images.densest.decoded / images.pixel_max
    assert drawn.shape == (3, 1, 8, 8) and np.all((drawn >= 0) & (drawn <= 1))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "give --html FILE, --json FILE, or both"),
        (["--json", "x.json", "--groups", "short.csv"], "short.csv: 2 rows, but the data has"),
    ],
)
def test_bad_arguments_fail_before_any_server_is_asked(
    extra: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    _write_groups(tmp_path / "short.csv", {"label": [1, 2]})
    # Port 9 (discard) is never a latentwatch server: a test that reached it would hang or fail.
    rc = main(["bias-report", "--server", "127.0.0.1:9", "--model", VAE, "--data", "digits",
               *extra])
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bins", "1"], "bins: expected 2 to"),
        (["--mode", "median"], "mode: expected one of paper, max"),
        (["--top-k", "3", "--n-decoded", "4"], "n_decoded: expected 0 to top_k (3) rows, got 4"),
        (["--n-decoded", "-1"], "n_decoded: expected 0 to top_k (20) rows, got -1"),
        (["--significance-level", "0"], "significance_level: expected a level in (0, 1)"),
        (["--density", "kde"], "density: expected one of knn, histogram, got 'kde'"),
    ],
)
def test_bad_options_fail_with_the_servers_message(
    extra: list[str], message: str, cli_run: CliRun, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    # The CLI sends the options as given; the server validates them once (INVALID_ARGUMENT).
    monkeypatch.chdir(tmp_path)
    rc = main(["bias-report", "--server", cli_run.target, "--model", VAE, "--data", "digits",
               "--max-rows", "50", "--json", "x.json", *extra])
    assert rc == 2
    err = capsys.readouterr().err
    assert "latentwatch bias-report: error: " in err and message in err
    assert not (tmp_path / "x.json").exists()


def test_read_groups_checks_the_file(tmp_path: Path) -> None:
    path = _write_groups(tmp_path / "g.csv", {"id": ["a", "b", "c"], "site": ["x", "y", "x"]})
    assert read_groups(path, 3, cut=False) == (["a", "b", "c"], {"site": ["x", "y", "x"]})
    assert read_groups(path, 2, cut=True) == (["a", "b"], {"site": ["x", "y"]})
    with pytest.raises(DataError, match="3 rows, but the data has 2"):
        read_groups(path, 2, cut=False)
    only_ids = _write_groups(tmp_path / "ids.csv", {"id": ["a", "b"]})
    assert read_groups(only_ids, 2, cut=False) == (["a", "b"], None)

    duplicate = _write_groups(tmp_path / "dup.csv", {"id": ["a", "a"], "site": ["x", "y"]})
    with pytest.raises(DataError, match="id 'a' .*appears twice"):
        read_groups(duplicate, 2, cut=False)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("id,site\na,x\nb\n")
    with pytest.raises(DataError, match="line 3 has 1 columns, the header 2"):
        read_groups(ragged, 2, cut=False)
    unnamed = tmp_path / "unnamed.csv"
    unnamed.write_text("id,\na,x\n")
    with pytest.raises(DataError, match="empty column name"):
        read_groups(unnamed, 1, cut=False)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_groups(empty, 1, cut=False)
