"""BiasReport over a real server and channel: equal to latentwatch.bias on the encoder's means,
whatever the chunking; groups, ids, options, decoding, drift, errors and metrics."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from numpy.typing import NDArray
from prometheus_client.parser import text_string_to_metric_families
from repo_builder import build_version, reference_decode
from server_harness import ServerThread, server_settings

from latentwatch.bias.density import BiasAccumulator, BiasOptions, BiasReport
from latentwatch.bias.drift import LatentReference
from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import InvalidInput
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.manifest import Manifest, sha256_file
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.repository import find_versions, load_repository
from latentwatch.wire.bias import report_from_response
from latentwatch.wire.tensors import to_tensor

VAE = "digits-vae"
WIDE, PLAIN = "wide-vae", "plain-vae"  # synthetic: Z = 128 with decoder and reference; Z = 3
WIDE_FEATURES, WIDE_LATENT = 16, 128
BIAS_MAX_ROWS = 5000  # the synthetic server's limit
QUEUE_ROWS = 1024  # so the synthetic server keeps at most 512 rows of a report in flight


@pytest.fixture(scope="module")
def digits() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    from latentwatch.data import load_source

    data = load_source("digits")
    assert data.y is not None
    return data.X, data.y  # (1797, 64) values 0..16, (1797,) digit


@pytest.fixture(scope="module")
def digits_server(model_repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(model_repo))
    yield running
    running.close()


@pytest.fixture(scope="module")
def wide_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("bias_repo")
    build_version(repo, WIDE, kind="vae", n_features=WIDE_FEATURES, latent_dim=WIDE_LATENT,
                  with_decoder=True, with_reference=True)
    build_version(repo, PLAIN, kind="vae", n_features=WIDE_FEATURES, latent_dim=3)
    return repo


@pytest.fixture(scope="module")
def wide_server(wide_repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(
        server_settings(wide_repo, bias_max_rows=BIAS_MAX_ROWS, max_queue_rows=QUEUE_ROWS)
    )
    yield running
    running.close()


def stub(server: ServerThread) -> pb_grpc.LatentwatchStub:
    return pb_grpc.LatentwatchStub(server.channel)


def normal_rows(n: int, seed: int = 0) -> NDArray[np.float32]:
    return np.random.default_rng(seed).normal(size=(n, WIDE_FEATURES)).astype(np.float32)


def chunked(
    name: str,
    x: NDArray,
    chunk_rows: int,
    *,
    ids: Sequence[str] | None = None,
    groups: dict[str, Sequence[str]] | None = None,
    options: pb.BiasReportOptions | None = None,
) -> list[pb.BiasReportRequest]:
    requests = []
    for start in range(0, len(x), chunk_rows):
        stop = start + chunk_rows
        request = pb.BiasReportRequest(
            input=to_tensor(x[start:stop]),
            ids=list(ids[start:stop]) if ids is not None else [],
            groups=[pb.GroupColumn(name=k, values=list(v[start:stop]))
                    for k, v in (groups or {}).items()],
        )
        if start == 0:
            request.model_name = name
            if options is not None:
                request.options.CopyFrom(options)
        requests.append(request)
    return requests


def call(server: ServerThread, requests: list[pb.BiasReportRequest]) -> pb.BiasReportResponse:
    return stub(server).BiasReport(iter(requests), timeout=60)


def direct(
    server: ServerThread,
    name: str,
    x: NDArray,
    options: BiasOptions | None = None,
    groups: dict[str, Sequence[str]] | None = None,
    reference: LatentReference | None = None,
) -> tuple[BiasReport, NDArray[np.float32]]:
    """The report latentwatch.bias.density gives on the Encode RPC's means, and those means."""
    reply = stub(server).Encode(pb.EncodeRequest(model_name=name, input=to_tensor(x)), timeout=30)
    mu = np.frombuffer(reply.latent_mu.raw_data, np.float32).reshape(len(x), -1)
    logvar = None
    if reply.HasField("latent_logvar"):
        logvar = np.frombuffer(reply.latent_logvar.raw_data, np.float32).reshape(mu.shape)
    accumulator = BiasAccumulator(mu.shape[1], max_rows=10**6)
    accumulator.add(mu, logvar, groups=groups)
    return accumulator.finish(options or BiasOptions(), reference), mu


