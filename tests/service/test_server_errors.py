"""The real server over a real channel: status codes of bad requests, and request metrics."""

from __future__ import annotations

import urllib.request
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from served import SERVICE, rows_for, stub, vae
from server_harness import MAX_REQUEST_ROWS, RepoUnderTest, ServerThread

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.tensors import to_tensor

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
        "INVALID_ARGUMENT", "1 value is NaN, the first in row 1, column 1",
    ),
    "Inf": (
        lambda f, n: dict(input=to_tensor(np.full((2, f), np.inf, np.float32))),
        "INVALID_ARGUMENT", "values are infinite, the first in row 0, column 0",
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
    f, n = m.n_features, m.scoring.calibration.size
    fields, code, text = BAD_SCORE_REQUESTS[case]
    good = dict(model_name=name, input=to_tensor(rows_for(m, 2)))
    bad = {k: v for k, v in {**good, **fields(f, n)}.items() if v is not None}
    with pytest.raises(grpc.RpcError) as caught:
        stub(server).Score(pb.ScoreRequest(**bad), timeout=10)
    assert caught.value.code().name == code
    assert text.format(f=f, nbytes=8 * f) in caught.value.details(), caught.value.details()
    assert len(stub(server).Score(pb.ScoreRequest(**good), timeout=10).score) == 2


def _one_extreme(f: int, value: float, dtype: type, x: np.ndarray) -> np.ndarray:
    x = x.astype(dtype)
    x[1, f - 1] = value
    return x


# case -> (the value in row 1 of the last column, its datatype, the message ({c}: the column)).
# Where the preprocessing clips (images), a finite value in the FP32 range is in range.
EXTREME_VALUES: dict[str, tuple[float, type, str]] = {
    "1e300 FP64": (1e300, np.float64, "1 value is beyond the FP32 range (|x| > 3.4e38), the "
                   "first in row 1, column {c}: 1e+300"),
    "1e30 FP32": (1e30, np.float32, "1 value is far outside the training range (more than 1e+06 "
                  "standard deviations of the training data from it, in 1 rows), the first in "
                  "row 1, column {c}: 1e+30"),
    "NaN": (np.nan, np.float32, "1 value is NaN, the first in row 1, column {c}; every value "
            "must be finite"),
    "-inf FP64": (-np.inf, np.float64, "1 value is infinite, the first in row 1, column {c}; "
                  "every value must be finite"),
}


@pytest.mark.parametrize("case", list(EXTREME_VALUES))
def test_extreme_values_are_refused_with_what_is_wrong_and_the_server_keeps_serving(
    case: str, server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    name = vae(repo_under_test)
    m = repo_under_test.manifest(name)
    value, dtype, text = EXTREME_VALUES[case]
    good = rows_for(m, 2)
    bad = _one_extreme(m.n_features, value, dtype, good)
    clipped = m.input.preprocessing.clip is not None and np.isfinite(value) and value < 1e38
    with warnings.catch_warnings(record=True) as caught_warnings:
        warnings.simplefilter("always")
        for call in (
            lambda: stub(server).Score(pb.ScoreRequest(model_name=name, input=to_tensor(bad)),
                                       timeout=10).score,
            lambda: stub(server).Encode(pb.EncodeRequest(model_name=name, input=to_tensor(bad)),
                                        timeout=10).latent_mu,
        ):
            if clipped:  # images clip to [0, 1]: a huge pixel is a white pixel
                call()
                continue
            with pytest.raises(grpc.RpcError) as caught:
                call()
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert text.format(c=m.n_features - 1) in caught.value.details(), \
                caught.value.details()
    assert not [w for w in caught_warnings if issubclass(w.category, RuntimeWarning)]
    reply = stub(server).Score(pb.ScoreRequest(model_name=name, input=to_tensor(good)), timeout=10)
    assert len(reply.score) == 2 and np.isfinite(reply.score).all()


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
    kind = dict(version, kind=m.require_scoring().default_score_kind)
    assert value("latentwatch_requests_total", method="Score", code="OK") >= 8
    assert value("latentwatch_requests_total", method="Score", code="INVALID_ARGUMENT") >= 1
    assert value("latentwatch_request_duration_seconds_count", method="Score", code="OK") >= 8
    assert value("latentwatch_rows_scored_total", **version) >= 40
    assert value("latentwatch_outliers_total", **kind) >= 8
    n_p = value("latentwatch_p_value_count", **kind)
    assert n_p >= 40 and value("latentwatch_p_value_bucket", le="1.0", **kind) == n_p
    # Score histograms have negative buckets (one symmetric scale): no _count or _sum.
    assert value("latentwatch_score_bucket", le="+Inf", **kind) == n_p
    assert value("latentwatch_batch_rows_sum", **version) >= 40
    assert value("latentwatch_queue_rows", **version) == 0
    assert value("latentwatch_model_loaded", **version) == 1
    assert value("latentwatch_ready") == 1
    assert value("latentwatch_inflight_requests") == 0
    providers = [dict(k[1]) for k in samples if k[0] == "latentwatch_execution_provider_info"]
    assert any(p["model"] == name and p["provider"].endswith("ExecutionProvider")
               for p in providers)


def test_score_stream_counts_each_request_and_health_checks_are_counted(
    server: ServerThread, repo_under_test: RepoUnderTest
) -> None:
    registry = server.running.metrics.registry

    def count(method: str, code: str = "OK") -> float:
        labels = {"method": method, "code": code}
        return registry.get_sample_value("latentwatch_requests_total", labels) or 0.0

    name = vae(repo_under_test)
    x = rows_for(repo_under_test.manifest(name), 3)
    requests = [pb.ScoreRequest(model_name=name, input=to_tensor(x)) for _ in range(3)]
    stream_ok, stream_bad = count("ScoreStream"), count("ScoreStream", "INVALID_ARGUMENT")
    assert len(list(stub(server).ScoreStream(iter(requests), timeout=20))) == 3
    assert count("ScoreStream") == stream_ok + 3  # one request per scored message
    bad = pb.ScoreRequest(model_name=name, input=to_tensor(x[:, :-1]))
    with pytest.raises(grpc.RpcError):
        list(stub(server).ScoreStream(iter([bad]), timeout=20))
    assert count("ScoreStream", "INVALID_ARGUMENT") == stream_bad + 1
    checks = count("Check")
    health = health_pb2_grpc.HealthStub(server.channel)
    health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert count("Check") == checks + 1
