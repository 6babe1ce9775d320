"""deploy/grafana: the committed dashboard is the builder's output (Grafana foundation SDK), and
every panel's query, with the dashboard's variables filled in as Grafana would, parses and
returns series from a real Prometheus scraping a real server under traffic."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Observed  # tests/deploy/conftest.py

GRAFANA_DIR = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "latentwatch.json"
RATE_INTERVAL = "1m"  # what $__rate_interval stands for: several 1 s scrapes of the test


def _dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def _panels() -> list[dict[str, Any]]:
    return [p for p in _dashboard()["panels"] if p["type"] != "row"]


def _variables() -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in _dashboard()["templating"]["list"]}


def test_the_dashboard_is_the_builders_output() -> None:
    pytest.importorskip("grafana_foundation_sdk", reason="the dev extra is not installed")
    path = GRAFANA_DIR / "build_dashboard.py"
    spec = importlib.util.spec_from_file_location("build_dashboard", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert DASHBOARD.read_text() == module.render(), (
        "deploy/grafana/latentwatch.json is stale: run deploy/grafana/build_dashboard.py"
    )


def test_datasource_and_model_variables_drive_every_query() -> None:
    variables = _variables()
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    model = variables["model"]
    assert model["type"] == "query" and model["includeAll"] and model["multi"]
    for panel in _panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]


def test_the_panels_cover_what_operators_watch() -> None:
    kinds = {p["title"]: p["type"] for p in _panels()}
    exprs = " ".join(t["expr"] for p in _panels() for t in p["targets"])
    for metric in ("latentwatch_requests_total", "latentwatch_request_duration_seconds_bucket",
                   "latentwatch_batch_rows_bucket", "latentwatch_queue_rows",
                   "latentwatch_outliers_total", "latentwatch_score_bucket",
                   "latentwatch_p_value_bucket", "latentwatch_bias_drift",
                   "latentwatch_execution_provider_info", "latentwatch_model_loaded",
                   "latentwatch_exchangeability_log10_martingale"):
        assert metric in exprs, metric
    assert {kinds["Score distribution"], kinds["p-value distribution"],
            kinds["Batch sizes"]} == {"heatmap"}
    assert kinds["Drift (PSI)"] == "gauge"


def _model_values(observed: Observed) -> list[str]:
    """What Grafana offers for $model: label_values(<metric>, model), then All (allValue)."""
    query = _variables()["model"]["query"]
    assert query.startswith("label_values(") and query.endswith(", model)"), query
    metric = query.removeprefix("label_values(").removesuffix(", model)")
    values = observed.prometheus.api("label/model/values", **{"match[]": metric})
    assert sorted(values) == ["digits-ae", "digits-vae"]
    return [*values, _variables()["model"]["allValue"]]


def _substitute(expr: str, model: str) -> str:
    return expr.replace("$__rate_interval", RATE_INTERVAL).replace("$model", model)


@pytest.mark.parametrize(
    "panel, ref",
    [(p["title"], t["refId"]) for p in _panels() for t in p["targets"]],
)
def test_every_panel_query_returns_series(panel: str, ref: str, observed: Observed) -> None:
    (target,) = [t for p in _panels() if p["title"] == panel
                 for t in p["targets"] if t["refId"] == ref]
    for model in _model_values(observed):
        expr = _substitute(target["expr"], model)
        assert "$" not in expr, expr
        # At the end of the traffic (rates over a minute); an AssertionError if it does not parse.
        result = observed.prometheus.query(expr, observed.at)
        assert result, f"{panel} ({model}): no series for {expr}"
