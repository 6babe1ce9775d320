"""Builds deploy/grafana/latentwatch.json, the latentwatch dashboard, with the Grafana
foundation SDK (grafana-foundation-sdk, pinned in the dev extra).

Edit this script and run `python deploy/grafana/build_dashboard.py` (`--stdout` prints instead of
writing); tests/deploy/test_grafana.py checks that the committed JSON is its output and runs
every panel's query against a real Prometheus scraping a real server. Metric names and labels:
service/metrics.py and the README's Metrics table.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import (
    common as common_b,
)
from grafana_foundation_sdk.builders import (
    dashboard as dash_b,
)
from grafana_foundation_sdk.builders import (
    gauge,
    heatmap,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common, dashboard
from grafana_foundation_sdk.models import heatmap as heatmap_m
from grafana_foundation_sdk.models import prometheus as prometheus_m

OUT = Path(__file__).resolve().parent / "latentwatch.json"
UID = "latentwatch"
DATASOURCE = dashboard.DataSourceRef(type_val="prometheus", uid="${datasource}")
MODEL = 'model=~"$model"'
# The calls whose handling time is scoring work (a health Watch or a BiasReport stream lasts as
# long as its caller wants); the same set the latency alert of deploy/prometheus/rules.yml uses.
SCORING_METHODS = 'method=~"Score|ScoreStream|Encode|ModelInfer|ModelStreamInfer"'
# process_* carry no latentwatch prefix: keep the series of latentwatch targets only.
OF_LATENTWATCH = "and on (job, instance) latentwatch_ready"


def query(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False,
          heatmap_format: bool = False) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DATASOURCE)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant().format(prometheus_m.PromQueryFormat.TABLE)
    if heatmap_format:
        q = q.format(prometheus_m.PromQueryFormat.HEATMAP)
    return q


def thresholds(*steps: tuple[float | None, str]) -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dashboard.ThresholdsMode.ABSOLUTE)
        .steps([dashboard.Threshold(value=value, color=color) for value, color in steps])
    )


def series(title: str, description: str, unit: str, *targets: prometheus.Dataquery,
           width: int = 8) -> timeseries.Panel:
    panel = (
        timeseries.Panel().title(title).description(description).unit(unit)
        .datasource(DATASOURCE).span(width).height(8)
        .legend(common_b.VizLegendOptions().show_legend(True)
                .display_mode(common.LegendDisplayMode.LIST)
                .placement(common.LegendPlacement.BOTTOM))
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def distribution(title: str, description: str, metric: str, unit: str) -> heatmap.Panel:
    """A heatmap of one histogram's buckets, summed over the selected models and versions."""
    expr = f"sum by (le) (increase({metric}_bucket{{{MODEL}}}[$__rate_interval]))"
    return (
        heatmap.Panel().title(title).description(description).datasource(DATASOURCE)
        .span(8).height(8)
        .with_target(query(expr, "{{le}}", heatmap_format=True))
        .calculate(False)
        .color(heatmap.HeatmapColorOptions().mode(heatmap_m.HeatmapColorMode.SCHEME)
               .scheme("Oranges").scale(heatmap_m.HeatmapColorScale.EXPONENTIAL).exponent(0.5))
        .y_axis(heatmap.YAxisConfig().unit(unit))
        .cell_values(heatmap.CellValues().unit("short"))
    )


def bias_gauge(title: str, description: str, metric: str, minimum: float, maximum: float,
               steps: dash_b.ThresholdsConfig) -> gauge.Panel:
    return (
        gauge.Panel().title(title).description(description).datasource(DATASOURCE)
        .span(6).height(7).min(minimum).max(maximum).decimals(3).thresholds(steps)
        .with_target(query(f"{metric}{{{MODEL}}}", "{{model}} {{version}}"))
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]))
    )


def model_table(title: str, description: str, expr: str,
                mappings: list[dashboard.ValueMapping] | None = None) -> table.Panel:
    panel = (
        table.Panel().title(title).description(description).datasource(DATASOURCE)
        .span(8).height(7).with_target(query(expr, instant=True))
    )
    return panel.mappings(mappings) if mappings else panel


