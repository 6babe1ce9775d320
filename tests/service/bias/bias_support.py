"""Helpers of the BiasReport tests: request streams, calls, and the report computed directly
from the Encode RPC's means (latentwatch.bias.accumulator), to compare the served one with."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from server_harness import ServerThread

from latentwatch.bias.accumulator import BiasAccumulator, BiasReport
from latentwatch.bias.drift import LatentReference
from latentwatch.bias.options import BiasOptions
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.manifest import Manifest
from latentwatch.wire.tensors import to_tensor

VAE = "digits-vae"
WIDE, PLAIN = "wide-vae", "plain-vae"  # synthetic: Z = 128 with decoder and reference; Z = 3
WIDE_FEATURES, WIDE_LATENT = 16, 128
BIAS_MAX_ROWS = 5000  # the synthetic server's limit
QUEUE_ROWS = 1024  # so the synthetic server keeps at most 512 rows of a report in flight


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
    """The report latentwatch.bias.accumulator gives on the Encode RPC's means, and those means."""
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
