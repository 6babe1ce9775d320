"""KServe v2 over gRPC on the service's port, called by unmodified tritonclient.grpc (and .aio).

Scores are compared with latentwatch.v1 Score on the same server and rows, exactly.
"""

from __future__ import annotations

import asyncio
import queue
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.grpc.aio as tg_aio
from prometheus_client.parser import text_string_to_metric_families
from repo_builder import build_version
from server_harness import ServerThread, server_settings
from tritonclient.grpc import service_pb2 as v2
from tritonclient.grpc import service_pb2_grpc as v2_grpc
from tritonclient.utils import InferenceServerException

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.service.auth import make_entry, new_token
from latentwatch.wire.tensors import to_tensor

VAE, AE, F = "img-vae", "tab-ae", 64


@pytest.fixture(scope="module")
def server(synthetic_repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(synthetic_repo, http_port=-1))  # REST: its own tests
    yield running
    running.close()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[tg.InferenceServerClient]:
    triton = tg.InferenceServerClient(f"127.0.0.1:{server.running.port}")
    yield triton
    triton.close()


def rows(n: int, seed: int = 0, features: int = F) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, features)).astype(np.float32)


def infer_input(x: np.ndarray, name: str = "input", datatype: str = "FP32") -> tg.InferInput:
    tensor = tg.InferInput(name, list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    return tensor


def v1_score(server: ServerThread, x: np.ndarray, **fields: object) -> pb.ScoreResponse:
    stub = pb_grpc.LatentwatchStub(server.channel)
    return stub.Score(pb.ScoreRequest(model_name=VAE, input=to_tensor(x), **fields), timeout=30)


def status_of(call: object) -> tuple[str, str]:
    with pytest.raises(InferenceServerException) as caught:
        call()  # type: ignore[operator]
    return str(caught.value.status()), str(caught.value.message())


def test_health_metadata_config_index(client: tg.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(VAE) and client.is_model_ready(VAE, "1")
    assert not client.is_model_ready("no-such-model") and not client.is_model_ready(VAE, "9")
    server_meta = client.get_server_metadata()
    assert server_meta.name == "latentwatch" and "statistics" in server_meta.extensions
    meta = client.get_model_metadata(VAE)
    assert (meta.name, list(meta.versions), meta.platform) == (VAE, ["1"], "latentwatch_vae")
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("input", "FP32", [-1, F])
    ]
    outputs = {t.name: (t.datatype, list(t.shape)) for t in meta.outputs}
    assert outputs["score"] == ("FP64", [-1]) and outputs["is_outlier"] == ("BOOL", [-1])
    assert {"neg_elbo", "recon_error", "p_value", "latent_mu", "latent_logvar"} <= set(outputs)
    assert "latent_logvar" not in {t.name for t in client.get_model_metadata(AE).outputs}
    config = client.get_model_config(VAE).config
    assert config.name == VAE and config.max_batch_size > 0
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [F])]
    score = next(o for o in config.output if o.name == "score")
    assert list(score.dims) == [1] and score.HasField("reshape")
    assert config.parameters["default_score_kind"].string_value == "neg_elbo"
    index = client.get_model_repository_index()
    assert [(m.name, m.version, m.state) for m in index.models] == [
        (VAE, "1", "READY"), (AE, "1", "READY")
    ]


@pytest.mark.parametrize("n", [1, 256])
def test_infer_equals_v1_score(
    server: ServerThread, client: tg.InferenceServerClient, n: int
) -> None:
    x = rows(n, seed=n)
    result = client.infer(VAE, [infer_input(x)])
    expected = v1_score(server, x)
    assert result.as_numpy("score").shape == (n,)
    np.testing.assert_array_equal(result.as_numpy("score"), expected.score)
    np.testing.assert_array_equal(result.as_numpy("p_value"), expected.p_value)
    np.testing.assert_array_equal(result.as_numpy("outlier_probability"),
                                  expected.outlier_probability)
    np.testing.assert_array_equal(result.as_numpy("is_outlier"), expected.is_outlier)
    assert result.as_numpy("is_outlier").dtype == np.bool_
    params = result.get_response().parameters
    assert params["score_kind"].string_param == "neg_elbo"
    assert params["alpha"].double_param == pytest.approx(0.05)


def test_fp64_input_is_accepted(server: ServerThread, client: tg.InferenceServerClient) -> None:
    x = rows(4, seed=3)
    result = client.infer(VAE, [infer_input(x.astype(np.float64), datatype="FP64")])
    np.testing.assert_array_equal(result.as_numpy("score"), v1_score(server, x).score)


