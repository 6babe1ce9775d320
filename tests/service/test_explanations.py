"""Explanations over a real server: planted anomalies rank first (tabular), a planted bright
patch holds the hottest pixel (digits), and versions without explain.npz refuse clearly."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from server_harness import ServerThread, server_settings

from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import FailedPrecondition, InvalidInput
from latentwatch.export.exporter import export_run
from latentwatch.models.training import TrainConfig, train

log = logging.getLogger(__name__)

N_FEATURES = 12
RANK = 3
SHIFT_SD = 6.0  # planted shift, in standard deviations of the feature on normal rows
N_PLANTED_ROWS = 150
TOP3_FLOOR = 0.9  # the target for the top-3 hit rate


def low_rank_rows(n: int, seed: int) -> np.ndarray:
    """Rows near a RANK-dimensional plane in N_FEATURES dimensions, offset and scaled."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(RANK, N_FEATURES))
    rows = rng.normal(size=(n, RANK)) @ mixing + 0.1 * rng.normal(size=(n, N_FEATURES))
    return (2.0 * rows + 5.0).astype(np.float32)


def planted(normal: np.ndarray, seed: int) -> tuple[np.ndarray, list[list[int]]]:
    """Each row with 1, 2 or 3 random features shifted by SHIFT_SD standard deviations."""
    rng = np.random.default_rng(seed)
    sd = normal.std(axis=0)
    rows = normal.copy()
    chosen = []
    for row in rows:
        features = rng.choice(N_FEATURES, size=int(rng.integers(1, 4)), replace=False)
        row[features] += rng.choice([-1.0, 1.0], size=features.size) * SHIFT_SD * sd[features]
        chosen.append(sorted(features.tolist()))
    return rows, chosen


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tabular VAE (named columns) and a digits VAE, trained small and exported."""
    root = tmp_path_factory.mktemp("explain")
    names = ",".join(f"f{i}" for i in range(N_FEATURES))
    np.savetxt(root / "rows.csv", low_rank_rows(1500, seed=0), delimiter=",", header=names,
               comments="")
    repo = root / "repo"
    tabular = train(TrainConfig(data=str(root / "rows.csv"), model="vae", out=root / "tab",
                                latent_dim=RANK, epochs=40, seed=0, progress=False))
    export_run(tabular, repo, "rows")
    digits = train(TrainConfig(data="digits", model="vae", out=root / "digits", epochs=5,
                               seed=0, progress=False))
    export_run(digits, repo, "digits")
    return repo


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[LatentwatchClient]:
    server = ServerThread(server_settings(repo))
    with LatentwatchClient(f"127.0.0.1:{server.running.port}", timeout_s=30) as c:
        c.wait_ready(60)
        yield c
    server.close()


def test_planted_features_rank_first(client: LatentwatchClient) -> None:
    rows, chosen = planted(low_rank_rows(N_PLANTED_ROWS, seed=1), seed=2)
    result = client.score("rows", rows, explain=True, explain_top_k=3)
    explained = result.explanations
    assert explained is not None and explained.features.shape == (N_PLANTED_ROWS, 3)
    assert explained.names[0] == tuple(f"f{i}" for i in explained.features[0])
    top = explained.features.tolist()
    hits = [len(set(t) & set(c)) / len(c) for t, c in zip(top, chosen, strict=True)]
    first = [sorted(t[: len(c)]) == c for t, c in zip(top, chosen, strict=True)]
    hit_rate, first_rate = float(np.mean(hits)), float(np.mean(first))
    log.warning("planted features: top-3 hit rate %.3f, all planted ranked first in %.3f of "
                "rows", hit_rate, first_rate)
    assert hit_rate >= TOP3_FLOOR
    assert first_rate >= 0.8
    # Contributions come largest first, and planted rows stand far above normal ones.
    assert (np.diff(explained.contributions, axis=1) <= 0).all()
    normal = client.score("rows", low_rank_rows(N_PLANTED_ROWS, seed=3), explain=True)
    assert normal.explanations is not None
    assert np.median(explained.contributions[:, 0]) > 3 * np.median(
        normal.explanations.contributions[:, 0])


def test_bright_patch_holds_the_hottest_pixel(client: LatentwatchClient) -> None:
    from latentwatch.data import load_source

    images = load_source("digits").X[:40].reshape(-1, 8, 8).copy()
    rng = np.random.default_rng(4)
    corners = np.zeros((len(images), 2), dtype=np.int64)
    for i, image in enumerate(images):
        # A 2x2 patch at the pixel maximum, on the background (where the digit has no ink).
        dark = [(r, c) for r in range(7) for c in range(7)
                if image[r : r + 2, c : c + 2].max() <= 2]
        r, c = dark[int(rng.integers(len(dark)))]
        corners[i] = r, c
        image[r : r + 2, c : c + 2] = 16.0
    result = client.score("digits", images, explain=True, explain_top_k=64)
    assert result.explanations is not None
    hottest = result.explanations.features[:, 0]
    rows, cols = hottest // 8, hottest % 8
    inside = ((rows >= corners[:, 0]) & (rows < corners[:, 0] + 2)
              & (cols >= corners[:, 1]) & (cols < corners[:, 1] + 2))
    log.warning("bright patch: hottest pixel inside it in %d of %d images", inside.sum(),
                len(images))
    assert inside.mean() >= 0.9
    assert result.explanations.names[0] == ("",) * 64  # pixels have no names


def test_explanations_agree_across_batching_and_streams(client: LatentwatchClient) -> None:
    rows, _ = planted(low_rank_rows(30, seed=5), seed=6)
    whole = client.score("rows", rows, explain=True)
    streamed = client.score("rows", rows, explain=True, batch_rows=7)
    assert whole.explanations is not None and streamed.explanations is not None
    assert whole.explanations.features.shape == (30, 5)  # the default k
    np.testing.assert_array_equal(whole.explanations.features, streamed.explanations.features)
    np.testing.assert_allclose(whole.explanations.contributions,
                               streamed.explanations.contributions, rtol=1e-6, atol=1e-6)
    alone = client.score("rows", rows[:1], explain=True)
    assert alone.explanations is not None
    np.testing.assert_array_equal(alone.explanations.features[0], whole.explanations.features[0])
    plain = client.score("rows", rows)
    assert plain.explanations is None
    np.testing.assert_array_equal(plain.score, whole.score)


def test_bad_top_k_is_refused_and_the_server_keeps_serving(client: LatentwatchClient) -> None:
    rows = low_rank_rows(4, seed=7)
    with pytest.raises(InvalidInput, match=r"explain_top_k: 13 .* 12 features"):
        client.score("rows", rows, explain=True, explain_top_k=N_FEATURES + 1)
    assert client.score("rows", rows, explain=True, explain_top_k=N_FEATURES).explanations
    assert client.get_model("rows").explains


def test_a_version_without_explain_data_says_so(repo: Path, tmp_path: Path) -> None:
    """An export from before explanations: the same version without explain.npz."""
    import json

    old, manifest = _copy_version(repo, tmp_path / "repo" / "rows" / "1")
    (old / "explain.npz").unlink()
    del manifest["sha256"]["explain.npz"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    server = ServerThread(server_settings(tmp_path / "repo"))
    try:
        with LatentwatchClient(f"127.0.0.1:{server.running.port}", timeout_s=30) as c:
            c.wait_ready(60)
            assert not c.get_model("rows").explains
            rows = low_rank_rows(3, seed=8)
            with pytest.raises(FailedPrecondition, match="cannot explain rows"):
                c.score("rows", rows, explain=True)
            assert len(c.score("rows", rows)) == 3  # scoring goes on
    finally:
        server.close()


def _copy_version(repo: Path, target: Path) -> tuple[Path, dict]:
    import json
    import shutil

    shutil.copytree(repo / "rows" / "1", target)
    return target, json.loads((target / "manifest.json").read_text())


def test_a_version_with_odd_explain_data_is_refused(repo: Path, tmp_path: Path) -> None:
    import json

    from latentwatch.errors import VersionRefused
    from latentwatch.repository.manifest import sha256_file
    from latentwatch.repository.reader import read_version

    version, manifest = _copy_version(repo, tmp_path / "1")
    np.savez(version / "explain.npz", statistic=np.array("gaussian_nll"),
             mean=np.zeros(N_FEATURES - 1), std=np.ones(N_FEATURES - 1))
    manifest["sha256"]["explain.npz"] = sha256_file(version / "explain.npz")
    (version / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(VersionRefused, match=r"explain.npz cannot be used: .*12 features"):
        read_version("rows", "1", version)
