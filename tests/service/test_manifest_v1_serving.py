"""Versions exported before manifest format 2 still load and serve over a real server.

The repository holds one model twice: version 1 with a format 1 manifest.json, written here
field by field as the exporter before format 2 wrote it (flat latent and scoring fields, no
capabilities), and version 2 with the same files and a format 2 manifest. Score, Encode,
BiasReport, GetModel and ListModels answer alike for both.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from repo_builder import build_version, reference_outputs
from server_harness import ServerThread, server_settings

from latentwatch.client.client import LatentwatchClient
from latentwatch.repository.layout import MANIFEST_FILE
from latentwatch.repository.manifest import Manifest

VAE, AE = "old-vae", "old-ae"
F, Z = 12, 3
N_CALIBRATION = 99


def write_v1_manifest(version_dir: Path, *, kind: str, latent_dim: int, kinds: list[str]) -> None:
    """Replaces the format 2 manifest.json with the format 1 one for the same files."""
    v2 = json.loads((version_dir / MANIFEST_FILE).read_text())
    v1: dict[str, Any] = {
        "format_version": 1,
        "name": v2["name"],
        "version": v2["version"],
        "model_kind": kind,
        "decoder": "gaussian",
        "beta": 1.0,
        "latent_dim": latent_dim,
        "n_importance_samples": 4,
        "input": v2["input"],
        "graphs": v2["graphs"],
        "score_kinds": kinds,
        "default_score_kind": kinds[0],
        "default_score_reason": "",
        "second_stage": None,
        "reference": v2["reference"],
        "calibration": {
            "file": "calibration.npy",
            "size": N_CALIBRATION,
            "score_kinds": kinds,
            "default_alpha": 0.05,
            "split": "synthetic standard normal rows, seed 0",
        },
        "parity": v2["parity"],
        "onnx": v2["onnx"],
        "provenance": v2["provenance"],
        "sha256": v2["sha256"],
        "created_at": v2["created_at"],
    }
    (version_dir / MANIFEST_FILE).write_text(json.dumps(v1, indent=2, sort_keys=True) + "\n")


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("v1_repo")
    for version in ("1", "2"):
        build_version(repo, VAE, version, kind="vae", n_features=F, latent_dim=Z,
                      n_calibration=N_CALIBRATION, with_decoder=True, with_reference=True)
    write_v1_manifest(repo / VAE / "1", kind="vae", latent_dim=Z,
                      kinds=["neg_elbo", "iwae_nll", "recon_error", "kl"])
    build_version(repo, AE, "1", kind="ae", n_features=F, latent_dim=2,
                  n_calibration=N_CALIBRATION)
    write_v1_manifest(repo / AE / "1", kind="ae", latent_dim=2, kinds=["recon_error"])
    return repo


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[LatentwatchClient]:
    server = ServerThread(server_settings(repo))
    try:
        with LatentwatchClient(f"127.0.0.1:{server.running.port}") as c:
            yield c
    finally:
        server.close()


def rows(n: int, seed: int = 3) -> NDArray[np.float32]:
    return np.random.default_rng(seed).normal(size=(n, F)).astype(np.float32)


def test_the_fixture_really_holds_format_1_manifests(repo: Path) -> None:
    on_disk = json.loads((repo / VAE / "1" / MANIFEST_FILE).read_text())
    assert on_disk["format_version"] == 1 and "capabilities" not in on_disk
    assert "latent_dim" in on_disk and "score_kinds" in on_disk
    upgraded = Manifest.read(repo / VAE / "1")
    assert upgraded.capabilities == ["score", "encode", "decode"]
    assert Manifest.read(repo / AE / "1").capabilities == ["score", "encode"]


def test_get_model_and_list_models_answer_as_for_format_2(client: LatentwatchClient) -> None:
    old, new = client.get_model(VAE, "1"), client.get_model(VAE, "2")
    assert json.loads(old.manifest_json)["format_version"] == 1  # the file, as it is
    assert dataclasses.replace(old, version="2", manifest_json="") == dataclasses.replace(
        new, manifest_json="")
    assert old.latent_dim == Z and old.calibration_size == N_CALIBRATION
    assert old.score_kinds == ("neg_elbo", "iwae_nll", "recon_error", "kl")
    ae = client.get_model(AE)
    assert (ae.model_kind, ae.score_kinds, ae.latent_dim) == ("ae", ("recon_error",), 2)
    summaries = {s.name: s for s in client.list_models()}
    assert summaries[VAE].versions == ("1", "2") and summaries[VAE].model_kind == "vae"
    assert summaries[AE].model_kind == "ae"


def test_score_is_the_same_for_both_formats(client: LatentwatchClient) -> None:
    x = rows(20)
    old = client.score(VAE, x, version="1", kinds=["kl"])
    new = client.score(VAE, x, version="2", kinds=["kl"])
    expected = reference_outputs(x, "vae", Z)
    np.testing.assert_allclose(old.score, expected["neg_elbo"], rtol=1e-5)
    np.testing.assert_allclose(old.scores["kl"], expected["kl"], rtol=1e-5)
    np.testing.assert_array_equal(old.p_value, new.p_value)
    assert old.score_kind == new.score_kind == "neg_elbo" and old.alpha == 0.05
    ae = client.score(AE, x)
    np.testing.assert_allclose(ae.score, reference_outputs(x, "ae", 2)["recon_error"], rtol=1e-5)


def test_encode_serves_format_1_versions(client: LatentwatchClient) -> None:
    x = rows(6)
    mu, logvar = client.encode(VAE, x, version="1")
    expected = reference_outputs(x, "vae", Z)
    np.testing.assert_allclose(mu, expected["latent_mu"], rtol=1e-5, atol=1e-6)
    assert logvar is not None and logvar.shape == (6, Z)
    ae_mu, ae_logvar = client.encode(AE, x)
    assert ae_mu.shape == (6, 2) and ae_logvar is None


def test_bias_reports_with_reference_and_decoder_serve_format_1_versions(
    client: LatentwatchClient,
) -> None:
    x = rows(300, seed=5)
    old = client.bias_report(VAE, x, version="1", top_k=4, n_decoded=2)
    new = client.bias_report(VAE, x, version="2", top_k=4, n_decoded=2)
    assert old.n_rows == 300 and old.latent_dim == Z
    assert old.reference is not None and old.drift is not None
    assert old.decoded_sparsest is not None and old.decoded_sparsest.shape == (2, F)
    np.testing.assert_array_equal(old.log_density, new.log_density)
    np.testing.assert_array_equal(old.sparsest, new.sparsest)
    np.testing.assert_array_equal(old.decoded_sparsest, new.decoded_sparsest)
