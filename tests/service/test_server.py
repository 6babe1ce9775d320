"""The real server over a real channel: every RPC, health and reflection.

Errors and request metrics of the same server: test_server_errors.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from repo_builder import reference_outputs
from served import SERVICE, rows_for, stub, vae
from server_harness import MAX_REQUEST_ROWS, RepoUnderTest, ServerThread

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.repository.manifest import Manifest
from latentwatch.wire.tensors import to_tensor


def sorted_calibration(repo: RepoUnderTest, m: Manifest) -> np.ndarray:
    scoring = m.require_scoring()
    scores = np.load(repo.path / m.name / m.version / scoring.calibration.file, allow_pickle=False)
    return np.sort(scores[:, scoring.calibration.score_kinds.index(scoring.default_score_kind)])


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
    assert list(info.score_kinds) == m.scoring.score_kinds
    assert info.default_score_kind == m.scoring.default_score_kind
    assert info.calibration_size == m.scoring.calibration.size
    assert info.min_alpha == pytest.approx(1 / (m.scoring.calibration.size + 1))
    assert info.default_alpha == m.scoring.calibration.default_alpha
    assert info.latent_dim == m.latent.latent_dim
    assert info.execution_provider.endswith("ExecutionProvider")
    assert Manifest.model_validate_json(info.manifest_json) == m
    assert [t.name for t in info.inputs] == [m.input.name]
    # The second stage's kind is computed by the service, not a graph output.
    computed = {m.scoring.second_stage.kind} if m.scoring.second_stage else set()
    assert {t.name for t in info.outputs} >= set(m.scoring.score_kinds) - computed
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
    assert reply.score_kind == m.scoring.default_score_kind
    assert reply.alpha == m.scoring.calibration.default_alpha
    calibration = sorted_calibration(repo_under_test, m)
    n = len(calibration)
    expected_p = [(1 + int(np.sum(calibration >= s))) / (n + 1) for s in reply.score]
    assert list(reply.p_value) == pytest.approx(expected_p, abs=1e-12)
    assert all(1 / (n + 1) <= p <= 1 for p in reply.p_value)
    assert list(reply.outlier_probability) == pytest.approx([1 - p for p in reply.p_value])
    assert list(reply.is_outlier) == [p <= reply.alpha for p in reply.p_value]
    assert [c.kind for c in reply.scores] == m.scoring.score_kinds
    columns = {c.kind: list(c.values) for c in reply.scores}
    assert columns[m.scoring.default_score_kind] == list(reply.score)
    assert list(reply.fdr.is_outlier) == brute_force_bh(list(reply.p_value), 0.2)
    assert reply.fdr.level == 0.2 and reply.fdr.n_flagged == sum(reply.fdr.is_outlier)
    if repo_under_test.synthetic:
        reference = reference_outputs(x, m.model_kind, m.latent.latent_dim)
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


def test_encode_returns_latent_means_and_log_variances(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    m = repo_under_test.manifest(name)
    x = rows_for(m, 6)
    reply = stub(server).Encode(pb.EncodeRequest(model_name=name, input=to_tensor(x)), timeout=10)
    assert (reply.model_name, reply.model_version) == (name, m.version)
    for tensor in (reply.latent_mu, reply.latent_logvar):
        assert tensor.datatype == "FP32" and list(tensor.shape) == [6, m.latent.latent_dim]
    if repo_under_test.synthetic:
        mu = np.frombuffer(reply.latent_mu.raw_data, np.float32).reshape(6, m.latent.latent_dim)
        expected = reference_outputs(x, m.model_kind, m.latent.latent_dim)["latent_mu"]
        np.testing.assert_allclose(mu, expected, rtol=1e-4, atol=1e-4)


def test_encode_of_a_plain_autoencoder_has_no_log_variance(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = repo_under_test.model_of_kind("ae")
    if name is None:
        pytest.skip("this repository holds no plain autoencoder")
    m = repo_under_test.manifest(name)
    reply = stub(server).Encode(pb.EncodeRequest(model_name=name, input=to_tensor(rows_for(m, 2))))
    assert list(reply.latent_mu.shape) == [2, m.latent.latent_dim]
    assert not reply.HasField("latent_logvar")
