"""Writes deploy/k8s/base/prometheus-rule.yaml: the groups of rules.yml in a PrometheusRule.

rules.yml is the one home of the rules; the Prometheus Operator loads the same groups from the
PrometheusRule resource. Run `python deploy/prometheus/to_prometheus_rule.py` after editing
rules.yml (`--stdout` prints instead of writing); tests/deploy/test_prometheus.py checks that the
committed file is this script's output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
RULES = HERE / "rules.yml"
OUT = HERE.parent / "k8s" / "base" / "prometheus-rule.yaml"
HEADER = (
    "# Generated from deploy/prometheus/rules.yml by deploy/prometheus/to_prometheus_rule.py:\n"
    "# edit rules.yml and run the script, not this file. Prometheus Operators that select rules\n"
    "# by label (kube-prometheus-stack: release=<its release>) need that label added here by an\n"
    "# overlay.\n"
)


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL) as literal blocks, so the expressions read as in rules.yml."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def prometheus_rule(rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "latentwatch",
            "labels": {"app.kubernetes.io/name": "latentwatch"},
        },
        "spec": {"groups": rules["groups"]},
    }


def render(rules_path: Path = RULES) -> str:
    rules = yaml.safe_load(rules_path.read_text())
    body = yaml.dump(
        prometheus_rule(rules), Dumper=_Dumper, sort_keys=False, width=100,
        default_flow_style=False, allow_unicode=True,
    )
    return HEADER + body


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
