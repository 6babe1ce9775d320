"""The Python client against a real server over a real channel."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.client.client import LatentwatchClient, ScoreResult, benjamini_hochberg
from latentwatch.errors import InvalidInput, ModelNotFound, NotReady
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.manifest import Manifest
from latentwatch.wire.tensors import to_tensor

VAE, AE = "digits-vae", "digits-ae"


@pytest.fixture(scope="module")
def target(model_repo: Path, serve: Callable[..., AbstractContextManager[str]]) -> Iterator[str]:
    with serve(model_repo) as host_port:
        yield host_port


@pytest.fixture()
def client(target: str) -> Iterator[LatentwatchClient]:
    with LatentwatchClient(target, timeout_s=30.0) as c:
        c.wait_ready(30.0)
        yield c


@pytest.fixture(scope="module")
def digits() -> NDArray[np.float32]:
    from latentwatch.data import load_source

    return load_source("digits").X  # (1797, 64), values 0..16


def _conformal_p(calibration: NDArray[np.float64], scores: NDArray[np.float64]) -> NDArray:
    return np.array([(1 + np.sum(calibration >= s)) / (calibration.size + 1) for s in scores])


def test_score_matches_the_score_rpc_and_the_calibration(
    client: LatentwatchClient, target: str, model_repo: Path, digits: NDArray
) -> None:
    X = digits[:120]
    result = client.score(VAE, X, kinds=("*",), alpha=0.1)

    assert len(result) == 120
    for column in (result.score, result.p_value, result.outlier_probability, result.is_outlier):
        assert column.shape == (120,)
    info = client.get_model(VAE)
    assert result.score_kind == info.default_score_kind
    assert (result.model_name, result.model_version) == (VAE, info.version)
    assert set(result.scores) == set(info.score_kinds)
    np.testing.assert_array_equal(result.scores[result.score_kind], result.score)
    np.testing.assert_allclose(result.outlier_probability, 1.0 - result.p_value)
    np.testing.assert_array_equal(result.is_outlier, result.p_value <= 0.1)
    assert result.alpha == 0.1 and result.fdr is None

    # The same numbers as the raw RPC...
    request = pb.ScoreRequest(model_name=VAE, input=to_tensor(X), alpha=0.1)
    with grpc.insecure_channel(target) as channel:
        raw = pb_grpc.LatentwatchStub(channel).Score(request, timeout=30)
    np.testing.assert_array_equal(result.score, np.array(raw.score))
    np.testing.assert_array_equal(result.is_outlier, np.array(raw.is_outlier))

    # ...and p-values that follow the conformal formula over the stored calibration scores.
    version_dir = model_repo / VAE / info.version
    manifest = Manifest.read(version_dir)
    calibration = np.load(version_dir / manifest.scoring.calibration.file, allow_pickle=False)
    column = manifest.scoring.calibration.score_kinds.index(result.score_kind)
    np.testing.assert_allclose(result.p_value, _conformal_p(calibration[:, column], result.score))


@pytest.mark.parametrize("kind", ["neg_elbo", "recon_prob_nll", "stats_density"])
def test_each_score_kind_is_selectable_with_its_own_calibration(
    client: LatentwatchClient, model_repo: Path, digits: NDArray, kind: str
) -> None:
    X = np.concatenate([digits[:60], np.full((4, 64), 16.0, np.float32)])  # 4 blank-white rows
    result = client.score(VAE, X, score_kind=kind, kinds=("*",), fdr=0.1)
    assert result.score_kind == kind
    np.testing.assert_array_equal(result.score, result.scores[kind])
    version_dir = model_repo / VAE / client.get_model(VAE).version
    manifest = Manifest.read(version_dir)
    calibration = np.load(version_dir / manifest.scoring.calibration.file, allow_pickle=False)
    column = manifest.scoring.calibration.score_kinds.index(kind)
    np.testing.assert_allclose(result.p_value, _conformal_p(calibration[:, column], result.score))
    assert result.is_outlier[-4:].all()  # every kind flags rows far from any digit
    assert result.fdr is not None and result.fdr.is_outlier[-4:].all()


def test_the_default_kind_is_the_second_stage_and_matches_offline_scoring(
    client: LatentwatchClient, model_repo: Path, digits: NDArray
) -> None:
    from latentwatch.service.offline import OfflineScorer

    info = client.get_model(VAE)
    offline = OfflineScorer.from_version_dir(model_repo / VAE / info.version)
    assert info.default_score_kind == offline.default_score_kind == "stats_density"
    served = client.score(VAE, digits[:200], kinds=("*",))
    local = offline.score(digits[:200])
    for kind in info.score_kinds:
        np.testing.assert_allclose(served.scores[kind], local[kind], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served.p_value, offline.p_values(local)["stats_density"])


def test_an_unknown_score_kind_is_invalid_input(client: LatentwatchClient, digits: NDArray) -> None:
    with pytest.raises(InvalidInput, match="unknown score_kind 'nope'"):
        client.score(VAE, digits[:3], score_kind="nope")
    assert len(client.score(VAE, digits[:3])) == 3  # and the server keeps serving


def test_images_of_any_numeric_dtype_score_like_float_rows(
    client: LatentwatchClient, digits: NDArray
) -> None:
    rows = client.score(VAE, digits[:40])
    images = client.score(VAE, digits[:40].reshape(40, 8, 8).astype(np.uint8))
    np.testing.assert_allclose(images.score, rows.score, rtol=1e-6)
    np.testing.assert_array_equal(images.p_value, rows.p_value)


def test_chunked_streaming_equals_one_shot(client: LatentwatchClient, digits: NDArray) -> None:
    X = digits[:300]
    one_shot = client.score(VAE, X, kinds=("*",), fdr=0.2)
    chunked = client.score(VAE, X, kinds=("*",), fdr=0.2, batch_rows=64)

    assert len(chunked) == 300
    np.testing.assert_allclose(chunked.score, one_shot.score, rtol=1e-6)
    for kind in one_shot.scores:
        np.testing.assert_allclose(chunked.scores[kind], one_shot.scores[kind], rtol=1e-6)
    np.testing.assert_array_equal(chunked.p_value, one_shot.p_value)
    np.testing.assert_array_equal(chunked.is_outlier, one_shot.is_outlier)
    # BH over all 300 rows, recomputed by the client, equals the server's one-request decision.
    assert one_shot.fdr is not None and chunked.fdr is not None
    np.testing.assert_array_equal(chunked.fdr.is_outlier, one_shot.fdr.is_outlier)
    assert chunked.fdr.p_value_threshold == one_shot.fdr.p_value_threshold


def test_score_stream_yields_one_result_per_batch_in_order(
    client: LatentwatchClient, digits: NDArray
) -> None:
    sizes = [10, 1, 33, 7]
    starts = np.cumsum([0, *sizes[:-1]])
    batches = (digits[s : s + n] for s, n in zip(starts, sizes, strict=True))
    parts = list(client.score_stream(VAE, batches, fdr=0.5))

    assert [len(p) for p in parts] == sizes
    assert all(p.fdr is not None and p.fdr.is_outlier.shape == (len(p),) for p in parts)
    whole = client.score(VAE, digits[: sum(sizes)])
    np.testing.assert_allclose(ScoreResult.concat(parts).score, whole.score, rtol=1e-6)


def test_leaving_a_stream_early_leaves_the_client_usable(
    client: LatentwatchClient, digits: NDArray
) -> None:
    stream = client.score_stream(VAE, (digits[i : i + 5] for i in range(0, 500, 5)))
    first = next(stream)
    stream.close()
    assert len(first) == 5
    assert len(client.score(VAE, digits[:3])) == 3


def test_encode_returns_latents_per_row(client: LatentwatchClient, digits: NDArray) -> None:
    latent_dim = client.get_model(VAE).latent_dim
    mu, logvar = client.encode(VAE, digits[:9])
    assert mu.shape == (9, latent_dim) and logvar is not None and logvar.shape == (9, latent_dim)
    assert np.isfinite(mu).all()
    ae_mu, ae_logvar = client.encode(AE, digits[:9])
    assert ae_mu.shape[0] == 9 and ae_logvar is None


def test_list_and_get_models(client: LatentwatchClient) -> None:
    models = {m.name: m for m in client.list_models()}
    assert {VAE, AE} <= set(models)
    assert models[AE].model_kind == "ae"
    info = client.get_model(VAE, models[VAE].latest_version)
    assert info.min_alpha == pytest.approx(1.0 / (info.calibration_size + 1))
    assert "neg_elbo" in info.score_kinds


@pytest.mark.parametrize(
    ("call", "error", "words"),
    [
        (lambda c, X: c.score("no-such-model", X), ModelNotFound, "no-such-model"),
        (lambda c, X: c.score(VAE, X, version="999"), ModelNotFound, "999"),
        (lambda c, X: c.score(VAE, X[:, :10]), InvalidInput, "64"),
        (lambda c, X: c.score(VAE, np.full_like(X, np.nan)), InvalidInput, "NaN"),
        (lambda c, X: c.score(VAE, X, alpha=1e-9), InvalidInput, "calibration"),
        (lambda c, X: c.encode("no-such-model", X), ModelNotFound, "no-such-model"),
        (lambda c, X: c.get_model("no-such-model"), ModelNotFound, "no-such-model"),
        (lambda c, X: list(c.score_stream("no-such-model", [X])), ModelNotFound, "no-such"),
        (lambda c, X: c.score(VAE, X, batch_rows=2, alpha=2.0), InvalidInput, "alpha"),
        (lambda c, X: list(c.score_stream(VAE, [X, X[0]])), InvalidInput, "batch 1"),
    ],
)
def test_errors_map_to_exception_classes(
    client: LatentwatchClient, digits: NDArray, call: Callable[..., object], error: type,
    words: str,
) -> None:
    with pytest.raises(error, match=words):
        call(client, digits[:4])


def test_a_server_that_is_not_there_is_not_ready() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with LatentwatchClient(f"127.0.0.1:{port}", timeout_s=2.0) as c:
        with pytest.raises(NotReady):
            c.wait_ready(0.3)
        with pytest.raises(NotReady):
            c.list_models()


def test_benjamini_hochberg_steps_up() -> None:
    decision = benjamini_hochberg(np.array([0.04, 0.01, 0.2, 0.03]), 0.1)
    np.testing.assert_array_equal(decision.is_outlier, [True, True, False, True])
    assert decision.p_value_threshold == 0.04 and decision.n_flagged == 3
    # 0.04 alone fails its rank-1 bound 0.025, but 0.045 passes rank 2 (0.05): both flagged.
    np.testing.assert_array_equal(benjamini_hochberg(np.array([0.045, 0.04]), 0.05).is_outlier,
                                  [True, True])
    assert benjamini_hochberg(np.array([0.5, 0.9]), 0.1).n_flagged == 0


def test_client_and_score_cli_import_neither_torch_nor_onnx() -> None:
    code = (
        "import sys, latentwatch.client.client, latentwatch.cli.score; "
        "print(sorted(m for m in ('torch', 'onnx') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
