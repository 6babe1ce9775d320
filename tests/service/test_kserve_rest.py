"""KServe v2 over HTTP/REST on the real server's own port: unmodified tritonclient.http (sync
and aio) and curl, against the same scores as latentwatch.v1 Score, with the errors, statistics
and metrics of the gRPC port, and compressed bodies (limits, TLS and tokens:
test_kserve_rest_limits.py)."""

from __future__ import annotations

import asyncio
import gzip
import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
import tritonclient.http.aio as aiohttpclient
from server_harness import ServerThread, server_settings
from tritonclient.utils import InferenceServerException

from latentwatch.errors import STATUS_TABLE, http_status
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.wire.tensors import to_tensor

TAB = "tab-ae"  # the synthetic repository's tabular autoencoder: 5 features
DEFAULT = ("score", "p_value", "outlier_probability", "is_outlier")


def _rows(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, 5)).astype(np.float32)
    x[: max(1, n // 8)] *= 6  # some rows far out, so is_outlier is not all False
    return x


@pytest.fixture(scope="module")
def server(synthetic_repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(synthetic_repo, http_port=0))
    yield running
    running.close()


def _url(server: ServerThread) -> str:
    return f"127.0.0.1:{server.running.http_port}"


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[httpclient.InferenceServerClient]:
    with httpclient.InferenceServerClient(_url(server)) as c:
        yield c


def _input(x: np.ndarray, binary: bool, name: str = "input") -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(x.shape), "FP32" if x.dtype == np.float32 else
                                   "FP64")
    tensor.set_data_from_numpy(x, binary_data=binary)
    return tensor


def _score(server: ServerThread, x: np.ndarray, **fields: object) -> pb.ScoreResponse:
    stub = pb_grpc.LatentwatchStub(server.channel)
    return stub.Score(pb.ScoreRequest(model_name=TAB, input=to_tensor(x), **fields), timeout=20)


def _requests(server: ServerThread, method: str, code: str) -> float:
    registry = server.running.metrics.registry
    labels = {"method": method, "code": code}
    return registry.get_sample_value("latentwatch_requests_total", labels) or 0.0


def _status(call: object) -> tuple[str, str]:
    """(HTTP status, message) of a tritonclient call that fails."""
    with pytest.raises(InferenceServerException) as caught:
        call()  # type: ignore[operator]
    return str(caught.value.status()), caught.value.message()


def test_health_and_metadata_answer_tritonclient_http(
    server: ServerThread, client: httpclient.InferenceServerClient
) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(TAB) and client.is_model_ready(TAB, "1")
    assert not client.is_model_ready("no-such-model")
    server_meta = client.get_server_metadata()
    assert server_meta["name"] == "latentwatch" and "binary_tensor_data" in server_meta[
        "extensions"]
    meta = client.get_model_metadata(TAB)
    assert meta["name"] == TAB and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 5]}]
    assert [o["name"] for o in meta["outputs"]][:4] == list(DEFAULT)
    assert client.get_model_metadata(TAB, "1")["versions"] == ["1"]
    config = client.get_model_config(TAB)
    assert config["name"] == TAB and config["input"][0]["dims"] == [5]  # numbers, not strings
    index = client.get_model_repository_index()
    assert {(e["name"], e["state"]) for e in index} >= {(TAB, "READY")}


@pytest.mark.parametrize("n", [1, 256, 4096])  # 4096 rows of JSON are read off the loop
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_gives_the_scores_and_p_values_of_score(
    server: ServerThread, client: httpclient.InferenceServerClient, n: int, binary: bool
) -> None:
    x = _rows(n, seed=n)
    outputs = [httpclient.InferRequestedOutput(name, binary_data=binary) for name in DEFAULT]
    result = client.infer(TAB, [_input(x, binary)], outputs=outputs, request_id="r-7")
    reference = _score(server, x)
    response = result.get_response()
    assert (response["model_name"], response["model_version"], response["id"]) == (
        TAB, "1", "r-7")
    np.testing.assert_array_equal(result.as_numpy("score"), np.asarray(reference.score))
    np.testing.assert_array_equal(result.as_numpy("p_value"), np.asarray(reference.p_value))
    np.testing.assert_array_equal(
        result.as_numpy("outlier_probability"), np.asarray(reference.outlier_probability))
    np.testing.assert_array_equal(result.as_numpy("is_outlier"), np.asarray(reference.is_outlier))
    sent_as = ["parameters" in o for o in response["outputs"]]
    assert sent_as == [binary] * len(DEFAULT)


def test_no_outputs_named_gives_the_default_set_in_binary(
    client: httpclient.InferenceServerClient,
) -> None:
    result = client.infer(TAB, [_input(_rows(3), binary=True)])
    outputs = result.get_response()["outputs"]
    assert [o["name"] for o in outputs] == list(DEFAULT)
    assert all(o["parameters"]["binary_data_size"] > 0 for o in outputs)
    assert result.as_numpy("is_outlier").dtype == np.bool_


