"""The `score` CLI against a real server over a real channel: one CSV row per input row."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.cli.main import main
from latentwatch.client import LatentwatchClient

VAE = "digits-vae"


@pytest.fixture(scope="module")
def target(model_repo: Path, serve: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with serve(model_repo) as host_port:
        yield host_port


@pytest.fixture(scope="module")
def digits() -> NDArray[np.float32]:
    from latentwatch.data import load_source

    return load_source("digits").X  # (1797, 64), values 0..16


@pytest.fixture()
def client(target: str) -> Iterator[LatentwatchClient]:
    with LatentwatchClient(target, timeout_s=30.0) as c:
        c.wait_ready(30.0)
        yield c


def _read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_score_cli_writes_one_csv_row_per_input(
    client: LatentwatchClient, target: str, digits: NDArray, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    import latentwatch.cli.score

    monkeypatch.setattr(latentwatch.cli.score, "PROGRESS_EVERY_S", 0.0)
    out = tmp_path / "scores.csv"
    argv = ["score", "--server", target, "--model", VAE, "--data", "digits", "--out", str(out),
            "--fdr", "0.1", "--batch-rows", "500"]
    assert main(argv) == 0

    header, rows = _read_csv(out)
    info = client.get_model(VAE)
    others = [k for k in info.score_kinds if k != info.default_score_kind]
    assert header == ["row", "score", *others, "p_value", "outlier_probability", "is_outlier",
                      "fdr_is_outlier"]
    assert len(rows) == digits.shape[0]
    columns = {name: [r[i] for r in rows] for i, name in enumerate(header)}
    assert columns["row"] == [str(i) for i in range(digits.shape[0])]
    expected = client.score(VAE, digits, fdr=0.1)
    np.testing.assert_allclose(np.array(columns["score"], dtype=float), expected.score, rtol=1e-6)
    assert expected.fdr is not None
    np.testing.assert_array_equal(np.array(columns["fdr_is_outlier"], dtype=int),
                                  expected.fdr.is_outlier.astype(int))
    np.testing.assert_array_equal(np.array(columns["is_outlier"], dtype=int),
                                  expected.is_outlier.astype(int))

    captured = capsys.readouterr()
    assert f"scored {digits.shape[0]} rows with {VAE}" in captured.out
    assert "flagged" in captured.out
    assert "scored 500/1797 rows" in captured.err  # progress


def test_score_cli_reports_an_unknown_model(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scores.csv"
    argv = ["score", "--server", target, "--model", "nope", "--data", "digits", "--out", str(out)]
    assert main(argv) == 2
    assert "nope" in capsys.readouterr().err
    assert not out.exists()
