"""Prometheus metrics on their own port, from a dedicated registry.

The hot path only touches plain counters and numpy bucket arrays with one writer, the event
loop (request metrics, and score metrics once per batch from service/batch_scoring.py); a custom
collector turns them into metric families when Prometheus scrapes. No locks, no per-row loops:
the exchangeability martingale, which must bet on each p-value in turn, queues the served
p-values and bets on them when it is scraped (Exchangeability).

Every histogram has fixed buckets, the same for every model, version and score kind, so panels
can sum them across versions; the README's Metrics table lists them. The process's own metrics
(memory, CPU, open file descriptors, start time) come from prometheus_client's ProcessCollector.
"""

from __future__ import annotations

import logging
import ssl
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from latentwatch.bias.accumulator import BiasReport
from latentwatch.service.exchangeability import Exchangeability
from latentwatch.service.metrics_http import HttpLimits, MetricsHttpServer

log = logging.getLogger(__name__)

DURATION_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
BATCH_ROW_BUCKETS = tuple(float(2**i) for i in range(0, 17, 2))  # 1, 4, 16, ... 65536
P_VALUE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
# Scores of different kinds and models live on different scales, some negative (log scores of
# the second stage, Gaussian likelihoods): one symmetric log scale, 1-2-5 per decade from 0.01 to
# 10^4 on each side, holds them all with the same bounds. (-0.01, 0.01] is "about zero".
_POSITIVE_SCORE_BUCKETS = (
    *(float(f"{m}e{e}") for e in range(-2, 4) for m in (1, 2, 5)), 1e4
)
SCORE_BUCKETS = (*(-b for b in reversed(_POSITIVE_SCORE_BUCKETS)), *_POSITIVE_SCORE_BUCKETS)


class Histogram:
    """Bucket counts for one writer; `le` buckets as Prometheus defines them (value <= bound)."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(float(b) for b in bounds)
        self._bounds = np.asarray(self.bounds)
        self.counts = np.zeros(len(self.bounds) + 1, dtype=np.int64)  # last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def observe_many(self, values: NDArray) -> None:
        index = np.searchsorted(self._bounds, values, "left")  # NaN lands above every bound
        self.counts += np.bincount(index, minlength=self.counts.shape[0])
        total = float(values.sum())
        if total == total:  # a NaN would poison the sum for good
            self.sum += total

    def add_to(self, family: HistogramMetricFamily, labels: list[str]) -> None:
        cumulative = np.cumsum(self.counts)  # a snapshot, so buckets stay monotonic
        buckets = [(repr(b), float(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", float(cumulative[-1])))
        family.add_metric(labels, buckets, self.sum)


@dataclass(frozen=True)
class BiasGauges:
    """What the last bias report of a version left in the gauges (replaced whole, never torn)."""

    effective_sample_size: float
    effective_sample_fraction: float
    worst_group_ratio: float | None  # None: the report had no groups
    drift: float | None  # None: the version has no training reference
    rows: int
    timestamp_s: float  # Unix time the report finished


class VersionMetrics:
    """Per model version; written on the event loop: score metrics once per batch, outliers once
    per request, bias metrics once per report. Score kinds are the version's (a bounded set)."""

    def __init__(self) -> None:
        self.rows_scored = 0
        # kind -> rows flagged at the manifest's default alpha / at the alpha each request used
        self.outliers: dict[str, int] = {}
        self.outliers_at_request_alpha: dict[str, int] = {}
        self.batch_rows = Histogram(BATCH_ROW_BUCKETS)
        self.score: dict[str, Histogram] = {}  # kind -> scores on SCORE_BUCKETS
        self.p_value: dict[str, Histogram] = {}  # kind -> p-values on P_VALUE_BUCKETS
        self.queued_rows: Callable[[], int] = lambda: 0  # read at scrape time
        self.bias_rows = 0
        self.bias: BiasGauges | None = None
        self.exchangeability = Exchangeability()

    def observe_served(
        self, p_values: NDArray[np.float64], calibration_rows: int | NDArray[np.int64]
    ) -> None:
        """One request's p-values, as returned, for the exchangeability martingale."""
        self.exchangeability.observe(p_values, calibration_rows)

    def observe_scores(self, kind: str, scores: NDArray[np.float64]) -> None:
        histogram = self.score.get(kind)
        if histogram is None:
            histogram = self.score[kind] = Histogram(SCORE_BUCKETS)
        histogram.observe_many(scores)

    def observe_p_values(self, kind: str, p_values: NDArray[np.float64]) -> None:
        histogram = self.p_value.get(kind)
        if histogram is None:
            histogram = self.p_value[kind] = Histogram(P_VALUE_BUCKETS)
        histogram.observe_many(p_values)

    def observe_outliers(
        self, kind: str, p_values: NDArray[np.float64], default_alpha: float, alpha: float
    ) -> None:
        """One request's rows: flagged at the manifest's alpha, and at the request's own."""
        at_default = int(np.count_nonzero(p_values <= default_alpha))
        at_request = at_default if alpha == default_alpha else int(
            np.count_nonzero(p_values <= alpha)
        )
        self.outliers[kind] = self.outliers.get(kind, 0) + at_default
        self.outliers_at_request_alpha[kind] = (
            self.outliers_at_request_alpha.get(kind, 0) + at_request
        )

    def observe_bias(self, report: BiasReport) -> None:
        self.bias_rows += report.n_rows
        self.bias = BiasGauges(
            effective_sample_size=report.effective_sample_size,
            effective_sample_fraction=report.effective_sample_fraction,
            worst_group_ratio=report.worst_group_ratio,
            drift=None if report.drift is None else report.drift.overall,
            rows=report.n_rows,
            timestamp_s=time.time(),
        )


