"""The real server over a real channel: every RPC, health, reflection, metrics and errors."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from repo_builder import reference_outputs
from server_harness import MAX_REQUEST_ROWS, RepoUnderTest, ServerThread

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.manifest import Manifest
from latentwatch.wire.tensors import to_tensor

SERVICE = "latentwatch.v1.Latentwatch"
METRIC_NAMES = [
    "latentwatch_requests_total",
    "latentwatch_request_duration_seconds_bucket",
    "latentwatch_rows_scored_total",
    "latentwatch_batch_rows_bucket",
    "latentwatch_queue_rows",
    "latentwatch_inflight_requests",
    "latentwatch_score_bucket",
    "latentwatch_p_value_bucket",
    "latentwatch_outliers_total",
    "latentwatch_model_loaded",
    "latentwatch_execution_provider_info",
    "latentwatch_ready",
]


def stub(server: ServerThread) -> pb_grpc.LatentwatchStub:
    return pb_grpc.LatentwatchStub(server.channel)


def vae(repo: RepoUnderTest) -> str:
    name = repo.model_of_kind("vae", "beta-vae")
    assert name is not None, f"{repo.path} holds no VAE"
    return name


def rows_for(manifest: Manifest, n: int, seed: int = 0) -> np.ndarray:
    """Rows in the model's raw input range (images in [0, 16]-ish, tabular standard normal)."""
    rng = np.random.default_rng(seed)
    shift = np.asarray(manifest.input.preprocessing.shift, dtype=np.float32)
    scale = np.asarray(manifest.input.preprocessing.scale, dtype=np.float32)
    x = shift + rng.normal(size=(n, manifest.n_features)).astype(np.float32) / scale
    if manifest.input.preprocessing.clip is not None:
        low, high = manifest.input.preprocessing.clip
        x = np.clip(x, low / scale + shift, high / scale + shift)
    return x.astype(np.float32)


def sorted_calibration(repo: RepoUnderTest, m: Manifest) -> np.ndarray:
    scores = np.load(repo.path / m.name / m.version / m.calibration.file, allow_pickle=False)
    return np.sort(scores[:, m.calibration.score_kinds.index(m.default_score_kind)])


def brute_force_bh(p: list[float], level: float) -> list[bool]:
    m = len(p)
    ranked = sorted(p)
    k = max((i for i in range(1, m + 1) if ranked[i - 1] <= level * i / m), default=0)
    return [k > 0 and x <= ranked[k - 1] for x in p]


def test_health_is_serving_for_the_server_and_the_service(server: ServerThread) -> None:
    health = health_pb2_grpc.HealthStub(server.channel)
    for service in ("", SERVICE):
        reply = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_services(server: ServerThread) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(server.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    (reply,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=5))
    names = {s.name for s in reply.list_services_response.service}
    assert {SERVICE, "grpc.health.v1.Health"} <= names