def test_typed_contents_equal_raw(server: ServerThread, client: tg.InferenceServerClient) -> None:
    """tritonclient sends raw contents; its generated stub sends typed ones."""
    x = rows(256, seed=7)
    raw = client.infer(VAE, [infer_input(x)])
    stub = v2_grpc.GRPCInferenceServiceStub(server.channel)
    request = v2.ModelInferRequest(model_name=VAE, id="typed-1")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    tensor.contents.fp32_contents.extend(x.ravel().tolist())
    request.outputs.add(name="score")
    request.outputs.add(name="is_outlier")
    response = stub.ModelInfer(request, timeout=30)
    assert response.id == "typed-1" and [o.name for o in response.outputs] == [
        "score", "is_outlier"
    ]
    typed = np.frombuffer(response.raw_output_contents[0], dtype="<f8")
    np.testing.assert_array_equal(typed, raw.as_numpy("score"))
    flags = np.frombuffer(response.raw_output_contents[1], dtype=np.bool_)
    np.testing.assert_array_equal(flags, raw.as_numpy("is_outlier"))


def test_parameters_alpha_score_kind_fdr(
    server: ServerThread, client: tg.InferenceServerClient
) -> None:
    x = rows(64, seed=11)
    outputs = [tg.InferRequestedOutput(n) for n in
               ("score", "p_value", "is_outlier", "fdr_is_outlier", "neg_elbo", "recon_error")]
    result = client.infer(VAE, [infer_input(x)], outputs=outputs,
                          parameters={"alpha": 0.5, "score_kind": "recon_error", "fdr": 0.2})
    expected = v1_score(server, x, alpha=0.5, score_kind="recon_error", fdr=0.2,
                        score_kinds=["neg_elbo", "recon_error"])
    np.testing.assert_array_equal(result.as_numpy("score"), expected.score)
    np.testing.assert_array_equal(result.as_numpy("recon_error"), expected.score)
    np.testing.assert_array_equal(result.as_numpy("p_value"), expected.p_value)
    is_outlier = np.asarray(expected.p_value) <= 0.5
    np.testing.assert_array_equal(result.as_numpy("is_outlier"), is_outlier)
    np.testing.assert_array_equal(result.as_numpy("fdr_is_outlier"), expected.fdr.is_outlier)
    neg_elbo = next(c for c in expected.scores if c.kind == "neg_elbo")
    np.testing.assert_array_equal(result.as_numpy("neg_elbo"), neg_elbo.values)
    params = result.get_response().parameters
    assert params["score_kind"].string_param == "recon_error"
    assert params["alpha"].double_param == 0.5 and params["fdr"].double_param == 0.2
    assert params["fdr_p_value_threshold"].double_param == expected.fdr.p_value_threshold
    # alpha changes the decision: with the default 0.05 fewer rows are outliers than at 0.5
    default = client.infer(VAE, [infer_input(x)])
    assert default.as_numpy("is_outlier").sum() < result.as_numpy("is_outlier").sum()


def test_latent_outputs_on_request(server: ServerThread, client: tg.InferenceServerClient) -> None:
    x = rows(5, seed=2)
    outputs = [tg.InferRequestedOutput("latent_mu"), tg.InferRequestedOutput("latent_logvar")]
    result = client.infer(VAE, [infer_input(x)], outputs=outputs)
    encoded = pb_grpc.LatentwatchStub(server.channel).Encode(
        pb.EncodeRequest(model_name=VAE, input=to_tensor(x)), timeout=30
    )
    mu = np.frombuffer(encoded.latent_mu.raw_data, "<f4").reshape(list(encoded.latent_mu.shape))
    np.testing.assert_array_equal(result.as_numpy("latent_mu"), mu)
    assert result.as_numpy("latent_logvar").shape == mu.shape
    assert result.as_numpy("score") is None  # only what was asked for