def traffic_panels() -> list[timeseries.Panel]:
    calls = "sum by (method) (rate(latentwatch_requests_total[$__rate_interval]))"
    failed = 'rate(latentwatch_requests_total{code!="OK"}[$__rate_interval])'
    return [
        series("Requests", "Calls per second by method (a ScoreStream counts each message)",
               "reqps", query(calls, "{{method}}")),
        series("Errors", "Calls per second that ended with a code other than OK",
               "reqps", query(f"sum by (method, code) ({failed})", "{{method}} {{code}}")),
        series("Error ratio", "Share of calls not OK, by method (alert: above 5% for 5 minutes)",
               "percentunit", query(f"sum by (method) ({failed}) / {calls}", "{{method}}")),
    ]


def latency_panels() -> list[timeseries.Panel | heatmap.Panel]:
    buckets = (f"sum by (le) (rate(latentwatch_request_duration_seconds_bucket"
               f"{{{SCORING_METHODS}}}[$__rate_interval]))")
    percentiles = [
        query(f"histogram_quantile({q}, {buckets})", f"p{round(q * 100)}", ref=ref)
        for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))
    ]
    return [
        series("Latency percentiles", "Handling time of the scoring calls (alert: p99 above "
               "0.5 s for 10 minutes)", "s", *percentiles),
        series("In-flight calls", "Calls (and ScoreStream messages) being handled now", "short",
               query("sum by (instance) (latentwatch_inflight_requests)", "{{instance}}")),
        distribution("Batch sizes", "Rows per ONNX Runtime run of the scorer",
                     "latentwatch_batch_rows", "short"),
    ]


def scoring_panels() -> list[timeseries.Panel | heatmap.Panel]:
    per_row = (f"sum by (model, version) (rate(latentwatch_outliers_total{{{MODEL}}}"
               f"[$__rate_interval])) / sum by (model, version) (rate("
               f"latentwatch_rows_scored_total{{{MODEL}}}[$__rate_interval]))")
    p_share = (f'sum by (model, version) (rate(latentwatch_p_value_bucket{{{MODEL},le="0.05"}}'
               f"[$__rate_interval])) / sum by (model, version) (rate(latentwatch_p_value_bucket"
               f'{{{MODEL},le="+Inf"}}[$__rate_interval]))')
    return [
        series("Rows scored", "Rows per second through the scorer graph", "rowsps",
               query(f"sum by (model, version) (rate(latentwatch_rows_scored_total{{{MODEL}}}"
                     "[$__rate_interval]))", "{{model}} {{version}}")),
        series("Queue depth", "Rows waiting for a batch, and the limit of one batcher "
               "(max_queue_rows; alert: above 80% for 5 minutes)", "short",
               query(f"sum by (model, version) (latentwatch_queue_rows{{{MODEL}}})",
                     "{{model}} {{version}}"),
               query("max(latentwatch_max_queue_rows)", "limit", ref="B")),
        series("Outlier rate", "Share of rows flagged at the manifest's default alpha (alert: "
               "above 10% and three times the 6-hour share)", "percentunit",
               query(per_row, "{{model}} {{version}}")),
        series("p-values at or below 0.05", "Share of rows with p <= 0.05: near 0.05 on traffic "
               "like the calibration data, more under drift or anomalies", "percentunit",
               query(p_share, "{{model}} {{version}}")),
        distribution("Score distribution", "Scores per row on a symmetric log scale (each kind "
                     "in its own units; higher: more anomalous)", "latentwatch_score", "short"),
        distribution("p-value distribution", "Conformal p-values per row: uniform on normal "
                     "traffic", "latentwatch_p_value", "short"),
        series("Exchangeability (log10 martingale)", "A conformal test martingale over the "
               "p-values each version served, log10 over its running minimum: near 0 while "
               "traffic is like the calibration data, rising under drift (alert: above 2, odds "
               "of 100 to 1, for 5 minutes)", "short",
               query(f"max by (model, version) (latentwatch_exchangeability_log10_martingale"
                     f"{{{MODEL}}})", "{{model}} {{version}}")),
    ]


