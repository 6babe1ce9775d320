"""Batch scoring and bias reports on a real local Ray cluster (ray.init(num_cpus=2), once here).

Every comparison is against the real thing: the offline scorer on the same rows, Score and
BiasReport of a real server over a real channel, on the exported digits models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

ray = pytest.importorskip("ray", reason="ray is not installed (pip install '.[ray]')")
pytest.importorskip("pyarrow", reason="Ray Data needs pyarrow (the tables extra)")

from latentwatch.batch.ray_bias import bias_report_dataset  # noqa: E402
from latentwatch.batch.ray_scoring import fdr_threshold, score_dataset  # noqa: E402
from latentwatch.bias.accumulator import BiasReport  # noqa: E402
from latentwatch.client import LatentwatchClient  # noqa: E402
from latentwatch.data.sources import load_source  # noqa: E402
from latentwatch.errors import InvalidInput  # noqa: E402
from latentwatch.scoring.conformal import benjamini_hochberg  # noqa: E402
from latentwatch.service.offline import OfflineScorer  # noqa: E402

VAE = "digits-vae"
pytestmark = pytest.mark.timeout(180)  # a starved Ray pipeline waits forever; fail instead
Serve = Callable[..., AbstractContextManager[str]]


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def digits() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    data = load_source("digits")
    assert data.y is not None
    return data.X, data.y


def latest(repo: Path, model: str) -> Path:
    return max((p for p in (repo / model).iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def numpy_blocks(x: NDArray, blocks: int) -> ray.data.Dataset:
    """Rows as a tensor column `data` of `blocks` numpy blocks, with their positions `row`."""
    return ray.data.range(len(x), override_num_blocks=blocks).map_batches(
        lambda b: {"row": b["id"], "data": x[b["id"]]}, batch_format="numpy"
    )


def by_row(ds: ray.data.Dataset, key: str) -> dict[str, NDArray]:
    """Every column of a dataset, rows sorted by `key`."""
    rows = ds.to_pandas().sort_values(key)
    return {c: rows[c].to_numpy() for c in rows.columns}


def test_offline_scores_equal_the_offline_scorer(model_repo: Path, digits: tuple) -> None:
    x, _ = digits
    scorer = OfflineScorer.from_version_dir(latest(model_repo, VAE))
    expected = scorer.score(x)
    kind = scorer.default_score_kind
    p = scorer.p_values({kind: expected[kind]})[kind]
    alpha = 0.05
    scored = score_dataset(numpy_blocks(x, 4), model_repo, VAE, features="data", kinds=["kl"],
                           alpha=alpha, workers=2, worker_cpus=0.5, batch_rows=300)
    got = by_row(scored, "row")
    assert np.array_equal(got["row"], np.arange(len(x)))
    np.testing.assert_array_equal(got["score"], expected[kind])
    np.testing.assert_array_equal(got["kl"], expected["kl"])
    np.testing.assert_array_equal(got["p_value"], p)
    np.testing.assert_array_equal(got["outlier_probability"], 1.0 - p)
    np.testing.assert_array_equal(got["is_outlier"], p <= alpha)
    assert 0 < got["is_outlier"].sum() < len(x)  # the comparison decides something


def test_scores_through_a_service_equal_score(
    model_repo: Path, digits: tuple, serve: Serve
) -> None:
    x, _ = digits
    x = x[:600]
    with serve(model_repo) as target, LatentwatchClient(target) as client:
        expected = client.score(VAE, x, kinds=["recon_error"], alpha=0.1)
        got = by_row(score_dataset(numpy_blocks(x, 3), None, VAE, server=target,
                                   features="data", kinds=["recon_error"], alpha=0.1,
                                   workers=2, batch_rows=128), "row")
    np.testing.assert_array_equal(got["score"], expected.score)
    np.testing.assert_array_equal(got["recon_error"], expected.scores["recon_error"])
    np.testing.assert_array_equal(got["p_value"], expected.p_value)
    np.testing.assert_array_equal(got["is_outlier"], expected.is_outlier)


def test_parquet_with_an_id_column_keeps_ids_and_columns(
    model_repo: Path, digits: tuple, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = digits
    names = [f"px{i}" for i in range(x.shape[1])]
    ids = np.array([f"scan-{i:05d}" for i in range(len(x))])
    for part, rows in enumerate(np.array_split(np.arange(len(x)), 3)):
        features = {n: x[rows, j] for j, n in enumerate(names)}
        columns = {"id": ids[rows], "label": y[rows], **features}
        pq.write_table(pa.table(columns), tmp_path / f"part-{part}.parquet")
    ds = ray.data.read_parquet(str(tmp_path))
    scored = by_row(score_dataset(ds, model_repo, VAE, features=names, workers=1), "id")
    order = np.argsort(ids)
    assert list(scored["id"]) == list(ids[order])
    np.testing.assert_array_equal(scored["label"], y[order])
    np.testing.assert_array_equal(scored["px10"], x[order, 10])
    scorer = OfflineScorer.from_version_dir(latest(model_repo, VAE))
    expected = scorer.score(x)[scorer.default_score_kind]
    np.testing.assert_array_equal(scored["score"], expected[order])
    with pytest.raises(InvalidInput, match="no column 'nope'"):
        score_dataset(ds, model_repo, VAE, features=[*names[:-1], "nope"])
    with pytest.raises(InvalidInput, match="name the feature columns"):
        score_dataset(ds, model_repo, VAE)


def test_fdr_is_one_benjamini_hochberg_over_the_dataset(model_repo: Path, digits: tuple) -> None:
    x, _ = digits
    # A third of the rows uniform pixel noise: BH has something to find.
    noise = np.random.default_rng(0).integers(0, 17, size=(200, x.shape[1]))
    x = np.concatenate([x[:400], noise]).astype(np.float32)
    ds = numpy_blocks(x, 4)
    scored = score_dataset(ds, model_repo, VAE, features="data", fdr=0.1, workers=2,
                           worker_cpus=0.5, batch_rows=100)
    got = by_row(scored, "row")
    expected = benjamini_hochberg(got["p_value"], 0.1)
    assert 0 < expected.n_flagged < len(x)
    np.testing.assert_array_equal(got["fdr_outlier"], expected.is_outlier)
    assert fdr_threshold(scored, 0.1) == expected.p_value_threshold


def test_bias_report_equals_the_rpc(
    model_repo: Path, digits: tuple, serve: Serve, tmp_path: Path
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x, y = digits
    ids = [f"row-{i}" for i in range(len(x))]
    site = np.where(np.arange(len(x)) % 3 == 0, "north", "south")
    labels = {"label": y.astype(str), "site": site}
    for part, rows in enumerate(np.array_split(np.arange(len(x)), 5)):
        table = pa.table({"id": np.array(ids)[rows], "label": y[rows], "site": site[rows],
                          "data": pa.FixedSizeListArray.from_arrays(x[rows].ravel(), x.shape[1])})
        pq.write_table(table, tmp_path / f"part-{part}.parquet")
    ds = ray.data.read_parquet(str(tmp_path)).repartition(7)  # blocks unlike the RPC's chunks
    with serve(model_repo) as target, LatentwatchClient(target) as client:
        expected = client.bias_report(VAE, x, ids=ids, groups=labels, chunk_rows=500)
    got = bias_report_dataset(ds, model_repo, VAE, features="data", id_column="id",
                              group_columns=["label", "site"], workers=2, worker_cpus=0.5,
                              batch_rows=256)
    assert_same_report(got, expected)


def assert_same_report(got: BiasReport, expected: BiasReport) -> None:
    assert got.n_rows == expected.n_rows and got.ids == expected.ids
    assert got.options == expected.options
    # Per-row values from the same means: equal to the last bit.
    np.testing.assert_array_equal(got.log_density, expected.log_density)
    np.testing.assert_array_equal(got.weight, expected.weight)
    np.testing.assert_array_equal(got.sparsest, expected.sparsest)
    np.testing.assert_array_equal(got.densest, expected.densest)
    for mine, theirs in zip(got.histograms, expected.histograms, strict=True):
        np.testing.assert_array_equal(mine.counts, theirs.counts)
        np.testing.assert_array_equal(mine.edges, theirs.edges)
    assert got.effective_sample_size == expected.effective_sample_size
    assert got.sparsest_latent is not None and expected.sparsest_latent is not None
    np.testing.assert_array_equal(got.sparsest_latent, expected.sparsest_latent)
    assert got.decoded_sparsest is not None and expected.decoded_sparsest is not None
    np.testing.assert_allclose(got.decoded_sparsest, expected.decoded_sparsest, rtol=1e-6)
    assert [(g.column, g.value, g.n_rows, g.n_sparse_rows, g.flagged) for g in got.groups] == [
        (g.column, g.value, g.n_rows, g.n_sparse_rows, g.flagged) for g in expected.groups
    ]
    for mine, theirs in zip(got.groups, expected.groups, strict=True):
        assert math.isclose(mine.mean_weight, theirs.mean_weight, rel_tol=1e-12)
        assert math.isclose(mine.p_value, theirs.p_value, rel_tol=1e-12)
    # Sums over rows: the same up to the order of float64 additions (blocks vs chunks).
    np.testing.assert_allclose(got.kl_to_prior, expected.kl_to_prior, rtol=1e-9)
    assert (got.drift is None) == (expected.drift is None)
    if got.drift is not None and expected.drift is not None:
        np.testing.assert_array_equal(got.drift.psi, expected.drift.psi)
        np.testing.assert_allclose(got.drift.mean_shift, expected.drift.mean_shift,
                                   rtol=1e-9, atol=1e-12)
        assert math.isclose(got.drift.gaussian_kl, expected.drift.gaussian_kl, rel_tol=1e-9)


def test_a_bad_row_fails_as_invalid_input(model_repo: Path, digits: tuple) -> None:
    from latentwatch.batch.running import running

    x, _ = digits
    x = x[:200].copy()
    x[150, 3] = np.nan
    with pytest.raises(InvalidInput, match="NaN, the first in row"):
        bias_report_dataset(numpy_blocks(x, 2), model_repo, VAE, features="data",
                            worker_cpus=0.5)
    scored = score_dataset(numpy_blocks(x, 2), model_repo, VAE, features="data",
                           worker_cpus=0.5)
    with pytest.raises(InvalidInput, match="NaN, the first in row"), running(scored):
        scored.materialize()
    assert not scored.context.execution_options.preserve_order  # the caller's, restored
