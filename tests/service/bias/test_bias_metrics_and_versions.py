"""BiasReport gauges per model version, and versions refused for a bad reference or decoder."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from pathlib import Path

import pytest
from bias_support import PLAIN, WIDE, WIDE_FEATURES, call, chunked, normal_rows
from prometheus_client.parser import text_string_to_metric_families
from repo_builder import build_version
from server_harness import ServerThread, server_settings

from latentwatch.bias.drift import LatentReference
from latentwatch.repository.layout import find_versions
from latentwatch.repository.manifest import Manifest, sha256_file
from latentwatch.service.loader import load_repository
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.wire.bias import report_from_response


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
    repository = asyncio.run(load_repository(
        tmp_path, find_versions(tmp_path), server_settings(tmp_path), ServiceMetrics()
    ))
    assert [(r.name, r.version) for r in repository.refused] == [("m", "2")]
    assert reason in repository.refused[0].reason, repository.refused[0].reason
    loaded = repository.get("m", "1")
    assert loaded.reference is not None and loaded.decoder is not None