def test_alpha_score_kind_and_fdr_parameters(
    server: ServerThread, client: httpclient.InferenceServerClient
) -> None:
    x = _rows(64, seed=3)
    kind = client.get_model_config(TAB)["parameters"]["score_kinds"]["string_value"]
    wanted = [*DEFAULT, "fdr_is_outlier", kind]
    outputs = [httpclient.InferRequestedOutput(name) for name in wanted]
    result = client.infer(TAB, [_input(x, binary=False)], outputs=outputs,
                          parameters={"alpha": 0.3, "score_kind": kind, "fdr": 0.2})
    reference = _score(server, x, alpha=0.3, score_kind=kind, fdr=0.2, score_kinds=[kind])
    np.testing.assert_array_equal(result.as_numpy("is_outlier"), np.asarray(reference.is_outlier))
    assert result.as_numpy("is_outlier").any()
    np.testing.assert_array_equal(
        result.as_numpy("fdr_is_outlier"), np.asarray(reference.fdr.is_outlier))
    np.testing.assert_array_equal(result.as_numpy(kind), np.asarray(reference.scores[0].values))
    parameters = result.get_response()["parameters"]
    assert parameters["alpha"] == 0.3 and parameters["score_kind"] == kind


def test_errors_are_http_statuses_with_latentwatch_messages(
    server: ServerThread, client: httpclient.InferenceServerClient
) -> None:
    bad = _rows(4)[:, :3].copy()
    before = _requests(server, "ModelInfer", "INVALID_ARGUMENT")
    status, message = _status(lambda: client.infer(TAB, [_input(bad, binary=True)]))
    assert status == "400" and "5" in message and "3" in message, message
    assert _requests(server, "ModelInfer", "INVALID_ARGUMENT") == before + 1
    status, message = _status(lambda: client.infer("no-such-model", [_input(_rows(2), True)]))
    assert status == "404" and "no-such-model" in message
    status, message = _status(
        lambda: client.infer(TAB, [_input(_rows(2), True)], parameters={"nope": 1}))
    assert status == "400" and "nope" in message
    status, message = _status(lambda: client.get_model_metadata("no-such-model"))
    assert status == "404" and "no-such-model" in message
    assert client.is_server_live()  # nothing above took the server down


def test_infer_counts_in_the_request_metrics(
    server: ServerThread, client: httpclient.InferenceServerClient
) -> None:
    before = _requests(server, "ModelInfer", "OK"), _requests(server, "ServerLive", "OK")
    client.infer(TAB, [_input(_rows(2), binary=True)])
    client.is_server_live()
    after = _requests(server, "ModelInfer", "OK"), _requests(server, "ServerLive", "OK")
    assert after == (before[0] + 1, before[1] + 1)
    stats = client.get_inference_statistics(TAB)["model_stats"][0]
    assert stats["inference_count"] > 0 and stats["inference_stats"]["success"]["count"] > 0


def test_statistics_are_one_count_for_both_ports(
    server: ServerThread, client: httpclient.InferenceServerClient
) -> None:
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(f"127.0.0.1:{server.running.port}") as over_grpc:
        before = over_grpc.get_inference_statistics(TAB, as_json=True)["model_stats"][0]
        client.infer(TAB, [_input(_rows(3), binary=True)])  # over REST
        after = over_grpc.get_inference_statistics(TAB, as_json=True)["model_stats"][0]
    rows_before = int(before.get("inference_count", 0))
    assert int(after["inference_count"]) == rows_before + 3
    rest = client.get_inference_statistics(TAB)["model_stats"][0]
    assert rest["inference_count"] == int(after["inference_count"])


def test_compressed_requests_and_responses(
    server: ServerThread, client: httpclient.InferenceServerClient
) -> None:
    x = _rows(256, seed=5)
    reference = np.asarray(_score(server, x).score)
    for algorithm in ("gzip", "deflate"):
        result = client.infer(TAB, [_input(x, binary=True)],
                              request_compression_algorithm=algorithm,
                              response_compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("score"), reference)
    port = server.running.http_port
    request = json.dumps({"inputs": [{"name": "input", "shape": list(x.shape),
                                      "datatype": "FP32", "data": x.ravel().tolist()}]}).encode()
    head, _, body = _post(port, request, "Accept-Encoding: gzip").partition(b"\r\n\r\n")
    assert b"Content-Encoding: gzip" in head
    np.testing.assert_array_equal(json.loads(gzip.decompress(body))["outputs"][0]["data"],
                                  reference)
    for coding, payload in (("br", request), ("gzip", gzip.compress(request)[:-9])):
        reply = _post(port, payload, f"Content-Encoding: {coding}")
        assert reply.startswith(b"HTTP/1.1 400") and coding.encode() in reply, reply[:300]


