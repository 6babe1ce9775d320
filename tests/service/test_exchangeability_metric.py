"""latentwatch_exchangeability_log10_martingale over a real server: flat while the rows sent
are exchangeable with the calibration rows, past the alert threshold soon after they drift."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from repo_builder import build_version
from served import stub
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.tensors import to_tensor

GAUGE = "latentwatch_exchangeability_log10_martingale"
ALERT = 2.0  # deploy/prometheus/rules.yml: LatentwatchExchangeabilityLost


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A tabular AE whose calibration is 999 standard normal rows (repo_builder)."""
    root = tmp_path_factory.mktemp("exchangeability_repo")
    build_version(root, "tab", "1", kind="ae", n_features=5, latent_dim=2, seed=1,
                  n_calibration=999)
    build_version(root, "tab", "2", kind="ae", n_features=5, latent_dim=2, seed=2,
                  n_calibration=999)
    running = ServerThread(server_settings(root))
    yield running
    running.close()


def gauge(server: ServerThread, version: str) -> float:
    url = f"http://127.0.0.1:{server.running.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == GAUGE and s.labels == {"model": "tab", "version": version}:
                return float(s.value)
    raise AssertionError(f"no {GAUGE} for tab {version}")


def score(server: ServerThread, version: str, rows: np.ndarray) -> None:
    request = pb.ScoreRequest(model_name="tab", model_version=version, input=to_tensor(rows))
    stub(server).Score(request, timeout=20)


def test_the_gauge_stays_flat_on_exchangeable_rows_and_rises_past_the_alert_under_drift(
    server: ServerThread,
) -> None:
    rng = np.random.default_rng(11)
    assert gauge(server, "1") == 0.0
    peak = 0.0
    for _ in range(20):  # 20,000 rows like the calibration rows, scraped as they go
        score(server, "1", rng.normal(size=(1000, 5)).astype(np.float32))
        peak = max(peak, gauge(server, "1"))
    assert peak < ALERT
    drifted = 3.0 * rng.normal(size=(100, 5)).astype(np.float32)  # wider rows: higher scores
    score(server, "1", drifted)
    after = gauge(server, "1")
    print(f"{GAUGE}: peak {peak:.3f} over 20000 exchangeable rows, {after:.2f} after 100 "
          "drifted rows")
    assert after > ALERT
    assert gauge(server, "2") == 0.0  # per version: the other one saw none of it