def test_list_models_matches_the_repository(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    reply = stub(server).ListModels(pb.ListModelsRequest(), timeout=5)
    on_disk = sorted(p.name for p in repo_under_test.path.iterdir() if p.is_dir())
    assert sorted(m.name for m in reply.models) == on_disk
    for model in reply.models:
        manifest = repo_under_test.manifest(model.name)
        assert model.latest_version == manifest.version == model.versions[-1]
        assert model.model_kind == manifest.model_kind


def test_get_model_describes_the_version(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    m = repo_under_test.manifest(name)
    info = stub(server).GetModel(pb.GetModelRequest(model_name=name), timeout=5)
    assert (info.name, info.version, info.model_kind) == (name, m.version, m.model_kind)
    assert list(info.score_kinds) == m.score_kinds
    assert info.default_score_kind == m.default_score_kind
    assert info.calibration_size == m.calibration.size
    assert info.min_alpha == pytest.approx(1 / (m.calibration.size + 1))
    assert info.default_alpha == m.calibration.default_alpha
    assert info.latent_dim == m.latent_dim
    assert info.execution_provider.endswith("ExecutionProvider")
    assert Manifest.model_validate_json(info.manifest_json) == m
    assert [t.name for t in info.inputs] == [m.input.name]
    # The second stage's kind is computed by the service, not a graph output.
    computed = {m.second_stage.kind} if m.second_stage else set()
    assert {t.name for t in info.outputs} >= set(m.score_kinds) - computed
    assert list(info.image_shape) == (m.input.image_shape or [])
    assert info.max_batch_rows > 0


def test_score_gives_conformal_p_values_and_decisions(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    m = repo_under_test.manifest(name)
    x = rows_for(m, 40)
    x[:5] *= 3  # a few unusual rows
    reply = stub(server).Score(
        pb.ScoreRequest(model_name=name, input=to_tensor(x), score_kinds=["*"], fdr=0.2,
                        request_id="r-1"),
        timeout=10,
    )
    assert (reply.model_name, reply.model_version, reply.request_id) == (name, m.version, "r-1")
    assert reply.score_kind == m.default_score_kind
    assert reply.alpha == m.calibration.default_alpha
    calibration = sorted_calibration(repo_under_test, m)
    n = len(calibration)
    expected_p = [(1 + int(np.sum(calibration >= s))) / (n + 1) for s in reply.score]
    assert list(reply.p_value) == pytest.approx(expected_p, abs=1e-12)
    assert all(1 / (n + 1) <= p <= 1 for p in reply.p_value)
    assert list(reply.outlier_probability) == pytest.approx([1 - p for p in reply.p_value])
    assert list(reply.is_outlier) == [p <= reply.alpha for p in reply.p_value]
    assert [c.kind for c in reply.scores] == m.score_kinds
    columns = {c.kind: list(c.values) for c in reply.scores}
    assert columns[m.default_score_kind] == list(reply.score)
    assert list(reply.fdr.is_outlier) == brute_force_bh(list(reply.p_value), 0.2)
    assert reply.fdr.level == 0.2 and reply.fdr.n_flagged == sum(reply.fdr.is_outlier)
    if repo_under_test.synthetic:
        reference = reference_outputs(x, m.model_kind, m.latent_dim)
        for kind, values in columns.items():
            np.testing.assert_allclose(values, reference[kind], rtol=1e-4, atol=1e-4)
        assert any(reply.is_outlier)  # the scaled rows are far outside the calibration scores


def test_image_shapes_and_numeric_datatypes_give_the_same_scores(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    m = repo_under_test.manifest(name)
    x = np.round(rows_for(m, 4, seed=3))  # integral, so every datatype holds it exactly
    variants = [x, x.astype(np.float64), x.astype(np.int64)]
    if m.input.image_shape:
        variants.append(x.reshape(4, *m.input.image_shape))
        if m.input.image_shape[0] == 1:
            variants.append(x.reshape(4, *m.input.image_shape[1:]))
    if x.min() >= 0 and x.max() <= 255:
        variants.append(x.astype(np.uint8))
    scores = [
        list(stub(server).Score(pb.ScoreRequest(model_name=name, input=to_tensor(v))).score)
        for v in variants
    ]
    assert all(s == scores[0] for s in scores), scores


def test_concurrent_single_rows_get_their_own_scores(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    x = rows_for(repo_under_test.manifest(name), 48, seed=5)
    whole = stub(server).Score(pb.ScoreRequest(model_name=name, input=to_tensor(x)), timeout=10)
    calls = [
        stub(server).Score.future(pb.ScoreRequest(model_name=name, input=to_tensor(x[i : i + 1])))
        for i in range(len(x))
    ]
    singles = [c.result(timeout=20).score[0] for c in calls]
    np.testing.assert_allclose(singles, list(whole.score), rtol=1e-5, atol=1e-5)


def test_big_requests_beyond_the_default_message_size(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    m = repo_under_test.manifest(name)
    n = (4 << 20) // (4 * m.n_features) + 100  # just over 4 MiB of FP32
    assert n <= MAX_REQUEST_ROWS
    x = rows_for(m, n, seed=9)
    reply = stub(server).Score(pb.ScoreRequest(model_name=name, input=to_tensor(x)), timeout=30)
    assert len(reply.score) == n
    head = stub(server).Score(pb.ScoreRequest(model_name=name, input=to_tensor(x[:7])))
    np.testing.assert_allclose(list(reply.score[:7]), list(head.score), rtol=1e-5, atol=1e-5)


def test_score_stream_answers_in_order(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    x = rows_for(repo_under_test.manifest(name), 30, seed=11)
    requests = [
        pb.ScoreRequest(model_name=name, input=to_tensor(x[i : i + 1 + i % 3]), request_id=str(i))
        for i in range(20)
    ]
    replies = list(stub(server).ScoreStream(iter(requests), timeout=20))
    assert [r.request_id for r in replies] == [str(i) for i in range(20)]
    for i, reply in enumerate(replies):
        unary = stub(server).Score(requests[i])
        assert list(reply.score) == pytest.approx(list(unary.score), rel=1e-5, abs=1e-5)


def test_score_stream_ends_with_the_status_of_the_first_bad_request(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    x = rows_for(repo_under_test.manifest(name), 2)
    good = pb.ScoreRequest(model_name=name, input=to_tensor(x))
    bad = pb.ScoreRequest(model_name=name, input=to_tensor(x[:, :-1]))
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for reply in stub(server).ScoreStream(iter([good, good, good, bad, good]), timeout=20):
            received.append(reply)
    assert len(received) == 3
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected shape" in caught.value.details()


def test_encode_returns_latent_means_and_log_variances(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    m = repo_under_test.manifest(name)
    x = rows_for(m, 6)
    reply = stub(server).Encode(pb.EncodeRequest(model_name=name, input=to_tensor(x)), timeout=10)
    assert (reply.model_name, reply.model_version) == (name, m.version)
    for tensor in (reply.latent_mu, reply.latent_logvar):
        assert tensor.datatype == "FP32" and list(tensor.shape) == [6, m.latent_dim]
    if repo_under_test.synthetic:
        mu = np.frombuffer(reply.latent_mu.raw_data, np.float32).reshape(6, m.latent_dim)
        expected = reference_outputs(x, m.model_kind, m.latent_dim)["latent_mu"]
        np.testing.assert_allclose(mu, expected, rtol=1e-4, atol=1e-4)


def test_encode_of_a_plain_autoencoder_has_no_log_variance(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = repo_under_test.model_of_kind("ae")
    if name is None:
        pytest.skip("this repository holds no plain autoencoder")
    m = repo_under_test.manifest(name)
    reply = stub(server).Encode(pb.EncodeRequest(model_name=name, input=to_tensor(rows_for(m, 2))))
    assert list(reply.latent_mu.shape) == [2, m.latent_dim]
    assert not reply.HasField("latent_logvar")


def _tensor(datatype: str, shape: list[int], raw: bytes) -> pb.Tensor:
    return pb.Tensor(datatype=datatype, shape=shape, raw_data=raw)


def _nan_in_row_1(f: int) -> np.ndarray:
    x = np.zeros((2, f), np.float32)
    x[1, 1] = np.nan
    return x


# case -> (request fields given F features and n calibration rows (None: left out),
#          status code, text the message must contain ({f}: F, {nbytes}: 8 F))
BAD_SCORE_REQUESTS: dict[str, tuple[Callable[[int, int], dict], str, str]] = {
    "wrong shape": (
        lambda f, n: dict(input=to_tensor(np.zeros((3, f + 1), np.float32))),
        "INVALID_ARGUMENT", "expected shape (N, {f})",
    ),
    "bool datatype": (
        lambda f, n: dict(input=to_tensor(np.zeros((3, f), bool))),
        "INVALID_ARGUMENT", "numeric datatype, got [3, {f}] BOOL",
    ),
    "unknown datatype": (
        lambda f, n: dict(input=_tensor("STRING", [1, f], b"x" * f)),
        "INVALID_ARGUMENT", "expected one of",
    ),
    "byte length": (
        lambda f, n: dict(input=_tensor("FP32", [2, f], b"\0" * (8 * f - 1))),
        "INVALID_ARGUMENT", "needs {nbytes}",
    ),
    "missing input": (
        lambda f, n: dict(input=None), "INVALID_ARGUMENT", "missing; expected a tensor"
    ),
    "NaN": (
        lambda f, n: dict(input=to_tensor(_nan_in_row_1(f))),
        "INVALID_ARGUMENT", "1 values are NaN or infinite (or beyond the FP32 range), the first "
        "in row 1",
    ),
    "Inf": (
        lambda f, n: dict(input=to_tensor(np.full((2, f), np.inf, np.float32))),
        "INVALID_ARGUMENT", "first in row 0",
    ),
    "empty": (
        lambda f, n: dict(input=to_tensor(np.zeros((0, f), np.float32))),
        "INVALID_ARGUMENT", "no rows",
    ),
    "too many rows": (
        lambda f, n: dict(input=to_tensor(np.zeros((MAX_REQUEST_ROWS + 1, f), np.float32))),
        "INVALID_ARGUMENT", f"more than the {MAX_REQUEST_ROWS}",
    ),
    "unknown model": (
        lambda f, n: dict(model_name="no-such-model"), "NOT_FOUND", "this server has: "
    ),
    "unknown version": (
        lambda f, n: dict(model_version="999"), "NOT_FOUND", "loaded versions:"
    ),
    "alpha above 1": (
        lambda f, n: dict(alpha=1.5), "INVALID_ARGUMENT", "alpha must be in (0, 1)"
    ),
    "alpha unresolvable": (
        lambda f, n: dict(alpha=0.5 / (n + 1)), "INVALID_ARGUMENT", "calibration set of at least"
    ),
    "bad fdr": (lambda f, n: dict(fdr=0.0), "INVALID_ARGUMENT", "fdr must be in (0, 1)"),
    "bad kind": (
        lambda f, n: dict(score_kinds=["no_such_kind"]), "INVALID_ARGUMENT", "this model has ["
    ),
}


@pytest.mark.parametrize("case", list(BAD_SCORE_REQUESTS))
def test_bad_score_requests_get_the_right_status_and_then_a_good_one_works(
    case: str, server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    m = repo_under_test.manifest(name)
    f, n = m.n_features, m.calibration.size
    fields, code, text = BAD_SCORE_REQUESTS[case]
    good = dict(model_name=name, input=to_tensor(rows_for(m, 2)))
    bad = {k: v for k, v in {**good, **fields(f, n)}.items() if v is not None}
    with pytest.raises(grpc.RpcError) as caught:
        stub(server).Score(pb.ScoreRequest(**bad), timeout=10)
    assert caught.value.code().name == code
    assert text.format(f=f, nbytes=8 * f) in caught.value.details(), caught.value.details()
    assert len(stub(server).Score(pb.ScoreRequest(**good), timeout=10).score) == 2


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        (dict(model_name="no-such-model"), grpc.StatusCode.NOT_FOUND),
        (dict(input=to_tensor(np.zeros((1, 1), np.float32))), grpc.StatusCode.INVALID_ARGUMENT),
    ],
)
def test_bad_encode_requests(
    fields: dict, code: grpc.StatusCode, server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    m = repo_under_test.manifest(name)
    good = dict(model_name=name, input=to_tensor(rows_for(m, 1)))
    with pytest.raises(grpc.RpcError) as caught:
        stub(server).Encode(pb.EncodeRequest(**{**good, **fields}), timeout=10)
    assert caught.value.code() == code
    stub(server).Encode(pb.EncodeRequest(**good), timeout=10)


def test_get_model_of_an_unknown_version_is_not_found(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub(server).GetModel(pb.GetModelRequest(model_name=vae(repo_under_test),
                                                 model_version="12345"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_metrics_are_served_after_requests(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    m = repo_under_test.manifest(name)
    x = rows_for(m, 5)
    x[0] *= 100  # one certain outlier
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda _: stub(server).Score(
            pb.ScoreRequest(model_name=name, input=to_tensor(x))), range(8)))
    with pytest.raises(grpc.RpcError):
        stub(server).Score(pb.ScoreRequest(model_name=name, input=to_tensor(x[:, :1])))
    url = f"http://127.0.0.1:{server.running.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for metric in METRIC_NAMES:
        assert metric in text, metric
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }

    def value(sample: str, **labels: str) -> float:
        return samples[(sample, frozenset(labels.items()))]

    version = dict(model=name, version=m.version)
    assert value("latentwatch_requests_total", method="Score", code="OK") >= 8
    assert value("latentwatch_requests_total", method="Score", code="INVALID_ARGUMENT") >= 1
    assert value("latentwatch_request_duration_seconds_count", method="Score", code="OK") >= 8
    assert value("latentwatch_rows_scored_total", **version) >= 40
    assert value("latentwatch_outliers_total", **version) >= 8
    n_p = value("latentwatch_p_value_count", **version)
    assert n_p >= 40 and value("latentwatch_p_value_bucket", le="1.0", **version) == n_p
    # Histograms with negative buckets (the second stage's scores) carry no _count or _sum.
    assert value("latentwatch_score_bucket", le="+Inf", **version) == n_p
    assert value("latentwatch_batch_rows_sum", **version) >= 40
    assert value("latentwatch_queue_rows", **version) == 0
    assert value("latentwatch_model_loaded", **version) == 1
    assert value("latentwatch_ready") == 1
    assert value("latentwatch_inflight_requests") == 0
    providers = [dict(k[1]) for k in samples if k[0] == "latentwatch_execution_provider_info"]
    assert any(p["model"] == name and p["provider"].endswith("ExecutionProvider")
               for p in providers)
