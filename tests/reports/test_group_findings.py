"""Group findings in the report layer: the JSON fields, the summary's words when nothing is
flagged, and the intervals drawn on the group chart and listed in the page's table."""

from __future__ import annotations

import re

import numpy as np
import pytest

from latentwatch.bias.accumulator import BiasAccumulator, BiasReport
from latentwatch.bias.options import BiasOptions
from latentwatch.reports.bias_html import render_html
from latentwatch.reports.bias_json import ReportContext, report_to_dict
from latentwatch.reports.charts import group_chart
from latentwatch.reports.summary import summary

CONTEXT = ReportContext("m", "1", "rows.csv", created_at="2026-01-02T03:04:05Z")


def _report(groups: dict[str, list[str]], mu: np.ndarray) -> BiasReport:
    accumulator = BiasAccumulator(mu.shape[1], max_rows=100_000)
    accumulator.add(mu, groups=groups)
    return accumulator.finish(BiasOptions(), None)


def test_json_carries_interval_p_value_significance_and_the_level() -> None:
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(2000, 3))
    mu[:100] *= 4  # group "far": 5% of rows, in the tails
    report = _report({"g": ["far"] * 100 + ["near"] * 1900}, mu)
    document = report_to_dict(report, CONTEXT)
    assert document["significance_level"] == 0.05
    for entry, g in zip(document["groups"], report.groups, strict=True):
        assert entry["n_sparse_rows"] == g.n_sparse_rows
        assert entry["ratio_low"] == g.ratio_low and entry["ratio_high"] == g.ratio_high
        assert entry["p_value"] == g.p_value and entry["significant"] == g.significant
    far = next(e for e in document["groups"] if e["value"] == "far")
    assert far["flagged"] and far["significant"] and far["ratio_low"] > 1.25


def test_nothing_flagged_says_so_and_counts_the_ratios_chance_put_outside_the_band() -> None:
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(600, 3))
    labels = [f"b{v}" for v in rng.permutation(np.arange(600) % 6)]  # 100 rows, 10 sparse each
    report = _report({"batch": labels}, mu)
    loose = sum(g.outside_band for g in report.groups)
    assert loose >= 1 and not any(g.flagged for g in report.groups)
    sentences = summary(report)
    assert any(s.startswith("No group's share of the sparsest latent regions differs") and
               "95% interval" in s and "not significant at 0.05" in s for s in sentences)
    assert any(s.startswith(f"{loose} group") and "does not tell apart from chance" in s
               for s in sentences)


def test_the_group_chart_draws_each_ratio_interval_and_the_page_lists_them() -> None:
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(1500, 3))
    mu[:150] *= 4
    report = _report({"g": ["far"] * 150 + ["mid"] * 600 + ["near"] * 750}, mu)
    chart = group_chart(report.groups)
    thick = re.findall(r'<line x1="([\d.]+)" y1="([\d.]+)" x2="([\d.]+)" y2="([\d.]+)" '
                       r'stroke="#1f2937" stroke-width="1.5"/>', chart)
    # Per group a whisker and its two caps; then the axis at 1.
    assert len(thick) == 3 * len(report.groups) + 1
    for i in range(len(report.groups)):
        whisker, cap_low, cap_high = thick[3 * i: 3 * i + 3]
        assert whisker[1] == whisker[3]  # horizontal
        assert (cap_low[0], cap_high[0]) == (whisker[0], whisker[2])
        assert float(whisker[0]) < float(whisker[2])
    assert "more of the group in the sparse regions" in chart
    assert "under-represented" not in chart
    page = render_html(report, CONTEXT)
    far = next(g for g in report.groups if g.value == "far")
    assert f"{far.ratio_low:.3g} to {far.ratio_high:.3g}" in page
    assert "<th>p-value</th>" in page and "Whiskers: the ratio's 95% interval" in page
    assert "under-represented" not in page
    assert far.flagged and far.representation_ratio == pytest.approx(far.sparse_share / far.share)
