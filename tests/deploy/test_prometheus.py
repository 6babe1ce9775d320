"""deploy/prometheus: the rules pass promtool's checks and unit tests, the PrometheusRule is
generated from them, and a real Prometheus scraping a real server under traffic reads back what
was sent, with every rule loaded and healthy."""

from __future__ import annotations

import importlib.util
import subprocess
import time
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

if TYPE_CHECKING:
    from conftest import Observed  # tests/deploy/conftest.py

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules.yml"
RULES_TEST = PROMETHEUS_DIR / "rules_test.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "k8s" / "base" / "prometheus-rule.yaml"


def _rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _promtool(promtool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True,
                          timeout=120, check=False)


def _load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_promtool_checks_the_rules(promtool: str) -> None:
    checked = _promtool(promtool, "check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in checked.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    tested = _promtool(promtool, "test", "rules", RULES_TEST.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_every_alert_has_a_case_that_fires_and_one_that_does_not() -> None:
    fires: set[str] = set()
    quiet: set[str] = set()
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in _alerts()}
    assert names - fires == set(), "alerts without a firing case"
    assert names - quiet == set(), "alerts without a quiet case"


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    for rule in _alerts():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert set(rule["annotations"]) == {"summary", "description", "runbook"}, rule["alert"]


def test_the_prometheus_rule_is_generated_from_the_rules() -> None:
    script = _load_script(PROMETHEUS_DIR / "to_prometheus_rule.py")
    assert PROMETHEUS_RULE.read_text() == script.render(), (
        "deploy/k8s/base/prometheus-rule.yaml is stale: run deploy/prometheus/to_prometheus_rule.py"
    )
    resource = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert resource["kind"] == "PrometheusRule"
    assert resource["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_the_example_config_passes_promtool(promtool: str) -> None:
    checked = _promtool(promtool, "check", "config", "prometheus.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_promtool_accepts_the_live_exposition(observed: Observed, promtool: str) -> None:
    """After scores, failures, bias reports and a refused version: every family present."""
    text = urllib.request.urlopen(observed.metrics_url, timeout=5).read().decode()
    for name in ("latentwatch_bias_drift", "latentwatch_bias_worst_group_ratio",
                 "latentwatch_max_queue_rows", "latentwatch_outliers_total"):
        assert f"\n{name}" in text, name
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                             text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _by(result: list[dict[str, Any]], *labels: str) -> dict[tuple[str, ...], float]:
    return {tuple(r["metric"][k] for k in labels): float(r["value"][1]) for r in result}


def test_request_counts_and_rates_read_back(observed: Observed) -> None:
    prom, sent = observed.prometheus, observed.sent
    counts = _by(prom.query(
        'sum by (method, code) (latentwatch_requests_total{method=~"Score|BiasReport"})'),
        "method", "code")
    assert counts == {key: float(n) for key, n in sent.calls.items()}
    rates = _by(prom.query("sum by (method) (rate(latentwatch_requests_total[1m]))",
                           observed.at), "method")
    assert rates[("Score",)] > 0
    errors = prom.query('job_method:latentwatch_request_errors:ratio_rate5m{method="Score"}',
                        observed.at)
    assert errors and 0 < float(errors[0]["value"][1]) < 1, errors


def test_rows_and_outlier_counts_read_back(observed: Observed) -> None:
    prom, sent = observed.prometheus, observed.sent
    rows = _by(prom.query("latentwatch_rows_scored_total"), "model", "version")
    assert {k: v for k, v in rows.items() if v} == {k: float(n) for k, n in sent.rows.items()}
    outliers = _by(prom.query("latentwatch_outliers_total"), "model", "version", "kind")
    assert outliers == {k: float(n) for k, n in sent.outliers.items()}
    assert sum(sent.outliers.values()) > 0, "the noise rows should have been flagged"
    rate = _by(prom.query("sum by (model) (rate(latentwatch_outliers_total[1m]))", observed.at),
               "model")
    assert all(v > 0 for v in rate.values()) and len(rate) == 2, rate


def test_drift_reads_back_as_reported(observed: Observed) -> None:
    drift = _by(observed.prometheus.query("latentwatch_bias_drift"), "model", "version")
    assert drift == observed.sent.drift


def test_the_exchangeability_martingale_reads_back_per_served_version(
    observed: Observed,
) -> None:
    """The gauge of each served version, as Prometheus has it, is what the server exposes
    (the traffic stopped, so the martingale no longer moves)."""
    name = "latentwatch_exchangeability_log10_martingale"
    got = _by(observed.prometheus.query(name), "model", "version")
    assert set(got) == set(observed.sent.rows), got
    with urllib.request.urlopen(observed.metrics_url, timeout=10) as r:
        text = r.read().decode()
    exposed = {(s.labels["model"], s.labels["version"]): s.value
               for family in text_string_to_metric_families(text)
               for s in family.samples if s.name == name}
    assert got == pytest.approx(exposed, rel=1e-12) and all(v >= 0 for v in got.values())


def test_model_state_reads_back(observed: Observed) -> None:
    prom = observed.prometheus
    loaded = _by(prom.query("latentwatch_model_loaded"), "model", "version")
    assert loaded == {("digits-vae", "1"): 1.0, ("digits-ae", "1"): 1.0, observed.refused: 0.0}
    assert _by(prom.query("latentwatch_versions_refused"), "job") == {("latentwatch",): 1.0}
    assert _by(prom.query("latentwatch_ready"), "job") == {("latentwatch",): 1.0}
    saturation = prom.query("instance_model_version:latentwatch_queue_rows:saturation")
    assert len(saturation) == 2 and all(float(s["value"][1]) == 0 for s in saturation), saturation


def _rules_evaluated(observed: Observed, timeout_s: float = 20) -> list[dict[str, Any]]:
    """The rules Prometheus reports, once each has been evaluated at least once."""
    deadline = time.monotonic() + timeout_s
    while True:
        groups = observed.prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if all(not r["lastEvaluation"].startswith("0001") for r in rules) or (
                time.monotonic() > deadline):
            return rules
        time.sleep(0.5)


def test_prometheus_loads_every_rule_and_each_is_healthy(observed: Observed) -> None:
    rules = _rules_evaluated(observed)
    loaded = {r["name"]: r for r in rules}
    expected = {r.get("alert") or r["record"] for r in _rules()}
    assert set(loaded) == expected
    unhealthy = {name: r.get("lastError") for name, r in loaded.items() if r["health"] != "ok"}
    assert unhealthy == {}


def test_alerts_follow_the_live_metrics(observed: Observed) -> None:
    """Drift above 0.25 fires at once; the refused version raises its alerts (pending for the
    minute they hold, then firing); a scraped, ready server raises no scrape or readiness
    alert."""
    assert max(observed.sent.drift.values()) > 0.25, observed.sent.drift
    expected = {k for k, v in observed.sent.drift.items() if v > 0.25}
    deadline = time.monotonic() + 15
    while True:
        alerts = observed.prometheus.api("alerts")["alerts"]
        active = {(a["labels"]["alertname"], a["state"]) for a in alerts}
        drifting = {(a["labels"]["model"], a["labels"]["version"]) for a in alerts
                    if a["labels"]["alertname"] == "LatentwatchDrift" and a["state"] == "firing"}
        # One replica: the version it refused is served by none.
        unavailable = {(a["labels"]["model"], a["labels"]["version"]) for a in alerts
                       if a["labels"]["alertname"] == "LatentwatchModelVersionUnavailable"}
        refused = any(name == "LatentwatchVersionRefused" for name, _ in active)
        done = refused and drifting == expected and unavailable == {observed.refused}
        if done or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert drifting == expected, alerts
    assert min(observed.sent.drift.values()) < 0.25, "one model should stay below the threshold"
    assert refused, active
    assert unavailable == {observed.refused}, alerts
    names = {name for name, _ in active}
    assert names.isdisjoint({"LatentwatchTargetDown", "LatentwatchAbsent",
                             "LatentwatchNotReady"}), active


def test_scrape_alerts_match_the_example_job() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (job,) = [c["job_name"] for c in config["scrape_configs"]]
    for rule in _alerts():
        if "up{" in rule["expr"]:
            assert f'up{{job="{job}"}}' in rule["expr"], rule["alert"]


@pytest.mark.parametrize("rule", _alerts(), ids=lambda r: r["alert"])
def test_every_alert_names_metrics_the_server_exports(rule: dict[str, Any],
                                                     observed: Observed) -> None:
    """Each latentwatch_* name an alert's expression (through its recording rules) reads is a
    series Prometheus has from the server: a renamed metric fails here, not silently."""
    records = {r["record"]: r["expr"] for r in _rules() if "record" in r}
    expr = rule["expr"]
    for name, body in records.items():
        if name in expr:
            expr += " " + body
    names = {word for word in _words(expr) if word.startswith("latentwatch_") or word == "up"}
    assert names, expr
    for name in sorted(names):
        assert observed.prometheus.query(f"count({name})"), (
            f"{rule['alert']} reads {name}, which the server does not export")


def _words(expr: str) -> set[str]:
    """The identifiers of a PromQL expression (metric, label and rule names, functions)."""
    word, words = "", set()
    for ch in expr + " ":
        if ch.isalnum() or ch in "_:":
            word += ch
        else:
            words.add(word)
            word = ""
    return words
