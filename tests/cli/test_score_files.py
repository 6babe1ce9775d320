"""`latentwatch score` on files as users have them: named columns, big files, other formats."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.cli.main import main
from latentwatch.client import LatentwatchClient

MODEL = "table-vae"
NAMES = [f"f{i}" for i in range(12)]


def _table(n: int, seed: int) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    return (z @ rng.normal(size=(3, 12)) + 0.1 * rng.normal(size=(n, 12))).astype(np.float32)


def _write_csv(path: Path, X: NDArray, names: list[str] | None, delimiter: str = ",",
               ids: list[str] | None = None) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f, delimiter=delimiter)
        if names is not None:
            writer.writerow((["id"] if ids is not None else []) + names)
        for i, row in enumerate(X.tolist()):
            writer.writerow(([ids[i]] if ids is not None else []) + [repr(v) for v in row])
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("named")
    data = _write_csv(root / "train.csv", _table(1500, 0), NAMES)
    run = root / "run"
    assert main(["train", "--data", str(data), "--model", "vae", "--out", str(run),
                 "--epochs", "3", "--seed", "0"]) == 0
    assert main(["export", str(run), "--repo", str(root / "repo"), "--name", MODEL]) == 0
    return root / "repo"


@pytest.fixture(scope="module")
def target(repo: Path, serve: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with serve(repo, max_queue_rows=1024) as host_port:
        yield host_port


@pytest.fixture(scope="module")
def rows() -> NDArray[np.float32]:
    return _table(3000, 1)


@pytest.fixture(scope="module")
def expected(target: str, rows: NDArray) -> NDArray[np.float64]:
    with LatentwatchClient(target) as client:
        client.wait_ready(30.0)
        return client.score(MODEL, rows).score


def _scores(path: Path) -> tuple[list[str], NDArray[np.float64]]:
    with path.open(newline="") as f:
        table = list(csv.reader(f))
    return [r[0] for r in table[1:]], np.array([float(r[1]) for r in table[1:]])


def _score(target: str, data: Path, out: Path, *extra: str) -> int:
    return main(["score", "--server", target, "--model", MODEL, "--data", str(data),
                 "--out", str(out), *extra])


def test_training_keeps_the_feature_names_in_the_manifest(repo: Path) -> None:
    manifest = json.loads(next(repo.glob(f"{MODEL}/*/manifest.json")).read_text())
    assert manifest["input"]["feature_names"] == NAMES


def test_a_file_past_the_server_queue_is_scored_in_order(
    target: str, rows: NDArray, expected: NDArray, tmp_path: Path
) -> None:
    """Before: 'N rows are queued and M more would pass the limit', nothing written."""
    data = _write_csv(tmp_path / "big.csv", rows, NAMES)
    out = tmp_path / "scores.csv"
    assert _score(target, data, out, "--batch-rows", "512") == 0
    first, scores = _scores(out)
    assert first == [str(i) for i in range(3000)]
    np.testing.assert_allclose(scores, expected, rtol=1e-5)


def test_reordered_columns_are_matched_by_name(
    target: str, rows: NDArray, expected: NDArray, tmp_path: Path
) -> None:
    """Before: the reversed file was scored positionally, without a word."""
    data = _write_csv(tmp_path / "reversed.csv", rows[:, ::-1], NAMES[::-1])
    out = tmp_path / "scores.csv"
    assert _score(target, data, out) == 0
    np.testing.assert_allclose(_scores(out)[1], expected, rtol=1e-5)


def test_other_columns_are_refused_with_their_names(
    target: str, rows: NDArray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _write_csv(tmp_path / "renamed.csv", rows[:10], ["age", *NAMES[1:]])
    out = tmp_path / "scores.csv"
    assert _score(target, data, out) == 2
    err = capsys.readouterr().err
    assert "missing 1: 'f0'" in err and "unexpected 1: 'age'" in err
    assert not out.exists()


def test_ids_pass_through_and_columns_select(
    target: str, rows: NDArray, expected: NDArray, tmp_path: Path
) -> None:
    ids = [f"r-{i}" for i in range(100)]
    extra = np.hstack([rows[:100], np.ones((100, 1), np.float32)])
    data = _write_csv(tmp_path / "ids.tsv", extra, [*NAMES, "noise"], "\t", ids)
    out = tmp_path / "scores.csv"
    assert _score(target, data, out, "--id-column", "id", "--columns", ",".join(NAMES)) == 0
    header = out.read_text().splitlines()[0]
    assert header.startswith("id,score,")
    first, scores = _scores(out)
    assert first == ids
    np.testing.assert_allclose(scores, expected[:100], rtol=1e-5)


def test_parquet_arrow_and_npy_give_the_same_scores(
    target: str, rows: NDArray, expected: NDArray, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.feather
    import pyarrow.parquet as pq

    table = pa.table({n: rows[:, i] for i, n in enumerate(NAMES)})
    pq.write_table(table.select(NAMES[::-1]), tmp_path / "rows.parquet", row_group_size=700)
    pyarrow.feather.write_feather(table, tmp_path / "rows.arrow")
    np.save(tmp_path / "rows.npy", rows)
    for name in ("rows.parquet", "rows.arrow", "rows.npy"):
        out = tmp_path / f"{name}.csv"
        assert _score(target, tmp_path / name, out, "--fdr", "0.1") == 0, name
        np.testing.assert_allclose(_scores(out)[1], expected, rtol=1e-5, err_msg=name)


def test_a_semicolon_file_gets_a_short_hint(
    target: str, rows: NDArray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: a 700-character error about one cell, no hint."""
    data = _write_csv(tmp_path / "semi.csv", rows[:20], NAMES, ";")
    assert _score(target, data, tmp_path / "out.csv") == 2
    err = capsys.readouterr().err.strip()
    assert "pass --delimiter ';'" in err and len(err) < 250
    assert _score(target, data, tmp_path / "out.csv", "--delimiter", ";") == 0


