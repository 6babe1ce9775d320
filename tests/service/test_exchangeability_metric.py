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


def test_queued_p_values_are_bet_on_in_order_at_scrape_or_when_the_queue_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from latentwatch.scoring.martingale import SimpleJumper, calibration_slack
    from latentwatch.service.exchangeability import Exchangeability

    rng = np.random.default_rng(3)
    parts = [rng.uniform(0, 0.2, size=300) for _ in range(4)]
    monitor = Exchangeability()
    for p in parts[:2]:
        monitor.observe(p, 999)
    assert monitor.martingale.n_seen == 0  # nothing is computed on the serving path
    reference = SimpleJumper()
    for p in parts[:2]:
        reference.update(p, calibration_slack(999))
    assert monitor.log10_cusum() == pytest.approx(reference.log10_cusum, abs=1e-9)

    monkeypatch.setattr(Exchangeability, "MAX_PENDING_ROWS", 500)
    monitor.observe(parts[2], np.full(300, 99))  # per-row calibration sizes (groups)
    assert monitor.martingale.n_seen == 600
    monitor.observe(parts[3], 999)  # 600 queued: past the limit, drained at once
    assert monitor.martingale.n_seen == 1200
    reference.update(parts[2], calibration_slack(99))
    reference.update(parts[3], calibration_slack(999))
    assert monitor.log10_cusum() == pytest.approx(reference.log10_cusum, abs=1e-9)
