"""The manifest's generation section: generator and translator versions (gan, cgan, pix2pix).

Pure pydantic, no models: each refusal names what is wrong, and a consistent variant validates.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from latentwatch.repository.manifest import Manifest

Z, SHAPE = 4, [1, 2, 2]  # a tiny 2x2 single-channel image
N_FEATURES = 4


def _tensor(name: str, shape: list[int], datatype: str = "FP32") -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape}


def _common(kind: str) -> dict[str, Any]:
    return {
        "format_version": 2,
        "name": "m",
        "version": "1",
        "model_kind": kind,
        "input": {
            "shape": [N_FEATURES],
            "image_shape": SHAPE,
            "preprocessing": {"kind": "scale", "shift": [0.0] * N_FEATURES,
                              "scale": [1 / 16] * N_FEATURES, "clip": [0.0, 1.0]},
        },
        "parity": {"batch_sizes": [1], "rtol": 1e-4, "atol": 1e-4, "max_abs_error": {}},
        "onnx": {"opset": 17, "ir_version": 9, "producer": "tests"},
        "provenance": {
            "data": "synthetic", "n_train": 1, "n_validation": 0, "seed": 0, "epochs": 1,
            "final_losses": {}, "trained_at": "2026-01-01T00:00:00Z",
            "latentwatch_version": "0.1.0", "torch_version": "none",
        },
        "created_at": "2026-01-01T00:00:00Z",
    }


def cgan(**generation: Any) -> dict[str, Any]:
    return _common("cgan") | {
        "capabilities": ["generate"],
        "graphs": {"generator": {
            "file": "generator.onnx",
            "inputs": [_tensor("z", [-1, Z]), _tensor("label", [-1], "INT64")],
            "outputs": [_tensor("sample", [-1, *SHAPE])],
        }},
        "sha256": {"generator.onnx": "0" * 64},
        "generation": {"latent_dim": Z, "n_classes": 3, "class_names": ["a", "b", "c"],
                       "output_shape": SHAPE, "output_range": [0.0, 16.0],
                       "stabilisation": "spectral norm"} | generation,
    }


def pix2pix(**generation: Any) -> dict[str, Any]:
    return _common("pix2pix") | {
        "capabilities": ["translate"],
        "graphs": {"translator": {
            "file": "translator.onnx",
            "inputs": [_tensor("image", [-1, *SHAPE])],
            "outputs": [_tensor("translated", [-1, *SHAPE])],
        }},
        "sha256": {"translator.onnx": "0" * 64},
        "generation": {"latent_dim": 0, "output_shape": SHAPE, "output_range": [0.0, 16.0],
                       "dropout_at_inference": False} | generation,
    }


def test_generator_and_translator_manifests_validate_and_round_trip() -> None:
    for data in (cgan(), pix2pix(), cgan(n_classes=3, class_names=None)):
        manifest = Manifest.model_validate(data)
        assert Manifest.model_validate_json(manifest.to_json()) == manifest
        assert manifest.scoring is None and manifest.latent is None
    spec = Manifest.model_validate(cgan()).require_generation()
    assert (spec.latent_dim, spec.n_classes, spec.prior, spec.output_shape) == (Z, 3, "normal",
                                                                               SHAPE)
    assert Manifest.model_validate(pix2pix()).require_generation().dropout_at_inference is False


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_classes": 0, "class_names": None}, "greater than or equal to 1"),
        ({"n_classes": 10_001, "class_names": None}, "less than or equal to 10000"),
        ({"class_names": ["a", "b"]}, "class_names has 2 names for 3 classes"),
        ({"class_names": ["a", "a", "b"]}, "class_names has duplicates"),
        ({"output_shape": [1, 0, 2]}, "greater than 0"),
        ({"output_shape": []}, "at least 1 item"),
        ({"output_shape": [1, 4, 1]}, None),  # same size, another shape: the graph disagrees
        ({"output_shape": [1, 2, 3]}, "holds 6 values, not the 4 features"),
        ({"output_range": [16.0, 0.0]}, "low < high"),
        ({"output_range": [0.0, float("inf")]}, "finite number"),
        ({"output_range": [0.0]}, "at least 2 items"),
        ({"latent_dim": 5}, r"generator.z is FP32 \[-1, 4\]; the generation section needs"),
        ({"latent_dim": -1}, "greater than or equal to 0"),
        ({"n_classes": None, "class_names": None}, r"with n_classes None they are \['z'\]"),
        ({"prior": "uniform"}, "'normal'"),
    ],
)
def test_a_bad_generation_section_is_refused(changes: dict[str, Any], message: str | None) -> None:
    if message is None:
        message = r"generator.sample is FP32 \[-1, 1, 2, 2\]; the generation section needs"
    with pytest.raises(ValidationError, match=message):
        Manifest.model_validate(cgan(**changes))


def test_generate_and_translate_need_the_section_and_nothing_else_may_carry_it() -> None:
    for data in (cgan(), pix2pix()):
        del data["generation"]
        with pytest.raises(ValidationError, match="need a generation section"):
            Manifest.model_validate(data)
    vae = _common("vae") | {
        "capabilities": ["decode"],
        "graphs": {"decoder": {"file": "decoder.onnx", "inputs": [_tensor("latent", [-1, Z])],
                               "outputs": [_tensor("reconstruction", [-1, N_FEATURES])]}},
        "sha256": {"decoder.onnx": "0" * 64},
        "latent": {"latent_dim": Z},
        "generation": cgan()["generation"],
    }
    with pytest.raises(ValidationError, match="a generation section needs the 'translate'"):
        Manifest.model_validate(vae)
    del vae["generation"]
    assert Manifest.model_validate(vae).generation is None  # the control


def test_the_graph_tensors_must_match_the_section() -> None:
    data = cgan()
    data["graphs"]["generator"]["inputs"][1]["datatype"] = "FP32"
    with pytest.raises(ValidationError, match="generator.label is FP32"):
        Manifest.model_validate(data)
    data = pix2pix(latent_dim=2)
    with pytest.raises(ValidationError, match="a translator takes no z or label"):
        Manifest.model_validate(data)
    data = copy.deepcopy(pix2pix())
    data["graphs"]["translator"]["outputs"][0]["name"] = "sample"
    with pytest.raises(ValidationError, match="needs a 'translated' tensor"):
        Manifest.model_validate(data)
    data = pix2pix()
    data["input"] |= {"shape": [4], "image_shape": [1, 4, 1]}
    with pytest.raises(ValidationError, match=r"input.image_shape \[1, 4, 1\] differs"):
        Manifest.model_validate(data)
