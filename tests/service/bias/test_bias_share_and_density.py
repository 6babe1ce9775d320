"""Share findings and the density option over a real server and channel (synthetic repository):
the GroupStats share fields on the wire both ways, and `density` reaching the server."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from bias_support import PLAIN, assert_same_report, call, chunked, direct, normal_rows
from server_harness import ServerThread

from latentwatch.bias.groups import GroupCounts, even_split_tests
from latentwatch.bias.options import BiasOptions
from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import InvalidInput
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.bias import report_from_response, response_from_report

SHARE_FIELDS = ("even_share", "share_ratio", "share_ratio_low", "share_ratio_high",
                "share_p_value", "share_significant", "share_flagged")


def _labels(rows_per_label: list[int], seed: int = 0) -> list[str]:
    labels = np.repeat(np.arange(len(rows_per_label)), rows_per_label)
    np.random.default_rng(seed).shuffle(labels)
    return [str(v) for v in labels]


def test_a_label_kept_at_three_percent_is_flagged_below_an_even_split_on_the_wire(
    wide_server: ServerThread,
) -> None:
    rows = [180] * 8 + [50, 180]
    labels = _labels(rows)
    x = normal_rows(len(labels), seed=3)
    reply = call(wide_server, chunked(PLAIN, x, 500, groups={"label": labels}))
    assert [g.value for g in reply.groups] == [str(v) for v in range(10)]
    expected = even_split_tests(
        [GroupCounts("label", str(v), r, 0, float(r)) for v, r in enumerate(rows)],
        len(labels), 0.05,
    )
    for g, e in zip(reply.groups, expected, strict=True):
        assert g.n_rows == rows[int(g.value)]
        assert [getattr(g, f) for f in SHARE_FIELDS] == pytest.approx(
            [getattr(e, f) for f in SHARE_FIELDS])
    assert [g.value for g in reply.groups if g.share_flagged] == ["8"]
    rare = reply.groups[8]
    assert rare.share_ratio == pytest.approx(50 / 1670 / 0.1) and rare.share_ratio_high < 0.5
    # Both directions of latentwatch.wire.bias keep every share field.
    report = report_from_response(reply)
    assert report.groups[8].fewer_rows and not any(g.fewer_rows for g in report.groups[:8])
    again = response_from_report(report, reply.model_name, reply.model_version)
    assert [[getattr(g, f) for f in SHARE_FIELDS] for g in again.groups] == [
        [getattr(g, f) for f in SHARE_FIELDS] for g in reply.groups]


def test_balanced_labels_give_no_share_finding_on_the_wire(wide_server: ServerThread) -> None:
    labels = _labels([178, 182, 177, 183, 181, 182, 181, 179, 174, 180])  # digits' bincount
    x = normal_rows(len(labels), seed=4)
    reply = call(wide_server, chunked(PLAIN, x, 600, groups={"label": labels}))
    assert all(g.even_share == 0.1 and 0.9 < g.share_ratio < 1.1 for g in reply.groups)
    assert not any(g.share_significant or g.share_flagged for g in reply.groups)


def test_the_density_option_reaches_the_server_and_is_echoed(wide_server: ServerThread) -> None:
    x = normal_rows(600, seed=6)
    default = call(wide_server, chunked(PLAIN, x, 300))
    knn = call(wide_server, chunked(PLAIN, x, 300, options=pb.BiasReportOptions(density="knn")))
    histogram = call(wide_server, chunked(PLAIN, x, 300,
                                          options=pb.BiasReportOptions(density="histogram")))
    assert (default.density, knn.density, histogram.density) == ("knn", "knn", "histogram")
    reports = {name: report_from_response(reply) for name, reply in
               (("default", default), ("knn", knn), ("histogram", histogram))}
    np.testing.assert_array_equal(reports["default"].log_density, reports["knn"].log_density)
    assert not np.allclose(reports["histogram"].log_density, reports["knn"].log_density)
    for name in ("knn", "histogram"):
        expected, _ = direct(wide_server, PLAIN, x, BiasOptions(density=name))
        assert_same_report(reports[name], expected)
    # The client's option takes the same path.
    with LatentwatchClient(f"127.0.0.1:{wide_server.running.port}") as client:
        served = client.bias_report(PLAIN, x, density="histogram", chunk_rows=200)
    assert served.options.density == "histogram"
    np.testing.assert_allclose(served.log_density, reports["histogram"].log_density, rtol=1e-6,
                               atol=1e-6)


def test_an_unknown_density_is_invalid_argument(wide_server: ServerThread) -> None:
    x = normal_rows(50, seed=7)
    with pytest.raises(grpc.RpcError) as caught:
        call(wide_server, chunked(PLAIN, x, 50, options=pb.BiasReportOptions(density="kde")))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "density: expected one of knn, histogram, got 'kde'" in caught.value.details()
    with LatentwatchClient(f"127.0.0.1:{wide_server.running.port}") as client, \
            pytest.raises(InvalidInput, match="density: expected one of knn, histogram"):
        client.bias_report(PLAIN, x, density="Histogram")
