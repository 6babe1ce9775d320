"""Bad requests over a real channel: each gets a precise status with a short message, none logs a
traceback, none holds up other calls, and the server keeps serving.

Before these checks, a long shape froze every call (health included) for seconds, zero-size
tensors with huge dimensions, ranks above 64 and a subnormal alpha were INTERNAL with a logged
traceback, bytes that do not parse were UNKNOWN naming a protobuf class, and a 1 MB model name
came back in full in a message the client could not read (RESOURCE_EXHAUSTED on its side).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from served import SERVICE, rows_for, stub, vae
from server_harness import RepoUnderTest, ServerThread

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.tensors import MAX_RANK, to_tensor

HUGE = 2**62
MB = 1_000_000
MAX_DETAILS_CHARS = 600  # every message here is a few lines at most
GARBAGE = b"\xff\xff\xff\xff\xff"
# Field 1 holding bytes that are not UTF-8: undecodable where field 1 is a string (every request
# here but ListModelsRequest, which has no fields and keeps it as an unknown one).
BAD_UTF8 = b"\x0a\x02\xff\xfe"


def _tensor(shape: list[int], raw: bytes = b"") -> pb.Tensor:
    return pb.Tensor(datatype="FP32", shape=shape, raw_data=raw)


# case -> (request fields given the model's name (None: left out), code, texts the message holds)
BAD_SCORE_REQUESTS: dict[str, tuple[Callable[[str], dict], str, tuple[str, ...]]] = {
    "zero rows of 2**62": (
        lambda name: dict(input=_tensor([0, HUGE])),
        "INVALID_ARGUMENT", ("shape [0, 4611686018427387904] describes more than",),
    ),
    "2**62 rows of zero": (
        lambda name: dict(input=_tensor([HUGE, 0])), "INVALID_ARGUMENT", ("describes more than",),
    ),
    "rank 65": (
        lambda name: dict(input=_tensor([1] * 65, b"\0" * 4)),
        "INVALID_ARGUMENT", (f"shape has 65 dimensions; a tensor has at most {MAX_RANK}",),
    ),
    "rank 65 of zeros": (
        lambda name: dict(input=_tensor([0] * 65)), "INVALID_ARGUMENT", ("65 dimensions",),
    ),
    "rank 4,000": (  # its message once listed every entry: more than gRPC's 8 KB of metadata
        lambda name: dict(input=_tensor([3] * 4000, b"\0" * 4)),
        "INVALID_ARGUMENT", ("shape has 4,000 dimensions",),
    ),
    "negative dimension": (
        lambda name: dict(input=_tensor([-1, 4])), "INVALID_ARGUMENT", ("negative dimension",),
    ),
    "huge datatype": (
        lambda name: dict(input=pb.Tensor(datatype="X" * MB, shape=[1, 1], raw_data=b"\0")),
        "INVALID_ARGUMENT", ("is not supported", "(1,000,000 characters)"),
    ),
    "subnormal alpha": (
        lambda name: dict(alpha=5e-324),
        "INVALID_ARGUMENT", ("alpha 4.94066e-324 is below", "at least 2.02e+323 rows"),
    ),
    "alpha 1e-310": (
        lambda name: dict(alpha=1e-310), "INVALID_ARGUMENT", ("at least 1.00e+310 rows",),
    ),
    "alpha 1e-300": (
        lambda name: dict(alpha=1e-300), "INVALID_ARGUMENT", ("at least 9.99e+299 rows",),
    ),
    **{
        f"alpha {value}": (
            lambda name, value=value: dict(alpha=value),
            "INVALID_ARGUMENT", (f"alpha must be in (0, 1), got {value}",),
        )
        for value in (float("nan"), float("inf"), float("-inf"), -0.1, 0.0, 1.0, 1.5)
    },
    **{
        f"fdr {value}": (
            lambda name, value=value: dict(fdr=value),
            "INVALID_ARGUMENT", (f"fdr must be in (0, 1), got {value}",),
        )
        for value in (float("nan"), float("inf"), -1.0, 0.0, 1.0, 2.0)
    },
    "unknown score_kind": (
        lambda name: dict(score_kind="nope"), "INVALID_ARGUMENT", ("unknown score_kind 'nope'",),
    ),
    "huge score_kind with newlines": (
        lambda name: dict(score_kind="k\n" * MB),
        "INVALID_ARGUMENT", ("unknown score_kind 'k\\nk\\n", "(2,000,000 characters)"),
    ),
    "10,000 unknown score kinds": (
        lambda name: dict(score_kinds=["x"] * 10_000),
        "INVALID_ARGUMENT", ("unknown score kind(s) ['x', ", "and 9,997 more"),
    ),
    "long unknown score kinds of control characters": (
        lambda name: dict(score_kinds=["\x1f" * 1000] * 3),
        "INVALID_ARGUMENT", ("unknown score kind(s) ['\\x1f", "(1,000 characters)"),
    ),
    "empty model_name": (
        lambda name: dict(model_name=""),
        "INVALID_ARGUMENT", ("model_name is empty; this server has: ",),
    ),
    "1 MB model_name": (
        lambda name: dict(model_name="m" * MB), "NOT_FOUND", ("(1,000,000 characters)",),
    ),
    "model_name with a newline": (
        lambda name: dict(model_name="x\nERROR forged line"),
        "NOT_FOUND", ("no model 'x\\nERROR forged line'",),
    ),
    "1 MB model_version": (
        lambda name: dict(model_version="v" * MB),
        "NOT_FOUND", ("has no version 'vvv", "(1,000,000 characters)"),
    ),
}


def _details(call: Callable[[], object]) -> tuple[str, str]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code().name, caught.value.details() or ""


def _tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info]


@pytest.mark.parametrize("case", list(BAD_SCORE_REQUESTS))
def test_bad_score_requests_get_a_precise_status_a_short_message_and_no_traceback(
    case: str, server: ServerThread, repo_under_test: RepoUnderTest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    name = vae(repo_under_test)
    fields, code, texts = BAD_SCORE_REQUESTS[case]
    good = dict(model_name=name, input=to_tensor(rows_for(repo_under_test.manifest(name), 2)))
    bad = {k: v for k, v in {**good, **fields(name)}.items() if v is not None}
    with caplog.at_level(logging.INFO):
        got_code, details = _details(
            lambda: stub(server).Score(pb.ScoreRequest(**bad), timeout=10)
        )
    assert got_code == code, details
    for text in texts:
        assert text in details, details
    assert len(details) <= MAX_DETAILS_CHARS and "\n" not in details, details[:1000]
    assert not _tracebacks(caplog)
    assert len(stub(server).Score(pb.ScoreRequest(**good), timeout=10).score) == 2


@pytest.mark.parametrize(
    ("shape", "text"),
    [([1] * 65, "65 dimensions"), ([0, HUGE], "describes more than"), ([HUGE, 0, 3], "describes")],
    ids=["rank 65", "zero rows of 2**62", "2**62 rows of zero"],
)
def test_bad_encode_shapes_are_invalid_argument(
    shape: list[int], text: str, server: ServerThread, repo_under_test: RepoUnderTest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = b"\0" * 4 if 0 not in shape else b""
    request = pb.EncodeRequest(model_name=vae(repo_under_test), input=_tensor(shape, raw))
    with caplog.at_level(logging.INFO):
        code, details = _details(lambda: stub(server).Encode(request, timeout=10))
    assert (code, text in details) == ("INVALID_ARGUMENT", True), details
    assert not _tracebacks(caplog)


def test_get_model_quotes_a_huge_name_and_version(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    for request in (
        pb.GetModelRequest(model_name="m\n" * MB),
        pb.GetModelRequest(model_name=vae(repo_under_test), model_version="v\n" * MB),
    ):
        code, details = _details(lambda request=request: stub(server).GetModel(request, timeout=10))
        assert code == "NOT_FOUND" and "(2,000,000 characters)" in details, details[:1000]
        assert len(details) <= MAX_DETAILS_CHARS and "\n" not in details


def test_a_score_with_a_40000_entry_shape_is_refused_at_once_and_health_answers_meanwhile(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    # A 360 KB request; before the rank check it held the event loop for 5 to 8 s (every call
    # on the port waited, health included) and then ended INTERNAL.
    request = pb.ScoreRequest(
        model_name=vae(repo_under_test), input=_tensor([HUGE + 12345] * 40_000, b"\0" * 8)
    )
    registry = server.running.metrics.registry
    start = time.perf_counter()
    scoring = stub(server).Score.future(request, timeout=60)
    while not scoring.done() and not registry.get_sample_value("latentwatch_inflight_requests"):
        assert time.perf_counter() - start < 10, "the Score never reached its handler"
        time.sleep(0.001)
    time.sleep(0.1)
    with grpc.insecure_channel(f"127.0.0.1:{server.running.port}") as channel:
        check_start = time.perf_counter()  # while the Score is handled (unless done)
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=60
        )
        health_s = time.perf_counter() - check_start
    with pytest.raises(grpc.RpcError) as caught:
        scoring.result()
    score_s = time.perf_counter() - start
    # Milliseconds each now (seconds before); generous bounds for a busy machine.
    assert health_s < 1.0 and score_s < 2.0, f"health {health_s:.3f} s, Score {score_s:.3f} s"
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "shape has 40,000 dimensions" in (caught.value.details() or "")


def _raw_calls(channel: grpc.Channel) -> Iterator[tuple[str, str, Callable[[bytes], object]]]:
    """(method, request message, a call sending raw bytes) for every handler kind on the port."""
    def unary(path: str) -> Callable[[bytes], object]:
        return lambda raw: channel.unary_unary(path)(raw, timeout=10)

    def server_stream(path: str) -> Callable[[bytes], object]:
        return lambda raw: list(channel.unary_stream(path)(raw, timeout=10))

    def client_stream(path: str) -> Callable[[bytes], object]:
        return lambda raw: channel.stream_unary(path)(iter([raw]), timeout=10)

    def both_streams(path: str) -> Callable[[bytes], object]:
        return lambda raw: list(channel.stream_stream(path)(iter([raw]), timeout=10))

    v1 = f"/{SERVICE}"
    yield "Score", "latentwatch.v1.ScoreRequest", unary(f"{v1}/Score")
    yield "Encode", "latentwatch.v1.EncodeRequest", unary(f"{v1}/Encode")
    yield "GetModel", "latentwatch.v1.GetModelRequest", unary(f"{v1}/GetModel")
    yield "ListModels", "latentwatch.v1.ListModelsRequest", unary(f"{v1}/ListModels")
    yield "ScoreStream", "latentwatch.v1.ScoreRequest", both_streams(f"{v1}/ScoreStream")
    yield "BiasReport", "latentwatch.v1.BiasReportRequest", client_stream(f"{v1}/BiasReport")
    health = "/grpc.health.v1.Health"
    yield "Check", "grpc.health.v1.HealthCheckRequest", unary(f"{health}/Check")
    yield "Watch", "grpc.health.v1.HealthCheckRequest", server_stream(f"{health}/Watch")
    reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    yield "ServerReflectionInfo", "grpc.reflection.v1alpha.ServerReflectionRequest", (
        both_streams(reflection)
    )


@pytest.mark.parametrize("raw", [GARBAGE, BAD_UTF8], ids=["garbage", "bad UTF-8"])
def test_bytes_that_do_not_parse_are_invalid_argument_on_every_method(
    raw: bytes, server: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    registry = server.running.metrics.registry
    seen = []
    for method, message, call in _raw_calls(server.channel):
        if raw == BAD_UTF8 and method == "ListModels":
            continue
        labels = {"method": method, "code": "INVALID_ARGUMENT"}
        before = registry.get_sample_value("latentwatch_requests_total", labels) or 0.0
        with caplog.at_level(logging.INFO):
            code, details = _details(lambda call=call: call(raw))
        seen.append((method, code, details))
        assert (code, details) == ("INVALID_ARGUMENT", f"request is not a valid {message}"), seen
        assert registry.get_sample_value("latentwatch_requests_total", labels) == before + 1
    assert not _tracebacks(caplog)
    health = health_pb2_grpc.HealthStub(server.channel)
    reply = health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_stream_answers_the_messages_before_one_that_does_not_parse(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    good = pb.ScoreRequest(
        model_name=name, input=to_tensor(rows_for(repo_under_test.manifest(name), 2))
    ).SerializeToString()
    stream = server.channel.stream_stream(f"/{SERVICE}/ScoreStream")
    received = []
    with pytest.raises(grpc.RpcError) as caught:
        for reply in stream(iter([good, good, GARBAGE, good]), timeout=20):
            received.append(pb.ScoreResponse.FromString(reply))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "request is not a valid latentwatch.v1.ScoreRequest"
    assert [len(r.score) for r in received] == [2, 2]
