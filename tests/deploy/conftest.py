"""Fixtures of the deploy tests: a real Prometheus (Debian's package) scraping a real server.

`observed` serves the exported digits models plus one refused version, has Prometheus scrape
its metrics port every second with deploy/prometheus/rules.yml loaded, sends Score traffic
(normal digits, and noise that the models flag), a few failing calls and bias reports, waits
until Prometheus has scraped the final counts, and keeps what was sent to compare with.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from server_harness import ServerThread, server_settings

from latentwatch.client import LatentwatchClient
from latentwatch.data.sources import load_source
from latentwatch.errors import LatentwatchError
from latentwatch.repository.layout import SCORER_FILE

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
MODELS = ("digits-vae", "digits-ae")
REFUSED = ("digits-vae", "2")
DRIFTING = "digits-vae"  # its bias report gets half noise rows
SCRAPE_INTERVAL_S = 1
ROUNDS = 6  # of Score traffic, spread over a few scrapes so that rates have two samples


def _tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").exists() else None)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package prometheus; `make prometheus`)")
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return _tool("promtool")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Prometheus:
    """A Prometheus process and its HTTP API."""

    def __init__(self, binary: str, workdir: Path, target: str) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = workdir / "prometheus.yml"
        config.write_text(json.dumps({  # JSON is YAML
            "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s",
                       "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "latentwatch",
                                "static_configs": [{"targets": [target]}]}],
        }))
        self.log = (workdir / "prometheus.log").open("w")
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        self._wait_ready(workdir / "prometheus.log")

    def _wait_ready(self, log: Path, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready in {timeout_s} s: {log.read_text()[-2000:]}")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer, else AssertionError."""
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as err:  # 400 for a query that does not parse
            body = json.load(err)
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query's vector, at Unix time `at` (default now):
        [{"metric": {...}, "value": [t, "v"]}, ...]."""
        params = {"query": promql} if at is None else {"query": promql, "time": f"{at:.3f}"}
        data = self.api("query", **params)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def wait_for(self, promql: str, expected: float, timeout_s: float = 30) -> None:
        """Until the scalar sum of `promql` equals `expected` (the last scrape has the counts)."""
        deadline = time.monotonic() + timeout_s
        got: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            got = self.query(promql)
            if got and float(got[0]["value"][1]) == expected:
                return
            time.sleep(0.25)
        raise AssertionError(f"{promql}: expected {expected}, Prometheus has {got}")

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.log.close()


@dataclass
class Sent:
    """What the traffic was, from the caller's side."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, code) -> calls
    rows: Counter[tuple[str, str]] = field(default_factory=Counter)  # (model, version) -> rows
    # (model, version, kind) -> rows flagged (is_outlier at the manifest's default alpha)
    outliers: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    drift: dict[tuple[str, str], float] = field(default_factory=dict)  # of the last report


@dataclass
class Observed:
    server: ServerThread
    prometheus: Prometheus
    sent: Sent
    metrics_url: str
    # Unix time when Prometheus had scraped the last of the traffic: rates over a minute are
    # queried at it, since other tests may run between the traffic and these checks.
    at: float
    refused: tuple[str, str] = REFUSED  # (model, version) refused at load


def _repo_with_a_refused_version(model_repo: Path, root: Path) -> Path:
    repo = root / "repo"
    shutil.copytree(model_repo, repo)
    refused = repo / REFUSED[0] / REFUSED[1]
    shutil.copytree(repo / REFUSED[0] / "1", refused)
    with (refused / SCORER_FILE).open("ab") as f:
        f.write(b"\0")  # its sha256 no longer matches: refused at load, the others serve
    return repo


def _send_traffic(target: str, sent: Sent) -> None:
    digits = load_source("digits")
    rng = np.random.default_rng(0)
    with LatentwatchClient(target) as client:
        for i in range(ROUNDS):
            for model in MODELS:
                normal = digits.X[rng.choice(digits.n_rows, 40, replace=False)]
                noise = rng.uniform(0, 16, size=(8 + i, digits.n_features)).astype(np.float32)
                result = client.score(model, np.concatenate([normal, noise]))
                version = result.model_version
                sent.calls["Score", "OK"] += 1
                sent.rows[model, version] += len(result)
                sent.outliers[model, version, result.score_kind] += int(result.is_outlier.sum())
            try:
                client.score("no-such-model", digits.X[:2])
            except LatentwatchError:
                sent.calls["Score", "NOT_FOUND"] += 1
            time.sleep(SCRAPE_INTERVAL_S / 2)
        # Digits as trained on (digits-ae: drift below the alert's 0.25), and half noise
        # (digits-vae: far above); the digit is a group column.
        for model in MODELS:
            rows = digits.X[:400].copy()
            if model == DRIFTING:
                rows[::2] = rng.uniform(0, 16, size=rows[::2].shape)
            report = client.bias_report(model, rows, groups={"digit": digits.y[:400].tolist()})
            sent.calls["BiasReport", "OK"] += 1
            assert report.drift is not None, f"{model} has no training reference"
            version = next(v for m, v in sent.rows if m == model)  # the one it serves
            sent.drift[model, version] = float(report.drift.overall)


@pytest.fixture(scope="session")
def observed(model_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    binary = _tool("prometheus")
    root = tmp_path_factory.mktemp("observed")
    repo = _repo_with_a_refused_version(model_repo, root)
    server = ServerThread(server_settings(repo))
    prometheus = None
    try:
        metrics = f"127.0.0.1:{server.running.metrics_port}"
        prometheus = Prometheus(binary, root, metrics)
        prometheus.wait_for('sum(up{job="latentwatch"})', 1)
        sent = Sent()
        _send_traffic(f"127.0.0.1:{server.running.port}", sent)
        prometheus.wait_for('sum(latentwatch_requests_total{method="BiasReport"})',
                            sent.calls["BiasReport", "OK"])
        prometheus.wait_for("sum(latentwatch_rows_scored_total)", sum(sent.rows.values()))
        yield Observed(server, prometheus, sent, f"http://{metrics}/metrics", time.time())
    finally:
        if prometheus is not None:
            prometheus.close()
        server.close()
