"""Share findings in the report layer: rows against an even split of a column's values, worded
as that (never "under-represented"), in the summary, the JSON and the page's groups table."""

from __future__ import annotations

import json

import numpy as np

from latentwatch.bias.accumulator import BiasAccumulator, BiasReport
from latentwatch.bias.options import BiasOptions
from latentwatch.reports.bias_html import render_html
from latentwatch.reports.bias_json import ReportContext, report_to_dict
from latentwatch.reports.summary import summary

CONTEXT = ReportContext("m", "1", "rows.csv", created_at="2026-01-02T03:04:05Z")


def _report(rows_per_label: list[int], far: int | None = None, seed: int = 0) -> BiasReport:
    """Labels 0..9 with these row counts in random order; label `far` sits in the tails."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(rows_per_label)), rows_per_label)
    rng.shuffle(labels)
    mu = rng.normal(size=(len(labels), 3))
    if far is not None:
        mu[labels == far] *= 4
    accumulator = BiasAccumulator(3, max_rows=100_000)
    accumulator.add(mu, groups={"label": [str(v) for v in labels]})
    return accumulator.finish(BiasOptions(density="histogram"), None)


def test_balanced_labels_claim_no_share_finding_and_name_the_baseline() -> None:
    report = _report([178, 182, 177, 183, 181, 182, 181, 179, 174, 180])  # digits' bincount
    assert not any(g.share_flagged for g in report.groups)
    sentences = summary(report)
    assert ("Row counts are compared with an even split of each column's values, not the "
            "population's shares.") in sentences
    none = [s for s in sentences if s.startswith("No group has fewer or more rows")]
    assert len(none) == 1 and "not significant at 0.05" in none[0]
    assert not any("fewer rows than an even split:" in s for s in sentences)
    assert not any("represented" in s for s in sentences)


def test_a_label_kept_at_three_percent_is_said_to_have_fewer_rows_than_an_even_split() -> None:
    report = _report([180] * 8 + [50, 180], far=8)
    sentences = summary(report)
    fewer = [s for s in sentences if s.startswith("Group label=8 has fewer rows")]
    assert len(fewer) == 1
    # The README's example, word for word.
    assert fewer == [
        "Group label=8 has fewer rows than an even split: it holds 3.0% of the rows (50 of "
        "1,670), against 10.0% for an even split of the 10 groups of label: ratio 0.30, 95% "
        "interval [0.23, 0.39], p = 3.9e-28, significant at 0.05 after Benjamini-Hochberg over "
        "10 groups."
    ]
    # The latent finding for the same group keeps its own words, in its own sentence.
    latent = [s for s in sentences if s.startswith("A larger share of group label=8 lies in the "
                                                   "sparsest latent regions")]
    assert len(latent) == 1 and "even split" not in latent[0]
    assert not any("represented" in s for s in sentences)


def test_json_and_page_carry_the_share_fields_and_the_baseline() -> None:
    report = _report([180] * 8 + [50, 180], far=8)
    document = json.loads(json.dumps(report_to_dict(report, CONTEXT), allow_nan=False))
    assert document["density"] == "histogram"
    assert document["share_baseline"] == ("an even split of each column's values, not the "
                                          "population's shares")
    for entry, g in zip(document["groups"], report.groups, strict=True):
        assert entry["even_share"] == 0.1
        assert entry["share_ratio"] == g.share_ratio
        assert (entry["share_ratio_low"], entry["share_ratio_high"]) == (g.share_ratio_low,
                                                                         g.share_ratio_high)
        assert entry["share_p_value"] == g.share_p_value
        assert entry["share_significant"] == g.share_significant
        assert entry["share_flagged"] == (g.value == "8")
    page = render_html(report, CONTEXT)
    assert "<th>vs even split</th>" in page
    rare = next(g for g in report.groups if g.value == "8")
    assert (f'<td class="warn">{rare.share_ratio:.2f} [{rare.share_ratio_low:.2f}, '
            f'{rare.share_ratio_high:.2f}] fewer</td>') in page
    assert page.count(" fewer</td>") == 1 and " more</td>" not in page
    assert "The baseline is an even split of each column&#x27;s values" in page
    assert "under-represented" not in page
