"""BiasReport over a real server and channel: equal to latentwatch.bias on the encoder's means,
whatever the chunking; groups, ids, options, drift, concurrency and the client."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from bias_support import (
    PLAIN,
    VAE,
    WIDE,
    WIDE_LATENT,
    assert_same_report,
    call,
    chunked,
    direct,
    normal_rows,
    stored_reference,
)
from numpy.typing import NDArray
from server_harness import ServerThread

from latentwatch.bias.options import BiasOptions
from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import InvalidInput
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.wire.bias import report_from_response


def test_digits_report_equals_the_accumulator_on_encoded_means_for_any_chunking(
    digits_server: ServerThread, model_repo: Path, digits: tuple[NDArray, NDArray]
) -> None:
    x, _ = digits
    expected, _ = direct(digits_server, VAE, x, reference=stored_reference(model_repo, VAE))
    for chunk_rows in (len(x), 500, 97):
        reply = call(digits_server, chunked(VAE, x, chunk_rows))
        assert reply.model_name == VAE and reply.n_rows == len(x)
        assert (reply.mode, reply.bins, reply.top_k) == ("max", 10, 20)
        assert reply.log_density.datatype == "FP64" and list(reply.weight.shape) == [len(x)]
        report = report_from_response(reply)
        assert_same_report(report, expected)
        assert report.weight.mean() == pytest.approx(1.0)
        assert report.decoded_sparsest is not None  # digits-vae has a decoder graph


def test_groups_give_one_stats_row_per_value_and_ids_name_the_sparsest_rows(
    digits_server: ServerThread, target: str, model_repo: Path, digits: tuple[NDArray, NDArray]
) -> None:
    x, y = digits
    columns = {"digit": [str(d) for d in y], "parity": ["even" if d % 2 == 0 else "odd" for d in y]}
    ids = [f"img-{i:05d}" for i in np.random.default_rng(1).permutation(len(x))]
    with LatentwatchClient(target) as client:
        report = client.bias_report(VAE, x, ids=ids, groups=columns, chunk_rows=400, top_k=15)
    expected, _ = direct(digits_server, VAE, x, BiasOptions(top_k=15), groups=columns,
                         reference=stored_reference(model_repo, VAE))
    assert_same_report(report, expected)
    assert {(g.column, g.value) for g in report.groups} == (
        {("digit", str(d)) for d in range(10)} | {("parity", "even"), ("parity", "odd")}
    )
    for column in columns:
        stats = [g for g in report.groups if g.column == column]
        assert sum(g.n_rows for g in stats) == len(x)
        assert sum(g.sparse_share for g in stats) == pytest.approx(1.0)
        for g in stats:
            assert g.n_rows == columns[column].count(g.value)
            assert g.representation_ratio == pytest.approx(g.sparse_share / g.share)
            assert g.flagged == (g.significant and not 0.8 <= g.representation_ratio <= 1.25)
            assert g.ratio_low <= g.representation_ratio <= g.ratio_high and 0 < g.p_value <= 1
    ratios = [g.representation_ratio for g in report.groups]
    assert report.worst_group_ratio == max(ratios, key=lambda r: abs(np.log(max(r, 1e-12))))
    assert report.ids == ids
    lowest = np.argsort(report.log_density, kind="stable")[:15]
    assert [report.id_of(int(p)) for p in report.sparsest] == [ids[p] for p in lowest]


def test_options_change_the_weights_and_are_echoed(
    digits_server: ServerThread, model_repo: Path, digits: tuple[NDArray, NDArray]
) -> None:
    x = digits[0][:600]
    default = report_from_response(call(digits_server, chunked(VAE, x, 300)))
    variants = {
        "bins": (pb.BiasReportOptions(bins=4), BiasOptions(bins=4)),
        "alpha": (pb.BiasReportOptions(alpha=0.5), BiasOptions(alpha=0.5)),
        "paper": (pb.BiasReportOptions(mode="paper"), BiasOptions(mode="paper")),
    }
    for name, (wire, options) in variants.items():
        reply = call(digits_server, chunked(VAE, x, 300, options=wire))
        assert (reply.mode, reply.bins, reply.alpha) == (options.mode, options.bins, options.alpha)
        report = report_from_response(reply)
        assert not np.allclose(report.weight, default.weight), name
        expected, _ = direct(digits_server, VAE, x, options, reference=stored_reference(
            model_repo, VAE))
        assert_same_report(report, expected)
    four = call(digits_server, chunked(VAE, x, 600, options=pb.BiasReportOptions(bins=4)))
    assert all(len(h.counts) == 4 and len(h.edges) == 5 for h in four.histograms)


def test_wide_latents_give_finite_results_and_drift_against_the_reference(
    wide_server: ServerThread, wide_repo: Path
) -> None:
    reference = stored_reference(wide_repo, WIDE)
    assert reference is not None and reference.latent_dim == WIDE_LATENT
    same = normal_rows(2000, seed=5)  # the reference's distribution
    shifted = same + 1.5
    results = {}
    for label, x in (("same", same), ("shifted", shifted)):
        for chunk_rows in (2000, 700, 333):  # above and below the 512-row in-flight window
            report = report_from_response(call(wide_server, chunked(WIDE, x, chunk_rows)))
            expected, _ = direct(wide_server, WIDE, x, reference=reference)
            assert_same_report(report, expected)
        assert np.isfinite(report.log_density).all() and np.isfinite(report.weight).all()
        assert report.weight.mean() == pytest.approx(1.0)
        assert 1.0 <= report.effective_sample_size <= len(x)
        assert report.reference is not None
        assert report.reference.share.shape == (WIDE_LATENT, reference.share.shape[1])
        assert report.drift is not None and report.drift.psi.shape == (WIDE_LATENT,)
        results[label] = report.drift
    assert results["same"].level == "none"
    assert results["shifted"].overall > 10 * results["same"].overall
    assert results["shifted"].level == "significant"


def test_concurrent_reports_get_their_own_results(wide_server: ServerThread) -> None:
    sets = [normal_rows(900, seed=s) * (1 + s) for s in range(4)]
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda x: call(wide_server, chunked(PLAIN, x, 200)), sets))
    for x, reply in zip(sets, replies, strict=True):
        expected, _ = direct(wide_server, PLAIN, x)
        assert_same_report(report_from_response(reply), expected)


def test_client_options_and_progress(target: str, digits: tuple[NDArray, NDArray]) -> None:
    x = digits[0][:500].reshape(500, 8, 8)  # images are accepted as for Score
    seen: list[tuple[int, int]] = []
    with LatentwatchClient(target) as client:
        report = client.bias_report(VAE, x, bins=6, mode="max", chunk_rows=200,
                                    progress=lambda sent, total: seen.append((sent, total)))
        assert seen == [(200, 500), (400, 500), (500, 500)]
        assert (report.options.bins, report.options.mode, report.n_rows) == (6, "max", 500)
        assert report.ids is None and report.id_of(int(report.sparsest[0])) == str(
            report.sparsest[0])
        with pytest.raises(InvalidInput, match="ids: 3 given for 500 rows"):
            client.bias_report(VAE, x, ids=["a", "b", "c"])
        with pytest.raises(InvalidInput, match="bins"):
            client.bias_report(VAE, x, bins=0)
        with pytest.raises(InvalidInput, match="no rows"):
            client.bias_report(VAE, x[:0])