def test_errors_name_the_tensor(client: tg.InferenceServerClient) -> None:
    code, message = status_of(lambda: client.infer(VAE, [infer_input(rows(2, features=63))]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "input" in message and "63" in message
    ints = rows(2).astype(np.int32)
    code, message = status_of(lambda: client.infer(VAE, [infer_input(ints, datatype="INT32")]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "input" in message and "INT32" in message
    code, message = status_of(lambda: client.infer("no-such-model", [infer_input(rows(1))]))
    assert code == "StatusCode.NOT_FOUND" and "no-such-model" in message
    code, message = status_of(lambda: client.infer(VAE, [infer_input(rows(1))],
                                                   parameters={"temperature": 2.0}))
    assert code == "StatusCode.INVALID_ARGUMENT" and "temperature" in message
    code, message = status_of(lambda: client.infer(VAE, [infer_input(rows(1), name="x")]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "'x'" in message
    code, message = status_of(lambda: client.infer(
        VAE, [infer_input(rows(1))], outputs=[tg.InferRequestedOutput("logits")]))
    assert code == "StatusCode.INVALID_ARGUMENT" and "logits" in message
    code, message = status_of(lambda: client.get_model_metadata("no-such-model"))
    assert code == "StatusCode.NOT_FOUND"


def test_byte_length_and_malformed_bytes(server: ServerThread) -> None:
    stub = v2_grpc.GRPCInferenceServiceStub(server.channel)
    request = v2.ModelInferRequest(model_name=VAE)
    request.inputs.add(name="input", datatype="FP32", shape=[2, F])
    request.raw_input_contents.append(rows(2).tobytes()[:-4])
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input" in caught.value.details() and "508" in caught.value.details()
    garbage = server.channel.unary_unary(
        "/inference.GRPCInferenceService/ModelInfer",
        request_serializer=lambda b: b, response_deserializer=lambda b: b,
    )
    with pytest.raises(grpc.RpcError) as caught:
        garbage(b"\xff\xff\xff", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "inference.ModelInferRequest" in caught.value.details()
    # In a stream: the good message before it is answered, then the stream ends, and the bad
    # message is one INVALID_ARGUMENT request of ModelStreamInfer.
    before = _count(server, "ModelStreamInfer", "INVALID_ARGUMENT")
    stream = server.channel.stream_stream(
        "/inference.GRPCInferenceService/ModelStreamInfer",
        request_serializer=lambda b: b,
        response_deserializer=v2.ModelStreamInferResponse.FromString,
    )
    good = v2.ModelInferRequest(model_name=VAE)
    good.inputs.add(name="input", datatype="FP32", shape=[1, F])
    good.raw_input_contents.append(rows(1).tobytes())
    answers = []
    with pytest.raises(grpc.RpcError) as caught:
        for answer in stream(iter([good.SerializeToString(), b"\xff\xff\xff"]), timeout=10):
            answers.append(answer)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert len(answers) <= 1 and all(not a.error_message for a in answers)
    assert _count(server, "ModelStreamInfer", "INVALID_ARGUMENT") == before + 1


def test_unimplemented_methods_say_so(client: tg.InferenceServerClient) -> None:
    code, message = status_of(lambda: client.get_system_shared_memory_status())
    assert code == "StatusCode.UNIMPLEMENTED" and "shared memory" in message


def test_stream_answers_in_order_and_goes_on_after_an_error(
    server: ServerThread, client: tg.InferenceServerClient
) -> None:
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    sizes = [1, 3, 0, 7, 256]  # 0: a bad shape, answered with an error
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i, n in enumerate(sizes):
            x = rows(n, seed=i) if n else rows(2, features=3)
            client.async_stream_infer(VAE, [infer_input(x)], request_id=str(i))
        got = [answers.get(timeout=30) for _ in sizes]
    finally:
        client.stop_stream()
    for i, (n, (result, error)) in enumerate(zip(sizes, got, strict=True)):
        if not n:
            assert result is None and "input" in str(error)
            continue
        assert error is None
        assert result.get_response().id == str(i)  # type: ignore[attr-defined]
        score = result.as_numpy("score")  # type: ignore[attr-defined]
        np.testing.assert_array_equal(score, v1_score(server, rows(n, seed=i)).score)


def test_aio_client_infer_and_stream(server: ServerThread) -> None:
    async def run() -> tuple[np.ndarray, list[np.ndarray]]:
        async with tg_aio.InferenceServerClient(f"127.0.0.1:{server.running.port}") as aio:
            assert await aio.is_server_ready()
            single = await aio.infer(VAE, [infer_input(rows(16, seed=5))])

            async def requests():  # type: ignore[no-untyped-def]
                for i in range(3):
                    yield {"model_name": VAE, "inputs": [infer_input(rows(4, seed=20 + i))],
                           "request_id": str(i)}

            streamed = []
            async for result, error in aio.stream_infer(requests()):
                assert error is None
                streamed.append(result.as_numpy("score"))
                if len(streamed) == 3:
                    break
            return single.as_numpy("score"), streamed

    single, streamed = asyncio.run(run())
    np.testing.assert_array_equal(single, v1_score(server, rows(16, seed=5)).score)
    for i, score in enumerate(streamed):
        np.testing.assert_array_equal(score, v1_score(server, rows(4, seed=20 + i)).score)


def test_metrics_and_statistics_count_infer(server: ServerThread) -> None:
    with tg.InferenceServerClient(f"127.0.0.1:{server.running.port}") as fresh:
        before = fresh.get_inference_statistics(AE).model_stats[0]
        counts = _requests(server)
        for n in (1, 2, 3):
            fresh.infer(AE, [infer_input(rows(n, features=5))])
        status_of(lambda: fresh.infer(AE, [infer_input(rows(1, features=4))]))
        fresh.start_stream(callback=lambda result, error: None)
        for _ in range(2):
            fresh.async_stream_infer(AE, [infer_input(rows(1, features=5))])
        fresh.stop_stream()  # waits for the answers
        after = fresh.get_inference_statistics(AE).model_stats[0]
    assert after.inference_count - before.inference_count == 1 + 2 + 3 + 2
    assert after.execution_count - before.execution_count == 5
    assert after.inference_stats.fail.count - before.inference_stats.fail.count == 1
    assert after.last_inference > 0
    now = _requests(server)
    delta = {k: now.get(k, 0) - counts.get(k, 0) for k in now}
    assert delta[("ModelInfer", "OK")] == 3 and delta[("ModelInfer", "INVALID_ARGUMENT")] == 1
    assert delta[("ModelStreamInfer", "OK")] == 2  # each message, not the stream


def _requests(server: ServerThread) -> dict[tuple[str, str], float]:
    """Request counts by (method, code), as the metrics port reports them."""
    url = f"http://127.0.0.1:{server.running.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (s.labels["method"], s.labels["code"]): s.value
        for family in text_string_to_metric_families(text) if family.name == "latentwatch_requests"
        for s in family.samples if s.name == "latentwatch_requests_total"
    }


def _count(server: ServerThread, method: str, code: str) -> float:
    return _requests(server).get((method, code), 0.0)


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerThread, dict]]:
    """A server with tokens: "scorer" (score), "reader" (read), "admin" (admin, read), and
    "limited" (score, read) for the tab-ae model only."""
    root = tmp_path_factory.mktemp("kserve_auth")
    repo = root / "repo"
    build_version(repo, AE, "1", kind="ae", n_features=5, latent_dim=2, seed=1)
    build_version(repo, VAE, "1", kind="vae", n_features=F, image_shape=[1, 8, 8])
    tokens = {name: new_token() for name in ("scorer", "reader", "admin", "limited")}
    scopes = {"scorer": ["score"], "reader": ["read"], "admin": ["admin", "read"],
              "limited": ["score", "read"]}
    models = {"limited": [AE]}
    path = root / "tokens.jsonl"
    path.write_text("".join(
        make_entry(n, tokens[n], scopes[n], models.get(n, ["*"])).to_line() + "\n"
        for n in tokens
    ))
    running = ServerThread(server_settings(repo, auth_tokens=path, http_port=-1))
    yield running, tokens
    running.close()


def test_tokens(guarded: tuple[ServerThread, dict]) -> None:
    server, tokens = guarded
    bearer = {n: {"authorization": f"Bearer {t}"} for n, t in tokens.items()}
    with tg.InferenceServerClient(f"127.0.0.1:{server.running.port}") as c:
        assert c.is_server_live() and c.is_server_ready()  # open, like grpc.health
        code, message = status_of(lambda: c.infer(AE, [infer_input(rows(1, features=5))]))
        assert code == "StatusCode.UNAUTHENTICATED" and "token" in message
        code, message = status_of(lambda: c.infer(AE, [infer_input(rows(1, features=5))],
                                                  headers=bearer["reader"]))
        assert code == "StatusCode.PERMISSION_DENIED" and "'score'" in message
        code, _ = status_of(lambda: c.get_model_metadata(AE))
        assert code == "StatusCode.UNAUTHENTICATED"
        assert c.get_model_metadata(AE, headers=bearer["reader"]).name == AE
        result = c.infer(AE, [infer_input(rows(2, features=5))], headers=bearer["scorer"])
        assert result.as_numpy("score").shape == (2,)
        code, _ = status_of(lambda: c.unload_model(AE, headers=bearer["reader"]))
        assert code == "StatusCode.PERMISSION_DENIED"
        # A token for one model: KServe's `name` fields are checked, listings show only it.
        limited = bearer["limited"]
        assert c.get_model_metadata(AE, headers=limited).name == AE
        code, message = status_of(lambda: c.get_model_metadata(VAE, headers=limited))
        assert code == "StatusCode.PERMISSION_DENIED" and VAE in message
        code, _ = status_of(lambda: c.get_model_config(VAE, headers=limited))
        assert code == "StatusCode.PERMISSION_DENIED"
        code, _ = status_of(lambda: c.infer(VAE, [infer_input(rows(1))], headers=limited))
        assert code == "StatusCode.PERMISSION_DENIED"
        listed = c.get_model_repository_index(headers=limited).models
        assert [m.name for m in listed] == [AE]
        stats = c.get_inference_statistics(headers=limited).model_stats
        assert [s.name for s in stats] == [AE]
        assert len(c.get_inference_statistics(headers=bearer["reader"]).model_stats) == 2


def test_repository_unload_and_load(guarded: tuple[ServerThread, dict]) -> None:
    server, tokens = guarded
    admin = {"authorization": f"Bearer {tokens['admin']}"}
    with tg.InferenceServerClient(f"127.0.0.1:{server.running.port}") as c:
        c.unload_model(VAE, headers=admin)
        assert not c.is_model_ready(VAE, headers=admin)
        code, message = status_of(lambda: c.infer(
            VAE, [infer_input(rows(1))], headers={"authorization": f"Bearer {tokens['scorer']}"}
        ))
        assert code == "StatusCode.NOT_FOUND" and VAE in message
        c.load_model(VAE, headers=admin)
        assert c.is_model_ready(VAE, headers=admin)
        code, message = status_of(lambda: c.load_model("no-such-model", headers=admin))
        assert code == "StatusCode.NOT_FOUND"


def test_not_ready_is_unavailable(guarded: tuple[ServerThread, dict]) -> None:
    """While the core is not ready (as during loading or without a required GPU), readiness is
    false and inference UNAVAILABLE; liveness stays true."""
    server, tokens = guarded
    core = server.running.core
    repository = core.repository
    assert repository is not None
    scorer = {"authorization": f"Bearer {tokens['scorer']}"}
    reader = {"authorization": f"Bearer {tokens['reader']}"}

    async def set_reason(reason: str) -> None:
        core.set_repository(repository, reason)

    with tg.InferenceServerClient(f"127.0.0.1:{server.running.port}") as c:
        server.call(set_reason("a GPU is required"))
        try:
            assert c.is_server_live() and not c.is_server_ready()
            assert not c.is_model_ready(AE, headers=reader)
            code, message = status_of(lambda: c.infer(
                AE, [infer_input(rows(1, features=5))], headers=scorer))
            assert code == "StatusCode.UNAVAILABLE" and "a GPU is required" in message
        finally:
            server.call(set_reason(""))
        assert c.is_server_ready() and c.is_model_ready(AE, headers=reader)


def test_exported_digits_vae_equals_v1_score(
    model_repo: Path, serve: Callable[..., AbstractContextManager[str]]
) -> None:
    """The trained, exported digits VAE (64 pixels in 0..16) through tritonclient.grpc."""
    x = (np.random.default_rng(4).random((256, 64)) * 16).astype(np.float32)
    with serve(model_repo, http_port=-1) as target:
        with tg.InferenceServerClient(target) as c:
            meta = c.get_model_metadata("digits-vae")
            assert [(t.name, list(t.shape)) for t in meta.inputs] == [("input", [-1, 64])]
            result = c.infer("digits-vae", [infer_input(x)], parameters={"fdr": 0.1})
        with grpc.insecure_channel(target) as channel:
            expected = pb_grpc.LatentwatchStub(channel).Score(
                pb.ScoreRequest(model_name="digits-vae", input=to_tensor(x), fdr=0.1), timeout=30
            )
    np.testing.assert_array_equal(result.as_numpy("score"), expected.score)
    np.testing.assert_array_equal(result.as_numpy("p_value"), expected.p_value)
    np.testing.assert_array_equal(result.as_numpy("is_outlier"), expected.is_outlier)
    threshold = result.get_response().parameters["fdr_p_value_threshold"].double_param
    assert threshold == expected.fdr.p_value_threshold