def bias_panels() -> list[gauge.Panel | stat.Panel]:
    return [
        bias_gauge("Drift (PSI)", "Mean PSI of the last bias report's latent means against the "
                   "training reference: below 0.1 none, to 0.25 moderate, above significant",
                   "latentwatch_bias_drift", 0, 1,
                   thresholds((None, "green"), (0.1, "yellow"), (0.25, "red"))),
        bias_gauge("Effective sample fraction", "Effective sample size of the last report's "
                   "resampling weights over its rows (low: a few rows dominate)",
                   "latentwatch_bias_effective_sample_fraction", 0, 1,
                   thresholds((None, "red"), (0.2, "yellow"), (0.5, "green"))),
        bias_gauge("Worst group ratio", "Representation ratio farthest from 1 in the last report "
                   "with groups (flagged outside 0.8 to 1.25 when significant)",
                   "latentwatch_bias_worst_group_ratio", 0, 2,
                   thresholds((None, "red"), (0.8, "green"), (1.25, "red"))),
        stat.Panel().title("Last bias report").description("Time since the last bias report")
        .datasource(DATASOURCE).span(6).height(7).unit("s")
        .with_target(query(f"time() - latentwatch_bias_report_timestamp_seconds{{{MODEL}}}",
                           "{{model}} {{version}}")),
    ]


def state_panels() -> list[table.Panel | stat.Panel | timeseries.Panel]:
    loaded: list[dashboard.ValueMapping] = [dashboard.ValueMap(options={
        "0": dashboard.ValueMappingResult(text="refused", color="red"),
        "1": dashboard.ValueMappingResult(text="loaded", color="green"),
    })]
    return [
        model_table("Model versions", "Versions found in the repository: loaded, or refused at "
                    "load (the reason is in the log)",
                    f"latentwatch_model_loaded{{{MODEL}}}", loaded),
        model_table("Execution providers", "ONNX Runtime execution provider of each loaded "
                    "version", f"latentwatch_execution_provider_info{{{MODEL}}}"),
        stat.Panel().title("Ready and refused").description(
            "Replicas ready (latentwatch_ready) and versions refused, over all replicas")
        .datasource(DATASOURCE).span(8).height(7)
        .with_target(query("sum(latentwatch_ready)", "ready replicas"))
        .with_target(query("sum(latentwatch_versions_refused)", "refused versions", ref="B")),
        series("Memory", "Resident memory of each replica", "bytes",
               query(f"process_resident_memory_bytes {OF_LATENTWATCH}", "{{instance}}"),
               width=12),
        series("CPU", "CPU seconds per second of each replica", "short",
               query(f"rate(process_cpu_seconds_total[$__rate_interval]) {OF_LATENTWATCH}",
                     "{{instance}}"), width=12),
    ]


def build() -> dash_b.Dashboard:
    board = (
        dash_b.Dashboard("latentwatch").uid(UID).tags(["latentwatch"])
        .description("Traffic, latency, scoring, bias and model state of latentwatch servers")
        .time("now-1h", "now").refresh("30s").timezone("browser")
        .with_variable(dash_b.DatasourceVariable("datasource").label("Data source")
                       .type("prometheus"))
        .with_variable(dash_b.QueryVariable("model").label("Model").datasource(DATASOURCE)
                       .query("label_values(latentwatch_model_loaded, model)")
                       .refresh(dashboard.VariableRefresh.ON_TIME_RANGE_CHANGED)
                       .sort(dashboard.VariableSort.ALPHABETICAL_ASC)
                       .multi(True).include_all(True).all_value(".*"))
    )
    sections: list[tuple[str, Sequence[Any]]] = [  # Any: the SDK's panel builders
        ("Traffic", traffic_panels()),
        ("Latency and batches", latency_panels()),
        ("Scoring", scoring_panels()),
        ("Bias reports", bias_panels()),
        ("Models and replicas", state_panels()),
    ]
    panel_id = 1
    for title, panels in sections:
        board = board.with_row(dash_b.Row(title).id(panel_id))
        panel_id += 1
        for panel in panels:
            board = board.with_panel(panel.id(panel_id))
            panel_id += 1
    return board


def render() -> str:
    return json.dumps(build().build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdout", action="store_true", help="print instead of writing the file")
    args = parser.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
    else:
        OUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