def test_an_unreachable_server_fails_fast(
    rows: NDArray, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: 30 s of silence, then DEADLINE_EXCEEDED."""
    data = _write_csv(tmp_path / "few.csv", rows[:5], NAMES)
    start_s = time.monotonic()
    assert _score("127.0.0.1:1", data, tmp_path / "out.csv", "--timeout", "20") == 2
    assert time.monotonic() - start_s < 5.0
    assert "cannot connect to 127.0.0.1:1" in capsys.readouterr().err


def test_bias_report_takes_ids_from_the_data_and_names_features(
    target: str, rows: NDArray, tmp_path: Path
) -> None:
    """Before: no --id-column; the page's tables said x0…x11."""
    ids = [f"r-{i}" for i in range(600)]
    data = _write_csv(tmp_path / "ids.csv", rows[:600, ::-1], NAMES[::-1], ",", ids)
    report, page = tmp_path / "bias.json", tmp_path / "bias.html"
    assert main(["bias-report", "--server", target, "--model", MODEL, "--data", str(data),
                 "--id-column", "id", "--json", str(report), "--html", str(page)]) == 0
    sparsest = json.loads(report.read_text())["sparsest"]
    assert sparsest and all(r["id"] == f"r-{r['position']}" for r in sparsest)
    html = page.read_text()
    assert "<th>f0</th>" in html and "<th>x0</th>" not in html


def test_the_streamed_bh_threshold_is_the_conformal_one() -> None:
    from latentwatch.scoring.conformal import PValueTally, benjamini_hochberg

    rng = np.random.default_rng(0)
    n_calibration = 99  # conformal p-values: (1 + c) / 100
    discrete = (1 + rng.integers(0, n_calibration + 1, size=5000)) / (n_calibration + 1)
    for p in (discrete, np.round(rng.uniform(size=500) ** 3, 3), rng.uniform(size=300),
              np.ones(40), np.full(30, 1e-4)):
        expected = benjamini_hochberg(p, 0.1)
        tally = PValueTally()
        for part in np.array_split(p, 7):  # chunk by chunk, as the CLI adds them
            tally.add(part)
        got = tally.threshold(0.1)
        assert tally.n_rows == len(p)
        if expected.n_flagged == 0:
            assert got is None
        else:
            assert got == expected.p_value_threshold
            assert int((p <= got).sum()) == expected.n_flagged