def stored_reference(repo: Path, name: str) -> LatentReference | None:
    versions = [p for p in (repo / name).iterdir() if p.name.isdigit()]
    version_dir = max(versions, key=lambda p: int(p.name))
    spec = Manifest.read(version_dir).reference
    return None if spec is None else LatentReference.load(version_dir / spec.file)


def assert_same_report(got: BiasReport, expected: BiasReport) -> None:
    """Equal up to float noise: ONNX Runtime may round a row's means differently in batches of
    other sizes, so positions among exactly tied densities are compared by value."""
    assert (got.n_rows, got.latent_dim) == (expected.n_rows, expected.latent_dim)
    assert got.options == expected.options
    np.testing.assert_allclose(got.log_density, expected.log_density, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got.weight, expected.weight, rtol=1e-4, atol=1e-12)
    assert got.effective_sample_size == pytest.approx(expected.effective_sample_size, rel=1e-4)
    for positions in ("sparsest", "densest"):
        g, e = getattr(got, positions), getattr(expected, positions)
        assert g.shape == e.shape
        np.testing.assert_allclose(got.log_density[g], expected.log_density[e], rtol=1e-6,
                                   atol=1e-6)
    assert len(got.histograms) == got.latent_dim
    for g, e in zip(got.histograms, expected.histograms, strict=True):
        np.testing.assert_allclose(g.edges, e.edges, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(g.counts, e.counts)
    np.testing.assert_allclose(got.kl_to_prior, expected.kl_to_prior, rtol=1e-5, atol=1e-7)
    assert [(g.column, g.value, g.n_rows) for g in got.groups] == [
        (e.column, e.value, e.n_rows) for e in expected.groups
    ]
    for g, e in zip(got.groups, expected.groups, strict=True):
        assert g.representation_ratio == pytest.approx(e.representation_ratio, abs=0.02)
        assert g.mean_weight == pytest.approx(e.mean_weight, rel=1e-4, abs=1e-12)
    assert (got.worst_group_ratio is None) == (expected.worst_group_ratio is None)
    assert (got.drift is None) == (expected.drift is None)
    if got.drift is not None and expected.drift is not None:
        assert got.drift.overall == pytest.approx(expected.drift.overall, rel=1e-4)
        assert got.drift.level == expected.drift.level
        np.testing.assert_allclose(got.drift.psi, expected.drift.psi, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(got.drift.active, expected.drift.active)
        assert got.drift.gaussian_kl == pytest.approx(expected.drift.gaussian_kl, rel=1e-4)
        assert got.reference is not None and expected.reference is not None
        np.testing.assert_allclose(got.reference.share, expected.reference.share, atol=1e-3)
        assert got.reference_kl_to_prior is not None
        np.testing.assert_allclose(got.reference_kl_to_prior, expected.reference_kl_to_prior)


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
            assert g.flagged == (not 0.8 <= g.representation_ratio <= 1.25)
    ratios = [g.representation_ratio for g in report.groups]
    assert report.worst_group_ratio == max(ratios, key=lambda r: abs(np.log(max(r, 1e-12))))
    assert report.ids == ids
    lowest = np.argsort(report.log_density, kind="stable")[:15]
    assert [report.id_of(int(p)) for p in report.sparsest] == [ids[p] for p in lowest]


@pytest.fixture(scope="module")
def target(digits_server: ServerThread) -> str:
    return f"127.0.0.1:{digits_server.running.port}"


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


def _requests(case: str, x: NDArray) -> tuple[list[pb.BiasReportRequest], str, str]:
    """A bad stream for `case`, the status it gets and text its message must hold."""
    good = chunked(VAE, x, 50)
    if case == "empty stream":
        return [], "INVALID_ARGUMENT", "empty stream"
    if case == "no rows":
        return [pb.BiasReportRequest(model_name=VAE)], "INVALID_ARGUMENT", "no rows"
    if case == "unknown model":
        return chunked("no-such-model", x, 50), "NOT_FOUND", "this server has"
    if case == "model changes mid-stream":
        good[2].model_name = "digits-ae"
        return good, "INVALID_ARGUMENT", "model_name: 'digits-ae' in a later chunk"
    if case == "version changes mid-stream":
        good[1].model_version = "12345"
        return good, "INVALID_ARGUMENT", "model_version"
    if case == "ids length":
        good[1].ids.extend(["a"] * 49)
        return good, "INVALID_ARGUMENT", "ids: 49 given for a chunk of 50 rows"
    if case == "ids in some chunks only":
        good[1].ids.extend(["a"] * 50)
        return good, "INVALID_ARGUMENT", "with every chunk or with none"
    if case == "group columns change":
        good[0].groups.append(pb.GroupColumn(name="g", values=["a"] * 50))
        return good, "INVALID_ARGUMENT", "group columns must be the same"
    if case == "bad shape in chunk 2":
        good[2].input.CopyFrom(to_tensor(x[:3, :-1]))
        return good, "INVALID_ARGUMENT", "chunk 2 input: expected shape"
    options = {
        "bins 1": (pb.BiasReportOptions(bins=1), "bins"),
        "negative alpha": (pb.BiasReportOptions(alpha=-1.0), "alpha"),
        "unknown mode": (pb.BiasReportOptions(mode="median"), "mode: expected one of paper, max"),
        "sparse fraction": (pb.BiasReportOptions(sparse_fraction=0.9), "sparse_fraction"),
        "n_decoded above top_k": (pb.BiasReportOptions(top_k=3, n_decoded=4), "n_decoded"),
    }[case]
    good[0].options.CopyFrom(options[0])
    return good, "INVALID_ARGUMENT", options[1]


BAD_CASES = [
    "empty stream", "no rows", "unknown model", "model changes mid-stream",
    "version changes mid-stream", "ids length", "ids in some chunks only", "group columns change",
    "bad shape in chunk 2", "bins 1", "negative alpha", "unknown mode", "sparse fraction",
    "n_decoded above top_k",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_streams_get_the_right_status_and_then_a_good_one_works(
    case: str, digits_server: ServerThread, digits: tuple[NDArray, NDArray]
) -> None:
    x = digits[0][:200]
    requests, code, text = _requests(case, x)
    with pytest.raises(grpc.RpcError) as caught:
        call(digits_server, requests)
    assert caught.value.code().name == code
    assert text in caught.value.details(), caught.value.details()
    assert call(digits_server, chunked(VAE, x, 50)).n_rows == 200


def test_too_many_rows_name_the_setting_and_the_server_goes_on(wide_server: ServerThread) -> None:
    x = normal_rows(BIAS_MAX_ROWS + 1)
    with pytest.raises(grpc.RpcError) as caught:
        call(wide_server, chunked(WIDE, x, 1000))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "LATENTWATCH_BIAS_MAX_ROWS" in caught.value.details()
    assert call(wide_server, chunked(WIDE, x[:BIAS_MAX_ROWS], 1000)).n_rows == BIAS_MAX_ROWS


def test_decoded_rows_are_the_decoder_at_the_extreme_rows_means(
    digits_server: ServerThread, wide_server: ServerThread, digits: tuple[NDArray, NDArray]
) -> None:
    x = digits[0][:300]
    five_decoded = pb.BiasReportOptions(n_decoded=5)
    five = report_from_response(call(digits_server, chunked(VAE, x, 100, options=five_decoded)))
    assert five.decoded_sparsest is not None and five.decoded_densest is not None
    assert five.decoded_sparsest.shape == five.decoded_densest.shape == (5, 64)
    assert five.decoded_sparsest.dtype == np.float32
    assert np.all((five.decoded_sparsest >= 0) & (five.decoded_sparsest <= 1))  # Bernoulli means
    default = report_from_response(call(digits_server, chunked(VAE, x, 100)))
    assert default.decoded_sparsest is not None and default.decoded_sparsest.shape == (8, 64)
    none = call(digits_server, chunked(VAE, x, 100, options=pb.BiasReportOptions(n_decoded=0)))
    assert not none.HasField("decoded_sparsest") and not none.HasField("decoded_densest")

    w = normal_rows(700, seed=4)
    report = report_from_response(call(wide_server, chunked(WIDE, w, 250)))
    _, mu = direct(wide_server, WIDE, w)
    assert report.decoded_sparsest is not None and report.decoded_densest is not None
    np.testing.assert_allclose(report.decoded_sparsest,
                               reference_decode(mu[report.sparsest[:8]], WIDE_FEATURES),
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(report.decoded_densest,
                               reference_decode(mu[report.densest[:8]], WIDE_FEATURES),
                               rtol=1e-4, atol=1e-3)
    plain = call(wide_server, chunked(PLAIN, w, 250))  # no decoder graph, no reference
    assert not plain.HasField("decoded_sparsest")
    assert not plain.HasField("drift") and not plain.HasField("reference")
    assert len(plain.reference_kl_to_prior) == 0 and len(plain.kl_to_prior) == 3


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


def _samples(server: ServerThread) -> dict[tuple[str, frozenset], float]:
    url = f"http://127.0.0.1:{server.running.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_gauges_hold_the_last_report_per_model_version(wide_server: ServerThread) -> None:
    labels = frozenset({"model": WIDE, "version": "1"}.items())
    before = _samples(wide_server).get(("latentwatch_bias_rows_total", labels), 0.0)
    x = normal_rows(1200, seed=8)
    groups = {"half": ["a" if i < 400 else "b" for i in range(1200)]}
    started = time.time()
    report = report_from_response(call(wide_server, chunked(WIDE, x, 500, groups=groups)))
    samples = _samples(wide_server)

    def value(name: str) -> float:
        return samples[(name, labels)]

    assert value("latentwatch_bias_effective_sample_size") == pytest.approx(
        report.effective_sample_size)
    assert value("latentwatch_bias_effective_sample_fraction") == pytest.approx(
        report.effective_sample_size / 1200)
    assert report.worst_group_ratio is not None and report.drift is not None
    assert value("latentwatch_bias_worst_group_ratio") == pytest.approx(report.worst_group_ratio)
    assert value("latentwatch_bias_drift") == pytest.approx(report.drift.overall)
    assert value("latentwatch_bias_report_rows") == 1200
    assert started - 1 <= value("latentwatch_bias_report_timestamp_seconds") <= time.time() + 1
    assert value("latentwatch_bias_rows_total") == before + 1200

    call(wide_server, chunked(PLAIN, x[:100], 100))  # no groups, no reference
    samples = _samples(wide_server)
    plain = frozenset({"model": PLAIN, "version": "1"}.items())
    assert samples[("latentwatch_bias_report_rows", plain)] == 100
    assert ("latentwatch_bias_worst_group_ratio", plain) not in samples
    assert ("latentwatch_bias_drift", plain) not in samples
    assert samples[("latentwatch_bias_report_rows", labels)] == 1200  # per version


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


def _with_reference(repo: Path, name: str, version: str) -> Path:
    return build_version(repo, name, version, n_features=WIDE_FEATURES, latent_dim=4,
                         with_decoder=True, with_reference=True)


def _resign(version_dir: Path) -> None:
    manifest = Manifest.read(version_dir)
    sha256 = {name: sha256_file(version_dir / name) for name in manifest.sha256}
    (version_dir / "manifest.json").write_text(
        manifest.model_copy(update={"sha256": sha256}).to_json())


def _garbage_reference(v: Path) -> None:
    (v / "reference.npz").write_bytes(b"not a zip")
    _resign(v)


def _narrow_reference(v: Path) -> None:
    LatentReference.from_latents(normal_rows(50)[:, :3]).save(v / "reference.npz")
    _resign(v)


def _unlisted_reference(v: Path) -> None:
    manifest = Manifest.read(v)
    sha256 = {k: h for k, h in manifest.sha256.items() if k != "reference.npz"}
    (v / "manifest.json").write_text(manifest.model_copy(update={"sha256": sha256}).to_json())


def _wide_decoder(v: Path) -> None:
    import onnx
    from repo_builder import build_decoder

    onnx.save(build_decoder(WIDE_FEATURES + 1, 4), v / "decoder.onnx")  # one feature too many
    _resign(v)


@pytest.mark.parametrize(
    ("break_version", "reason"),
    [
        (_garbage_reference, "reference.npz cannot be used"),
        (_narrow_reference, "reference.npz describes 3 latent dimensions; the model has 4"),
        (_unlisted_reference, "files without a sha256 in manifest.json: ['reference.npz']"),
        (_wide_decoder, "decoder output has shape [2, 17]"),
    ],
)
def test_a_bad_reference_or_decoder_refuses_the_version(
    tmp_path: Path, break_version: object, reason: str
) -> None:
    _with_reference(tmp_path, "m", "1")
    broken = _with_reference(tmp_path, "m", "2")
    assert callable(break_version)
    break_version(broken)
    repository = load_repository(
        tmp_path, find_versions(tmp_path), server_settings(tmp_path), ServiceMetrics()
    )
    assert [(r.name, r.version) for r in repository.refused] == [("m", "2")]
    assert reason in repository.refused[0].reason, repository.refused[0].reason
    loaded = repository.get("m", "1")
    assert loaded.reference is not None and loaded.decoder is not None
