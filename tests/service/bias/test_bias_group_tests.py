"""Group findings over a real server: on balanced digits no group is flagged for its share
alone and nothing claims under-representation; a digit kept at 3% of the rows is still found;
the interval, p-value and significance travel on the wire, into the JSON and onto the page."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bias_support import VAE, call, chunked
from numpy.typing import NDArray
from server_harness import ServerThread

from latentwatch.bias.accumulator import BiasReport
from latentwatch.bias.groups import binomial_test, wilson_interval
from latentwatch.client.client import LatentwatchClient
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.reports.bias_html import render_html
from latentwatch.reports.bias_json import ReportContext, report_to_dict
from latentwatch.reports.summary import summary
from latentwatch.wire.bias import report_from_response

CONTEXT = ReportContext(VAE, "1", "digits", created_at="2026-01-02T03:04:05Z")


def _kept_at(y: NDArray, digit: int, share: float, seed: int = 0) -> NDArray[np.int64]:
    """Positions of every row but `digit`'s, and of enough of its rows to make `share`."""
    others = np.flatnonzero(y != digit)
    n_keep = int(round(share * len(others) / (1 - share)))
    kept = np.random.default_rng(seed).choice(np.flatnonzero(y == digit), n_keep, replace=False)
    return np.sort(np.concatenate([others, kept]))


def _check_served_group_math(report: BiasReport, n_rows: int) -> None:
    """The served test and interval are the direct computation on the served counts."""
    n_sparse = round(0.1 * n_rows)
    for g in report.groups:
        p = g.n_rows / n_rows
        assert g.p_value == pytest.approx(binomial_test(g.n_sparse_rows, n_sparse, p), rel=1e-9)
        low, high = wilson_interval(g.n_sparse_rows, n_sparse, 0.95)
        assert (g.ratio_low, g.ratio_high) == pytest.approx((low / p, high / p))
        assert g.flagged == (g.significant and not 0.8 <= g.representation_ratio <= 1.25)


def test_balanced_digits_claim_no_under_representation(
    target: str, digits: tuple[NDArray, NDArray]
) -> None:
    x, y = digits
    with LatentwatchClient(target) as client:
        report = client.bias_report(VAE, x, groups={"digit": [str(d) for d in y]},
                                    chunk_rows=500)
    _check_served_group_math(report, len(y))
    assert all(g.share == pytest.approx(0.1, abs=0.005) for g in report.groups)
    # Digits do sit in latent regions of different density: what is flagged is significant,
    # and said as what was measured, never as a claim about how many rows a digit has.
    flagged = [g for g in report.groups if g.flagged]
    assert flagged and all(g.significant for g in flagged)
    sentences = summary(report)
    assert not any("represented" in s for s in sentences)
    assert any(s.startswith("A larger share of group digit=") for s in sentences)
    # About 180 rows a digit: against an even split of the ten digits, no share finding, and the
    # sentence that says so names its baseline rather than claiming anything of representation.
    assert not any(g.share_flagged for g in report.groups)
    assert all(g.even_share == 0.1 and 0.9 < g.share_ratio < 1.1 for g in report.groups)
    assert any(s.startswith("No group has fewer or more rows than an even split")
               for s in sentences)
    assert any("not the population's shares" in s for s in sentences)


def test_equal_groups_unrelated_to_the_data_are_not_flagged_for_chance_shares(
    target: str, digits: tuple[NDArray, NDArray]
) -> None:
    x, y = digits
    # Ten equal groups drawn at random, unrelated to the images: any departure of their sparse
    # shares from 10% is chance. Before, each one outside [0.8, 1.25] was flagged.
    batch = np.random.default_rng(7).permutation(np.arange(len(y)) % 10)
    with LatentwatchClient(target) as client:
        report = client.bias_report(VAE, x, groups={"batch": [f"b{b}" for b in batch]},
                                    chunk_rows=500)
    _check_served_group_math(report, len(y))
    assert sum(not 0.8 <= g.representation_ratio <= 1.25 for g in report.groups) >= 2
    assert not any(g.flagged or g.significant for g in report.groups)
    assert not any("represented" in s for s in summary(report))


def test_a_digit_kept_at_three_percent_is_found(
    digits_server: ServerThread, digits: tuple[NDArray, NDArray]
) -> None:
    x, y = digits
    keep = _kept_at(y, 4, 0.03)
    labels = [str(d) for d in y[keep]]
    reply = call(digits_server, chunked(VAE, x[keep], 600, groups={"digit": labels}))
    assert reply.significance_level == 0.05
    wire = {g.value: g for g in reply.groups}
    assert wire["4"].share == pytest.approx(0.03, abs=0.001)
    assert wire["4"].significant and wire["4"].flagged and wire["4"].p_value < 1e-6
    assert wire["4"].ratio_low > 1.25 and wire["4"].n_sparse_rows > 0
    report = report_from_response(reply)
    found = next(g for g in report.groups if g.value == "4")
    assert (found.ratio_low, found.ratio_high, found.p_value) == (
        wire["4"].ratio_low, wire["4"].ratio_high, wire["4"].p_value)
    sentence = next(s for s in summary(report) if "group digit=4 " in s)
    assert sentence.startswith("A larger share of group digit=4 lies in the sparsest latent "
                               "regions (")
    assert "significant at 0.05 after Benjamini-Hochberg over 10 groups" in sentence
    # Found by its row count too, whatever its latent cluster does: fewer rows than an even split.
    assert [g.value for g in reply.groups if g.share_flagged] == ["4"]
    assert wire["4"].even_share == 0.1 and wire["4"].share_ratio_high < 0.5
    assert found.fewer_rows
    assert any(s.startswith("Group digit=4 has fewer rows than an even split: it holds 3.0% of "
                            "the rows") for s in summary(report))
    document = report_to_dict(report, CONTEXT)
    assert document["significance_level"] == 0.05
    entry = next(g for g in document["groups"] if g["value"] == "4")
    assert entry["significant"] and entry["flagged"] and entry["p_value"] == found.p_value
    assert entry["ratio_low"] == found.ratio_low and entry["n_sparse_rows"] == found.n_sparse_rows
    page = render_html(report, CONTEXT)
    assert "95% interval" in page and "<th>p-value</th>" in page


def test_the_significance_level_is_an_option_of_the_request(
    digits_server: ServerThread, digits: tuple[NDArray, NDArray], tmp_path: Path
) -> None:
    x, y = digits
    groups = {"digit": [str(d) for d in y]}
    strict = call(digits_server, chunked(
        VAE, x, 900, groups=groups, options=pb.BiasReportOptions(significance_level=1e-12)))
    default = call(digits_server, chunked(VAE, x, 900, groups=groups))
    assert strict.significance_level == 1e-12
    assert sum(g.significant for g in strict.groups) < sum(g.significant for g in default.groups)
    # 99.9999999999% intervals are wider than 95% ones.
    for s, d in zip(strict.groups, default.groups, strict=True):
        assert s.ratio_low <= d.ratio_low and s.ratio_high >= d.ratio_high
    assert report_from_response(strict).options.significance_level == 1e-12