def test_the_aio_client(server: ServerThread) -> None:
    x = _rows(256, seed=9)
    reference = _score(server, x)

    async def calls() -> tuple[bool, bool, dict, np.ndarray, np.ndarray]:
        async with aiohttpclient.InferenceServerClient(_url(server)) as c:
            inputs = [aiohttpclient.InferInput("input", list(x.shape), "FP32")]
            inputs[0].set_data_from_numpy(x)
            result = await c.infer(TAB, inputs)
            single = aiohttpclient.InferInput("input", [1, 5], "FP32")
            single.set_data_from_numpy(x[:1], binary_data=False)
            one = await c.infer(TAB, [single])
            return (await c.is_server_live(), await c.is_server_ready(),
                    await c.get_model_metadata(TAB), result.as_numpy("score"),
                    one.as_numpy("p_value"))

    live, ready, meta, scores, p_one = asyncio.run(calls())
    assert live and ready and meta["name"] == TAB
    np.testing.assert_array_equal(scores, np.asarray(reference.score))
    assert p_one[0] == reference.p_value[0]


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _post(port: int, body: bytes, *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return _raw(port, (f"POST /v2/models/{TAB}/infer HTTP/1.1\r\nHost: x\r\nConnection: close"
                       f"\r\n{head}Content-Length: {len(body)}\r\n\r\n").encode() + body)


def test_unknown_routes_wrong_methods_and_garbage_are_json_errors(server: ServerThread) -> None:
    port = server.running.http_port
    reply = _raw(port, b"GET /v2/nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404") and "error" in json.loads(body)
    reply = _raw(port, b"GET /v2/models/tab-ae/infer HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: close\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 405") and b'"error"' in reply
    body = b'{"inputs": [{"name": "input", "shape": [1, 5], "datatype": "FP32", "data": [1, 2'
    reply = _raw(port, b"POST /v2/models/tab-ae/infer HTTP/1.1\r\nHost: x\r\n"
                       b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and "not valid JSON" in json.loads(payload)["error"]
    binary = b'{"inputs":[{"name":"input","shape":[1,5],"datatype":"FP32",' \
             b'"parameters":{"binary_data_size":20}}]}'
    body = binary + b"\0" * 12  # 8 bytes short
    reply = _raw(port, b"POST /v2/models/tab-ae/infer HTTP/1.1\r\nHost: x\r\nConnection: close"
                       b"\r\nInference-Header-Content-Length: %d\r\nContent-Length: %d\r\n\r\n%s"
                       % (len(binary), len(body), body))
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400") and "runs past the body" in json.loads(payload)["error"]


def _curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl(server: ServerThread) -> None:
    base = f"http://{_url(server)}"
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{TAB}/ready"):
        done = _curl("-o", "/dev/null", "-w", "%{http_code}", base + path)
        assert done.stdout == "200", (path, done.stdout, done.stderr)
    assert json.loads(_curl(base + "/v2").stdout)["name"] == "latentwatch"
    assert json.loads(_curl(f"{base}/v2/models/{TAB}").stdout)["inputs"][0]["shape"] == [-1, 5]
    x = _rows(3, seed=11)
    request = {"inputs": [{"name": "input", "shape": [3, 5], "datatype": "FP32",
                           "data": x.tolist()}],
               "outputs": [{"name": "score"}, {"name": "p_value"}]}
    done = _curl("-H", "Content-Type: application/json", "-d", json.dumps(request),
                 f"{base}/v2/models/{TAB}/infer")
    reply = json.loads(done.stdout)
    reference = _score(server, x)
    assert [o["name"] for o in reply["outputs"]] == ["score", "p_value"]
    np.testing.assert_array_equal(reply["outputs"][0]["data"], list(reference.score))
    np.testing.assert_array_equal(reply["outputs"][1]["data"], list(reference.p_value))
    done = _curl("-w", "\n%{http_code}", f"{base}/v2/models/nope/infer", "-d", json.dumps(request))
    body, status = done.stdout.rsplit("\n", 1)
    assert status == "404" and "nope" in json.loads(body)["error"]


def test_every_error_class_has_its_http_status() -> None:
    expected = {
        "LatentwatchError": 500, "InvalidInput": 400, "ModelNotFound": 404, "QueueFull": 429,
        "NotReady": 503, "DataError": 400, "Unauthenticated": 401, "PermissionDenied": 403,
        "StreamIdle": 408, "RequestTooLarge": 413, "FailedPrecondition": 400, "VersionRefused": 500,
    }
    assert {c.__name__: http_status(c("x")) for c in STATUS_TABLE} == expected
