"""Generate, Traverse and Translate over a real server and channel, on synthetic graphs.

Before these RPCs the server answered UNIMPLEMENTED for all three, and refused every gan, cgan
and pix2pix version at load ("this server serves versions with the capabilities ['score',
'encode']").
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from gen_builder import HIGH, build_generative_repo, build_generative_version, build_generator
from gen_builder import reference_generate as gen_reference
from repo_builder import build_version, reference_decode, reference_outputs
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.service.generation import INACTIVE_CHANGE, MAX_SAMPLES, inactive_threshold
from latentwatch.wire.generate import (
    generate_request,
    generated_from_response,
    translate_request,
    translated_from_response,
    traversal_from_response,
    traverse_request,
)
from latentwatch.wire.tensors import to_tensor

IMAGE = [1, 8, 8]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = build_generative_repo(tmp_path_factory.mktemp("generative"))
    build_version(repo, "img-vae", kind="vae", image_shape=IMAGE, with_decoder=True)
    build_version(repo, "tab-ae", kind="ae", n_features=5, latent_dim=2, with_decoder=True)
    build_version(repo, "plain-vae", kind="vae", n_features=5, latent_dim=2)  # no decoder
    # Gives (1, 4, 16) samples where the manifest promises (1, 8, 8): refused at warm-up.
    build_generative_version(repo, "bad-gan", generator=build_generator(4, [1, 4, 16], None))
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    running = ServerThread(server_settings(repo))
    yield running
    running.close()


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> pb_grpc.LatentwatchStub:
    return pb_grpc.LatentwatchStub(server.channel)


def _refused(call: object, request: object, *texts: str) -> str:
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)  # type: ignore[operator]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    details = info.value.details() or ""
    for text in texts:
        assert text in details
    return details


def test_generative_versions_load_and_a_broken_generator_is_refused(server: ServerThread) -> None:
    core = server.running.core
    assert {"img-gan", "img-cgan", "tab-gan", "img-p2p", "img-vae"} <= set(
        core.repository.versions  # type: ignore[union-attr]
    )
    refused = {r.name: r.reason for r in core.repository.refused}  # type: ignore[union-attr]
    assert "generator output has shape [2, 1, 4, 16]" in refused["bad-gan"]


def test_gan_samples_are_deterministic_for_a_seed(stub: pb_grpc.LatentwatchStub) -> None:
    first = generated_from_response(stub.Generate(generate_request("img-gan", 16, seed=7)))
    again = generated_from_response(stub.Generate(generate_request("img-gan", 16, seed=7)))
    other = generated_from_response(stub.Generate(generate_request("img-gan", 16, seed=8)))
    assert first.samples.shape == (16, *IMAGE) and first.latents.shape == (16, 4)
    np.testing.assert_array_equal(first.samples, again.samples)
    assert not np.allclose(first.latents, other.latents)
    assert first.seed == 7 and first.labels is None
    np.testing.assert_allclose(first.samples, gen_reference(first.latents, None, IMAGE),
                               atol=1e-4)
    assert first.samples.min() >= 0.0 and first.samples.max() <= HIGH  # clipped to the range


def test_without_a_seed_the_response_names_one_that_draws_the_same_samples(
    stub: pb_grpc.LatentwatchStub,
) -> None:
    fresh = generated_from_response(stub.Generate(generate_request("tab-gan", 8)))
    again = generated_from_response(stub.Generate(generate_request("tab-gan", 8, seed=fresh.seed)))
    assert fresh.samples.shape == (8, 5)
    np.testing.assert_array_equal(fresh.samples, again.samples)


def test_cgan_labels_one_per_sample_one_for_all_or_drawn(stub: pb_grpc.LatentwatchStub) -> None:
    labels = [0, 1, 2, 1, 0, 2]
    each = generated_from_response(stub.Generate(generate_request("img-cgan", 6, seed=3,
                                                                  labels=labels)))
    one = generated_from_response(stub.Generate(generate_request("img-cgan", 6, seed=3,
                                                                 labels=[2])))
    drawn = generated_from_response(stub.Generate(generate_request("img-cgan", 600, seed=3)))
    assert each.labels is not None and each.labels.tolist() == labels
    assert one.labels is not None and one.labels.tolist() == [2] * 6
    assert each.class_names == ("zero", "one", "two")
    np.testing.assert_allclose(
        each.samples, gen_reference(each.latents, each.labels, IMAGE, 3), atol=1e-4)
    np.testing.assert_array_equal(each.latents, one.latents)  # latents first, then labels
    assert drawn.labels is not None and set(drawn.labels.tolist()) == {0, 1, 2}


@pytest.mark.parametrize(
    ("model", "fields", "texts"),
    [
        ("img-cgan", dict(labels=[3]), ("labels: 3 (at 0) is not in 0..2",)),
        ("img-cgan", dict(labels=[0, -1]), ("2 labels for n = 4",)),
        ("img-cgan", dict(labels=[0, -1, 1, 1]), ("labels: -1 (at 1) is not in 0..2",)),
        ("img-gan", dict(labels=[0]), ("not class-conditional",)),
        ("img-gan", dict(truncation=0.0), ("truncation: 0.0 is not in [0.05, 10.0]",)),
        ("img-gan", dict(truncation=float("nan")), ("truncation: nan",)),
        ("img-gan", dict(spread=0.5), ("spread: set without centers",)),
        ("img-gan", dict(centers=np.zeros((2, 3))), ("expected numeric (k, 4) latent points",)),
        ("img-gan", dict(centers=np.full((1, 4), np.nan)), ("every value must be finite",)),
        ("img-gan", dict(centers=np.zeros((1, 4)), spread=-1.0), ("spread: -1.0",)),
        ("tab-ae", {}, ("has no prior to sample from",)),
        ("plain-vae", {}, ("cannot generate",)),
        ("img-p2p", {}, ("cannot generate",)),
    ],
)
def test_bad_generate_values_are_invalid_argument(
    stub: pb_grpc.LatentwatchStub, model: str, fields: dict, texts: tuple[str, ...]
) -> None:
    _refused(stub.Generate, generate_request(model, 4, seed=0, **fields), *texts)


@pytest.mark.parametrize("n", [0, -1, MAX_SAMPLES + 1])
def test_n_is_bounded(stub: pb_grpc.LatentwatchStub, n: int) -> None:
    _refused(stub.Generate, generate_request("img-gan", n), f"n: {n} is not in 1..{MAX_SAMPLES}")


def test_n_at_the_limit_is_served(stub: pb_grpc.LatentwatchStub) -> None:
    result = generated_from_response(stub.Generate(generate_request("tab-gan", MAX_SAMPLES)))
    assert result.samples.shape == (MAX_SAMPLES, 5)


def test_truncation_keeps_every_latent_value_within_it(stub: pb_grpc.LatentwatchStub) -> None:
    wide = generated_from_response(stub.Generate(generate_request("img-gan", 500, seed=1)))
    cut = generated_from_response(stub.Generate(generate_request("img-gan", 500, seed=1,
                                                                 truncation=0.5)))
    assert np.abs(wide.latents).max() > 2.0
    assert np.abs(cut.latents).max() <= 0.5
    assert cut.latents.std() > 0.2  # still spread over (-0.5, 0.5)


def test_centers_give_draws_around_each_centre_in_turn(stub: pb_grpc.LatentwatchStub) -> None:
    centers = np.array([[3.0, -3.0, 0.0, 1.0], [-2.0, 2.0, 5.0, 0.0]])
    result = generated_from_response(stub.Generate(generate_request(
        "img-gan", 400, seed=2, centers=centers, spread=0.1)))
    offsets = result.latents - centers[np.arange(400) % 2]
    assert np.abs(offsets).max() < 0.1 * 6
    assert 0.07 < offsets.std() < 0.13
    np.testing.assert_allclose(result.samples, gen_reference(result.latents, None, IMAGE),
                               atol=1e-4)


def test_vae_generates_through_its_decoder_in_data_units(stub: pb_grpc.LatentwatchStub) -> None:
    result = generated_from_response(stub.Generate(generate_request("img-vae", 10, seed=4)))
    assert result.samples.shape == (10, *IMAGE) and result.latents.shape == (10, 3)
    # The synthetic VAE's preprocessing is the identity: data units are model space.
    expected = reference_decode(result.latents, 64).reshape(10, *IMAGE)
    np.testing.assert_allclose(result.samples, expected, rtol=1e-4, atol=1e-4)
    # A plain AE has no prior, but samples around given centres.
    around = generated_from_response(stub.Generate(generate_request(
        "tab-ae", 3, seed=0, centers=np.ones((1, 2)))))
    assert around.samples.shape == (3, 5)


def test_vae_traversal_from_an_encoded_row(stub: pb_grpc.LatentwatchStub) -> None:
    row = np.random.default_rng(0).normal(size=(1, 64)).astype(np.float32)
    result = traversal_from_response(stub.Traverse(traverse_request(
        "img-vae", row=row, low=-2.0, high=2.0, steps=5)))
    base = reference_outputs(row, "vae", 3)["latent_mu"][0]
    np.testing.assert_allclose(result.base_latent, base, rtol=1e-4, atol=1e-4)
    assert result.dimensions == (0, 1, 2)
    np.testing.assert_allclose(result.values, np.linspace(-2, 2, 5))
    assert result.samples.shape == (3, 5, *IMAGE)
    z = np.tile(base, (5, 1))
    z[:, 1] = result.values
    np.testing.assert_allclose(result.samples[1].reshape(5, 64), reference_decode(z, 64),
                               rtol=1e-4, atol=1e-3)
    assert (result.change > INACTIVE_CHANGE).all() and result.inactive_dimensions == ()


def test_gan_traversal_names_the_dimension_that_changes_nothing(
    stub: pb_grpc.LatentwatchStub,
) -> None:
    result = traversal_from_response(stub.Traverse(traverse_request(
        "img-cgan", latent=np.zeros(4), dimensions=[0, 3], steps=9, label=1)))
    assert result.dimensions == (0, 3) and result.samples.shape == (2, 9, *IMAGE)
    assert result.inactive_dimensions == (3,)  # the synthetic generator's dead dimension
    assert result.change[0] > 3 * INACTIVE_CHANGE and result.change[1] < 1e-6


@pytest.mark.parametrize(
    ("model", "fields", "texts"),
    [
        ("img-vae", dict(dimensions=[3]), ("dimensions: 3 is not in 0..2",)),
        ("img-vae", dict(dimensions=[1, 1]), ("more than once",)),
        ("img-vae", dict(steps=1), ("steps: 1 is not in 2..64",)),
        ("img-vae", dict(steps=65), ("steps: 65",)),
        ("img-vae", dict(low=1.0, high=1.0), ("low < high",)),
        ("img-vae", dict(high=float("inf")), ("finite range",)),
        ("img-vae", dict(latent=np.zeros(3), row=np.zeros((1, 64))), ("at most one of",)),
        ("img-vae", dict(row=np.zeros((2, 64))), ("a traversal starts at one row",)),
        ("img-vae", dict(row=np.zeros((1, 7))), ("expected shape",)),
        ("img-vae", dict(label=1), ("not class-conditional",)),
        ("img-cgan", dict(label=5), ("label: 5 is not in 0..2",)),
        ("img-gan", dict(row=np.zeros((1, 64))), ("cannot encode: its capabilities are "
                                                  "['generate']",)),
        ("img-p2p", {}, ("cannot generate",)),
    ],
)
def test_bad_traverse_values_are_invalid_argument(
    stub: pb_grpc.LatentwatchStub, model: str, fields: dict, texts: tuple[str, ...]
) -> None:
    _refused(stub.Traverse, traverse_request(model, **fields), *texts)


@pytest.mark.parametrize("shape", [(3, 1, 8, 8), (3, 8, 8), (3, 64)])
def test_translate_images_in_images_out(
    stub: pb_grpc.LatentwatchStub, shape: tuple[int, ...]
) -> None:
    images = np.random.default_rng(1).uniform(0, HIGH, size=shape).astype(np.float32)
    out = translated_from_response(stub.Translate(translate_request("img-p2p", images)))
    assert out.shape == (3, *IMAGE)
    np.testing.assert_allclose(out, HIGH - images.reshape(3, *IMAGE), atol=1e-5)


def test_bad_translate_and_scoring_requests_on_generative_models(
    stub: pb_grpc.LatentwatchStub,
) -> None:
    _refused(stub.Translate, translate_request("img-p2p", np.zeros((2, 1, 7, 7))),
             "expected shape")
    _refused(stub.Translate, pb.TranslateRequest(model_name="img-p2p"), "input: missing")
    _refused(stub.Translate, translate_request("img-gan", np.zeros((1, 64))), "cannot translate")
    _refused(stub.Score, pb.ScoreRequest(model_name="img-gan",
                                         input=to_tensor(np.zeros((1, 64), np.float32))),
             "'img-gan' version '1' cannot score: its capabilities are ['generate']")
    _refused(stub.Encode, pb.EncodeRequest(model_name="img-p2p",
                                           input=to_tensor(np.zeros((1, 64), np.float32))),
             "cannot encode: its capabilities are ['translate']")


def test_generative_models_are_described_and_the_server_keeps_serving(
    stub: pb_grpc.LatentwatchStub,
) -> None:
    info = stub.GetModel(pb.GetModelRequest(model_name="img-cgan"), timeout=30)
    assert info.model_kind == "cgan" and info.latent_dim == 4 and not info.score_kinds
    assert [t.name for t in info.inputs] == ["z", "label"]
    kinds = {m.name: m.model_kind for m in stub.ListModels(pb.ListModelsRequest()).models}
    assert kinds["img-p2p"] == "pix2pix" and kinds["img-vae"] == "vae"
    scored = stub.Score(pb.ScoreRequest(model_name="img-vae",
                                        input=to_tensor(np.zeros((2, 64), np.float32))))
    assert len(scored.score) == 2


def test_the_three_rpcs_are_counted_by_method_and_code(
    server: ServerThread, stub: pb_grpc.LatentwatchStub
) -> None:
    from test_metrics import scrape, value

    before = scrape(server)
    stub.Generate(generate_request("img-gan", 2, seed=0))
    stub.Traverse(traverse_request("img-gan", steps=2))
    stub.Translate(translate_request("img-p2p", np.zeros((1, 64), np.float32)))
    _refused(stub.Generate, generate_request("img-gan", 0), "n: 0")
    after = scrape(server)
    for method, code in [("Generate", "OK"), ("Traverse", "OK"), ("Translate", "OK"),
                         ("Generate", "INVALID_ARGUMENT")]:
        counted = (value(after, "latentwatch_requests_total", method=method, code=code)
                   - value(before, "latentwatch_requests_total", method=method, code=code))
        assert counted == 1, (method, code)


def test_a_bias_report_on_a_generator_names_what_it_can_do(
    stub: pb_grpc.LatentwatchStub,
) -> None:
    # Before: the report asked the manifest for its latent section and ended INTERNAL.
    chunk = pb.BiasReportRequest(model_name="img-gan",
                                 input=to_tensor(np.zeros((4, 64), np.float32)))
    _refused(stub.BiasReport, iter([chunk]), "cannot encode: its capabilities are ['generate']")


def test_a_dimension_weak_next_to_the_strongest_is_inactive() -> None:
    change = np.array([0.2, 0.05, 0.019, 0.004])
    threshold = inactive_threshold(change)
    assert threshold == pytest.approx(0.02)  # a tenth of 0.2, above the 0.01 floor
    assert [c < threshold for c in change] == [False, False, True, True]
    assert inactive_threshold(np.array([0.05])) == pytest.approx(0.01)  # alone: the floor
    assert inactive_threshold(np.array([0.0, 0.0])) == pytest.approx(0.01)