class ServiceMetrics:
    """Every latentwatch_* metric; also the collector that exposes them."""

    def __init__(
        self, http_limits: HttpLimits | None = None, max_queue_rows: int | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        self.max_queue_rows = max_queue_rows  # the setting, exported for saturation alerts
        self.inflight = 0
        self.ready = False
        self._requests: dict[tuple[str, str], Histogram] = {}
        self._versions: dict[tuple[str, str], VersionMetrics] = {}
        self._loaded: dict[tuple[str, str], bool] = {}
        self._providers: dict[tuple[str, str], str] = {}
        self._http = MetricsHttpServer(self.registry, http_limits)
        self.registry.register(self)
        ProcessCollector(registry=self.registry)  # process_*: memory, CPU, fds, start time

    def observe_request(self, method: str, code: str, duration_s: float) -> None:
        histogram = self._requests.get((method, code))
        if histogram is None:
            histogram = self._requests[(method, code)] = Histogram(DURATION_BUCKETS_S)
        histogram.observe(duration_s)

    def add_version(
        self, model: str, version: str, provider: str, metrics: VersionMetrics | None = None
    ) -> VersionMetrics:
        """Series for a loaded version (fresh ones, or `metrics` again for a version kept)."""
        metrics = VersionMetrics() if metrics is None else metrics
        self._versions[(model, version)] = metrics
        self._loaded[(model, version)] = True
        self._providers[(model, version)] = provider
        return metrics

    def set_refused(self, model: str, version: str) -> None:
        self._loaded[(model, version)] = False

    def remove_version(self, model: str, version: str) -> None:
        """A version unloaded while serving: its series end (a refused one's stay listed)."""
        for table in (self._versions, self._loaded, self._providers):
            table.pop((model, version), None)

    def serve(self, port: int, addr: str, ssl_context: ssl.SSLContext | None = None) -> int:
        """Serves GET /metrics (HTTPS with `ssl_context`) on its own thread and event loop,
        never the gRPC loop, with the limits of service/metrics_http.py; returns the bound port.
        Raises OSError when the address cannot be bound."""
        return self._http.start(port, addr, ssl_context)

    def close(self) -> None:
        """Stops the metrics endpoint and drops its connections; blocking (call it off the
        loop)."""
        self._http.close()

    def describe(self) -> list[Metric]:
        return []  # names are ours alone in this registry: nothing to check at registration

    def collect(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "latentwatch_requests", "RPCs handled, by method and status code",
            labels=["method", "code"],
        )
        durations = HistogramMetricFamily(
            "latentwatch_request_duration_seconds", "RPC handling time in seconds",
            labels=["method", "code"],
        )
        for (method, code), histogram in list(self._requests.items()):
            requests.add_metric([method, code], float(histogram.counts.sum()))
            histogram.add_to(durations, [method, code])
        yield requests
        yield durations
        yield GaugeMetricFamily(
            "latentwatch_inflight_requests", "RPCs being handled now", value=self.inflight
        )
        yield GaugeMetricFamily(
            "latentwatch_ready",
            "1 while the server reports SERVING and scores; 0 while loading, when a required GPU "
            "is missing, while the Triton tier is not ready, and from the start of shutdown "
            "(refused versions: "
            "latentwatch_versions_refused)",
            value=self.ready,
        )
        yield GaugeMetricFamily(
            "latentwatch_versions_refused",
            "Model versions refused at load (their reasons are in the log); the others serve",
            value=sum(not ok for ok in list(self._loaded.values())),
        )
        if self.max_queue_rows is not None:
            yield GaugeMetricFamily(
                "latentwatch_max_queue_rows",
                "Rows each batcher of a version may queue (LATENTWATCH_MAX_QUEUE_ROWS): the limit "
                "latentwatch_queue_rows fills towards",
                value=self.max_queue_rows,
            )
        yield from self._collect_versions()

    def _collect_versions(self) -> Iterable[Metric]:
        mv, mvk = ["model", "version"], ["model", "version", "kind"]
        rows = CounterMetricFamily(
            "latentwatch_rows_scored", "Rows run through the scorer graph", labels=mv
        )
        outliers = CounterMetricFamily(
            "latentwatch_outliers",
            "Rows of Score requests with p <= the manifest's default alpha, whatever alpha the "
            "request used, by the request's p-value kind",
            labels=mvk,
        )
        at_request_alpha = CounterMetricFamily(
            "latentwatch_outliers_at_request_alpha",
            "Rows of Score requests with p <= the alpha each request used (mixes alphas), by the "
            "request's p-value kind",
            labels=mvk,
        )
        queue = GaugeMetricFamily("latentwatch_queue_rows", "Rows waiting for a batch", labels=mv)
        batch = HistogramMetricFamily(
            "latentwatch_batch_rows", "Rows per ONNX Runtime run of the scorer", labels=mv
        )
        score = HistogramMetricFamily(
            "latentwatch_score",
            "Score per row (higher: more anomalous, in the kind's own units), for each kind a "
            "batch computed; fixed buckets on a symmetric log scale, 1-2-5 per decade, 0.01 to "
            "1e4 either side",
            labels=mvk,
        )
        p_value = HistogramMetricFamily(
            "latentwatch_p_value",
            "Conformal p-value per row (0 to 1), for each kind whose p-values a batch computed "
            "(the default kind, and the kind each request scored with); fixed buckets",
            labels=mvk,
        )
        for (model, version), m in list(self._versions.items()):
            labels = [model, version]
            rows.add_metric(labels, m.rows_scored)
            for kind, n in list(m.outliers.items()):
                outliers.add_metric([*labels, kind], n)
            for kind, n in list(m.outliers_at_request_alpha.items()):
                at_request_alpha.add_metric([*labels, kind], n)
            queue.add_metric(labels, m.queued_rows())
            m.batch_rows.add_to(batch, labels)
            for kind, histogram in list(m.score.items()):
                histogram.add_to(score, [*labels, kind])
            for kind, histogram in list(m.p_value.items()):
                histogram.add_to(p_value, [*labels, kind])
        exchangeability = GaugeMetricFamily(
            "latentwatch_exchangeability_log10_martingale",
            "log10 of a conformal test martingale (Simple Jumper, corrected for the finite "
            "calibration) over the p-values Score served, over its running minimum: near 0 while "
            "traffic is exchangeable with the calibration data; above 2 is evidence of drift "
            "at odds of 100 to 1",
            labels=mv,
        )
        for (model, version), m in list(self._versions.items()):
            exchangeability.add_metric([model, version], m.exchangeability.log10_cusum())
        loaded = GaugeMetricFamily(
            "latentwatch_model_loaded", "1 loaded, 0 refused or failed", labels=mv
        )
        for (model, version), ok in list(self._loaded.items()):
            loaded.add_metric([model, version], float(ok))
        provider = InfoMetricFamily(
            "latentwatch_execution_provider", "Execution provider in use", labels=mv
        )
        for (model, version), name in list(self._providers.items()):
            provider.add_metric([model, version], {"provider": name})
        yield from (rows, outliers, at_request_alpha, queue, batch, score, p_value, exchangeability,
                    loaded)
        yield provider
        yield from self._collect_bias()

    def _collect_bias(self) -> Iterable[Metric]:
        mv = ["model", "version"]
        rows_total = CounterMetricFamily(
            "latentwatch_bias_rows", "Rows taken into bias reports", labels=mv
        )
        gauges = {
            "effective_sample_size": GaugeMetricFamily(
                "latentwatch_bias_effective_sample_size",
                "Effective sample size of the resampling weights of the last bias report",
                labels=mv,
            ),
            "effective_sample_fraction": GaugeMetricFamily(
                "latentwatch_bias_effective_sample_fraction",
                "Effective sample size / rows of the last bias report", labels=mv,
            ),
            "worst_group_ratio": GaugeMetricFamily(
                "latentwatch_bias_worst_group_ratio",
                "Representation ratio farthest from 1 in the last bias report with groups",
                labels=mv,
            ),
            "drift": GaugeMetricFamily(
                "latentwatch_bias_drift",
                "Mean PSI of the last bias report's latent means against the training reference",
                labels=mv,
            ),
            "rows": GaugeMetricFamily(
                "latentwatch_bias_report_rows", "Rows in the last bias report", labels=mv
            ),
            "timestamp_s": GaugeMetricFamily(
                "latentwatch_bias_report_timestamp_seconds",
                "Unix time the last bias report finished", labels=mv,
            ),
        }
        for (model, version), m in list(self._versions.items()):
            labels = [model, version]
            rows_total.add_metric(labels, m.bias_rows)
            last = m.bias
            if last is None:
                continue
            for key, family in gauges.items():
                value = getattr(last, key)
                if value is not None:  # no groups or no reference: no sample, not a fake 0
                    family.add_metric(labels, float(value))
        yield rows_total
        yield from gauges.values()
