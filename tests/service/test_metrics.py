"""/metrics of a real server after scoring: fixed buckets that aggregate across versions and
models, the score kind as a label, outliers at the manifest's alpha, refused versions, process."""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families
from repo_builder import build_version
from served import rows_for, stub
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.repository.manifest import Manifest
from latentwatch.wire.tensors import to_tensor

# The documented buckets (README, Metrics): fixed, short, the same for every series.
P_VALUE_LE = ["0.001", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "0.75", "1.0",
              "+Inf"]
_POSITIVE = ["0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1.0", "2.0", "5.0", "10.0", "20.0",
             "50.0", "100.0", "200.0", "500.0", "1000.0", "2000.0", "5000.0", "10000.0"]
SCORE_LE = [f"-{b}" for b in reversed(_POSITIVE)] + _POSITIVE + ["+Inf"]
SERVED = [("img", "1"), ("img", "2"), ("tab", "1")]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """img versions 1 and 2 (different calibrations), a tabular AE, and img 3 refused."""
    root = tmp_path_factory.mktemp("metrics_repo")
    build_version(root, "img", "1", seed=0)
    build_version(root, "img", "2", seed=5, n_calibration=199)
    build_version(root, "tab", "1", kind="ae", n_features=5, latent_dim=2, seed=1)
    with (build_version(root, "img", "3") / "scorer.onnx").open("ab") as f:
        f.write(b"\0")  # its sha256 no longer matches: refused at load
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(repo))
    yield running
    running.close()


def scrape(server: ServerThread) -> str:
    url = f"http://127.0.0.1:{server.running.metrics_port}/metrics"
    return str(urllib.request.urlopen(url, timeout=5).read().decode())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, sample: str, **labels: str) -> float:
    return samples(text).get((sample, frozenset(labels.items())), 0.0)


def manifest(repo: Path, name: str, version: str) -> Manifest:
    return Manifest.read(repo / name / version)


def score(server: ServerThread, repo: Path, name: str, version: str, n: int,
          **fields: object) -> pb.ScoreResponse:
    x = rows_for(manifest(repo, name, version), n, seed=3)
    request = pb.ScoreRequest(model_name=name, model_version=version, input=to_tensor(x),
                              **fields)  # type: ignore[arg-type]
    return stub(server).Score(request, timeout=20)


def bucket_bounds(text: str, family: str) -> dict[tuple[str, ...], list[str]]:
    """(model, version, kind) -> the series' `le` bounds in exposition order."""
    bounds: dict[tuple[str, ...], list[str]] = {}
    for metric in text_string_to_metric_families(text):
        for s in metric.samples:
            if s.name == f"{family}_bucket":
                key = (s.labels["model"], s.labels["version"], s.labels.get("kind", ""))
                bounds.setdefault(key, []).append(s.labels["le"])
    return bounds


def test_score_and_p_value_buckets_are_fixed_and_the_same_for_every_version_and_model(
    server: ServerThread, repo: Path
) -> None:
    for name, version in SERVED:
        score(server, repo, name, version, 7)
    text = scrape(server)
    for family, expected in (("latentwatch_score", SCORE_LE), ("latentwatch_p_value", P_VALUE_LE)):
        bounds = bucket_bounds(text, family)
        assert len({tuple(b) for b in bounds.values()}) == 1, bounds  # one set of buckets
        assert all(b == expected for b in bounds.values())
        for name, version in SERVED:
            default = manifest(repo, name, version).require_scoring().default_score_kind
            assert (name, version, default) in bounds, (family, name, version)
    # A panel can sum a kind across versions: the buckets add up to the rows of both.
    default = manifest(repo, "img", "1").require_scoring().default_score_kind
    total = sum(value(text, "latentwatch_score_bucket", model="img", version=v, kind=default,
                      le="+Inf") for v in ("1", "2"))
    assert total >= 14


