"""LatentwatchClient.generate, traverse and translate against a real server: numpy out, server
errors as latentwatch.errors exceptions."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from gen_builder import HIGH, build_generative_repo  # noqa: E402
from gen_builder import reference_generate as gen_reference  # noqa: E402
from repo_builder import build_version, reference_decode  # noqa: E402
from server_harness import ServerThread, server_settings  # noqa: E402

from latentwatch.client import LatentwatchClient  # noqa: E402
from latentwatch.errors import InvalidInput  # noqa: E402


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LatentwatchClient]:
    repo = build_generative_repo(tmp_path_factory.mktemp("gen_client"))
    build_version(repo, "img-vae", kind="vae", image_shape=[1, 8, 8], with_decoder=True)
    server = ServerThread(server_settings(repo))
    try:
        with LatentwatchClient(f"127.0.0.1:{server.running.port}", timeout_s=30.0) as c:
            c.wait_ready(30.0)
            yield c
    finally:
        server.close()


def test_generate_returns_samples_latents_labels_and_seed(client: LatentwatchClient) -> None:
    result = client.generate("img-cgan", 5, seed=9, labels=[1])
    assert isinstance(result.samples, np.ndarray) and result.samples.dtype == np.float32
    assert result.samples.shape == (5, 1, 8, 8) and result.latents.shape == (5, 4)
    assert result.labels is not None and result.labels.tolist() == [1] * 5 and result.seed == 9
    np.testing.assert_allclose(result.samples,
                               gen_reference(result.latents, result.labels, [1, 8, 8], 3),
                               atol=1e-4)
    again = client.generate("img-cgan", 5, seed=9, labels=[1])
    np.testing.assert_array_equal(result.samples, again.samples)


def test_generate_around_centres_and_from_a_vae_decoder(client: LatentwatchClient) -> None:
    centers = np.array([[1.0, -1.0, 2.0]])
    result = client.generate("img-vae", 3, seed=0, centers=centers, spread=0.05)
    assert np.abs(result.latents - centers).max() < 0.05 * 6
    np.testing.assert_allclose(result.samples.reshape(3, 64),
                               reference_decode(result.latents, 64), rtol=1e-4, atol=1e-4)


def test_traverse_and_translate_return_arrays(client: LatentwatchClient) -> None:
    sweep = client.traverse("img-gan", latent=np.zeros(4), dimensions=[3, 0], steps=3)
    assert sweep.samples.shape == (2, 3, 1, 8, 8) and sweep.dimensions == (3, 0)
    assert sweep.inactive_dimensions == (3,) and sweep.change.shape == (2,)
    row = np.random.default_rng(2).normal(size=(1, 64))
    assert client.traverse("img-vae", row=row).samples.shape == (3, 7, 1, 8, 8)
    images = np.random.default_rng(3).uniform(0, HIGH, size=(2, 8, 8))
    out = client.translate("img-p2p", images)
    assert out.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(out[:, 0], HIGH - images, atol=1e-4)


def test_server_errors_are_invalid_input(client: LatentwatchClient) -> None:
    with pytest.raises(InvalidInput, match="labels: 7"):
        client.generate("img-cgan", 2, labels=[7])
    with pytest.raises(InvalidInput, match="cannot translate"):
        client.translate("img-vae", np.zeros((1, 8, 8)))
    with pytest.raises(InvalidInput, match="cannot score"):
        client.score("img-p2p", np.zeros((1, 64)))
    assert client.generate("img-gan", 1).samples.shape == (1, 1, 8, 8)  # still serving
