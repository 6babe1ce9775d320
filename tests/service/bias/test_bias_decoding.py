"""Decoded rows of a BiasReport: the decoder at the extreme rows' latent means, in the data's
units (the preprocessing inverted on the server) and shaped as images for image models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bias_support import PLAIN, VAE, WIDE, WIDE_FEATURES, call, chunked, direct, normal_rows
from numpy.typing import NDArray
from repo_builder import build_version, reference_decode
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.repository.manifest import Manifest
from latentwatch.scoring.preprocessing import Preprocessing
from latentwatch.wire.bias import report_from_response


def test_decoded_rows_are_the_decoder_at_the_extreme_rows_means(
    digits_server: ServerThread, wide_server: ServerThread, digits: tuple[NDArray, NDArray]
) -> None:
    x = digits[0][:300]
    five_decoded = pb.BiasReportOptions(n_decoded=5)
    five = report_from_response(call(digits_server, chunked(VAE, x, 100, options=five_decoded)))
    assert five.decoded_sparsest is not None and five.decoded_densest is not None
    # Images in the data's units: Bernoulli means in [0, 1] times the digits' pixel max, 16.
    assert five.decoded_sparsest.shape == five.decoded_densest.shape == (5, 1, 8, 8)
    assert five.decoded_sparsest.dtype == np.float32
    assert np.all((five.decoded_sparsest >= 0) & (five.decoded_sparsest <= 16))
    assert five.decoded_sparsest.max() > 1
    default = report_from_response(call(digits_server, chunked(VAE, x, 100)))
    assert default.decoded_sparsest is not None and default.decoded_sparsest.shape == (8, 1, 8, 8)
    np.testing.assert_array_equal(default.decoded_sparsest[:5], five.decoded_sparsest)
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


def test_decoded_rows_come_back_in_the_data_units_and_image_shape(tmp_path: Path) -> None:
    # Versions whose manifests name a preprocessing the synthetic graphs do not bake in: the
    # encoder's means are unchanged, so only the server's inversion moves the decoded rows.
    shift, scale = 5.0, 0.5
    for name, image_shape in (("tab", None), ("img", [1, 4, 4])):
        version_dir = build_version(tmp_path, name, n_features=WIDE_FEATURES, latent_dim=4,
                                    image_shape=image_shape, with_decoder=True)
        manifest = Manifest.read(version_dir)
        preprocessing = Preprocessing(kind="standardize", shift=[shift] * WIDE_FEATURES,
                                      scale=[scale] * WIDE_FEATURES)
        update = {"input": manifest.input.model_copy(update={"preprocessing": preprocessing})}
        (version_dir / "manifest.json").write_text(manifest.model_copy(update=update).to_json())
    running = ServerThread(server_settings(tmp_path))
    try:
        w = normal_rows(300, seed=6)
        for name, shape in (("tab", (WIDE_FEATURES,)), ("img", (1, 4, 4))):
            report = report_from_response(call(running, chunked(name, w, 100)))
            _, mu = direct(running, name, w)
            assert report.decoded_sparsest is not None and report.decoded_densest is not None
            assert report.decoded_sparsest.shape == (8, *shape)
            for decoded, positions in ((report.decoded_sparsest, report.sparsest),
                                       (report.decoded_densest, report.densest)):
                model_space = reference_decode(mu[positions[:8]], WIDE_FEATURES)
                np.testing.assert_allclose(decoded.reshape(8, WIDE_FEATURES),
                                           model_space / scale + shift, rtol=1e-4, atol=1e-3)
    finally:
        running.close()