def test_the_kind_a_request_asks_for_is_a_label_and_the_help_says_what_is_observed(
    server: ServerThread, repo: Path
) -> None:
    before = value(scrape(server), "latentwatch_p_value_count", model="img", version="1",
                   kind="recon_error")
    score(server, repo, "img", "1", 6, score_kind="recon_error", score_kinds=["kl"])
    text = scrape(server)
    labels = dict(model="img", version="1")
    assert value(text, "latentwatch_p_value_count", **labels, kind="recon_error") >= before + 6
    for kind in ("recon_error", "kl"):  # computed for the batch: its scores are observed
        assert value(text, "latentwatch_score_bucket", **labels, kind=kind, le="+Inf") >= 6
    help_text = {f.name: f.documentation for f in text_string_to_metric_families(text)}
    assert "kind" in help_text["latentwatch_score"]
    assert "p-value" in help_text["latentwatch_p_value"]
    assert "default alpha" in help_text["latentwatch_outliers"]


def test_outliers_are_counted_at_the_manifests_alpha_whatever_alpha_the_request_used(
    server: ServerThread, repo: Path
) -> None:
    m = manifest(repo, "img", "2")
    labels = dict(model="img", version="2", kind=m.require_scoring().default_score_kind)
    default_alpha = m.require_scoring().calibration.default_alpha
    text = scrape(server)
    at_default = value(text, "latentwatch_outliers_total", **labels)
    at_request = value(text, "latentwatch_outliers_at_request_alpha_total", **labels)
    x = rows_for(m, 40, seed=3)
    x[:3] *= 100  # certain outliers at any alpha
    reply = stub(server).Score(pb.ScoreRequest(
        model_name="img", model_version="2", input=to_tensor(x), alpha=0.5), timeout=20)
    p = np.asarray(reply.p_value)
    flagged_at_default = int(np.count_nonzero(p <= default_alpha))
    flagged_at_request = int(np.count_nonzero(reply.is_outlier))
    assert flagged_at_request > flagged_at_default >= 3  # the two counts tell alphas apart
    text = scrape(server)
    assert value(text, "latentwatch_outliers_total", **labels) == at_default + flagged_at_default
    assert value(text, "latentwatch_outliers_at_request_alpha_total", **labels) == (
        at_request + flagged_at_request
    )


def test_a_refused_version_is_counted_while_the_others_serve_and_ready_stays_1(
    server: ServerThread,
) -> None:
    text = scrape(server)
    assert value(text, "latentwatch_versions_refused") == 1
    assert value(text, "latentwatch_model_loaded", model="img", version="3") == 0
    assert value(text, "latentwatch_model_loaded", model="img", version="2") == 1
    assert value(text, "latentwatch_ready") == 1
    health = health_pb2_grpc.HealthStub(server.channel)
    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING


def test_ready_is_0_while_the_server_does_not_serve(repo: Path) -> None:
    server = ServerThread(server_settings(repo, require_gpu=True))
    try:
        if server.running.core.ready:
            pytest.skip("the versions run on a GPU here: require_gpu is met")
        health = health_pb2_grpc.HealthStub(server.channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        text = scrape(server)
        assert value(text, "latentwatch_ready") == 0
        assert value(text, "latentwatch_versions_refused") == 1
    finally:
        server.close()


def test_process_metrics_are_exported(server: ServerThread) -> None:
    text = scrape(server)
    assert value(text, "process_resident_memory_bytes") > 1e6
    assert value(text, "process_cpu_seconds_total") > 0
    assert value(text, "process_open_fds") > 0
    start = value(text, "process_start_time_seconds")
    assert time.time() - 24 * 3600 < start <= time.time()


def test_promtool_accepts_the_exposition(server: ServerThread, repo: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; `make prometheus`)")
    for name, version in SERVED:
        score(server, repo, name, version, 3)
    checked = subprocess.run([promtool, "check", "metrics"], input=scrape(server),
                             capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr
