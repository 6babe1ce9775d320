"""Manifest format 2: capabilities against graphs and sections, optional family sections, and
the upgrade of format 1 manifests. Pure pydantic, no models."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from latentwatch.repository.manifest import FORMAT_VERSION, Manifest

SCORE_KINDS = ["neg_elbo", "recon_error"]


def _graph(file: str, inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    return {
        "file": file,
        "inputs": [{"name": n, "shape": [-1, 4]} for n in inputs],
        "outputs": [{"name": n, "shape": [-1]} for n in outputs],
    }


def _common(name: str = "m", kind: str = "vae") -> dict[str, Any]:
    return {
        "name": name,
        "version": "1",
        "model_kind": kind,
        "input": {
            "shape": [4],
            "preprocessing": {"kind": "standardize", "shift": [0.0] * 4, "scale": [1.0] * 4},
        },
        "parity": {"batch_sizes": [1], "rtol": 1e-5, "atol": 1e-6, "max_abs_error": {}},
        "onnx": {"opset": 17, "ir_version": 9, "producer": "tests"},
        "provenance": {
            "data": "synthetic", "n_train": 1, "n_validation": 0, "seed": 0, "epochs": 1,
            "final_losses": {}, "trained_at": "2026-01-01T00:00:00Z",
            "latentwatch_version": "0.1.0", "torch_version": "none",
        },
        "sha256": {"scorer.onnx": "0" * 64},
        "created_at": "2026-01-01T00:00:00Z",
    }


def _scoring() -> dict[str, Any]:
    return {
        "score_kinds": SCORE_KINDS,
        "default_score_kind": "neg_elbo",
        "default_score_reason": "tests",
        "calibration": {"size": 9, "score_kinds": SCORE_KINDS, "split": "9 synthetic rows"},
    }


def v2_vae(**changes: Any) -> dict[str, Any]:
    data = _common() | {
        "format_version": 2,
        "capabilities": ["score", "encode", "decode"],
        "graphs": {
            "scorer": _graph("scorer.onnx", ["input"], ["score", *SCORE_KINDS, "latent_mu"]),
            "decoder": _graph("decoder.onnx", ["latent"], ["reconstruction"]),
        },
        "latent": {"latent_dim": 2, "beta": 1.0, "decoder": "gaussian",
                   "n_importance_samples": 4},
        "scoring": _scoring(),
    }
    return data | changes


def v1_vae() -> dict[str, Any]:
    """A format 1 manifest as the exporter before format 2 wrote it: flat fields, no
    capabilities."""
    v2 = v2_vae()
    return _common() | {
        "format_version": 1,
        "decoder": "gaussian",
        "beta": 1.0,
        "latent_dim": 2,
        "n_importance_samples": 4,
        "graphs": v2["graphs"],
        "score_kinds": SCORE_KINDS,
        "default_score_kind": "neg_elbo",
        "default_score_reason": "tests",
        "second_stage": None,
        "reference": None,
        "calibration": _scoring()["calibration"],
    }


def test_a_v2_manifest_validates_and_round_trips() -> None:
    manifest = Manifest.model_validate(v2_vae())
    assert manifest.format_version == FORMAT_VERSION == 2
    assert manifest.capabilities == ["score", "encode", "decode"]
    assert Manifest.model_validate_json(manifest.to_json()) == manifest
    assert manifest.require_scoring().default_score_kind == "neg_elbo"
    assert manifest.require_latent().latent_dim == 2


def test_a_generator_needs_no_scoring_or_latent_section() -> None:
    data = _common(kind="gan") | {
        "capabilities": ["generate"],
        "graphs": {"generator": {
            "file": "generator.onnx",
            "inputs": [{"name": "z", "shape": [-1, 2]}],
            "outputs": [{"name": "sample", "shape": [-1, 4]}],
        }},
        "generation": {"latent_dim": 2, "output_shape": [4]},
        "sha256": {"generator.onnx": "0" * 64},
    }
    manifest = Manifest.model_validate(data)
    assert manifest.scoring is None and manifest.latent is None
    assert json.loads(manifest.to_json())["capabilities"] == ["generate"]
    with pytest.raises(ValueError, match="no scoring section"):
        manifest.require_scoring()
    with pytest.raises(ValueError, match="no latent section"):
        manifest.require_latent()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"scoring": None}, "capability 'score' and the scoring section go together"),
        ({"capabilities": ["encode", "decode"]}, "a scoring section but no score"),
        ({"graphs": {"scorer": _graph("scorer.onnx", ["input"], ["score", *SCORE_KINDS])}},
         "'decode' needs a 'decoder' graph"),
        ({"graphs": {"decoder": _graph("decoder.onnx", ["latent"], ["reconstruction"])}},
         "'score' needs a 'scorer' graph"),
        ({"capabilities": ["score", "decode"],
          "graphs": {"scorer": _graph("scorer.onnx", ["input"], ["score", *SCORE_KINDS]),
                     "decoder": _graph("decoder.onnx", ["latent"], ["reconstruction"])}},
         None),
        ({"capabilities": ["score", "encode", "generate"]},
         r"capabilities \['generate'\]: model kind 'vae' offers only"),
        ({"capabilities": ["score", "score", "encode"]}, "name one capability twice"),
        ({"capabilities": ["score", "fly"]}, "'score', 'encode', 'decode', 'generate'"),
        ({"latent": None}, r"capabilities \['decode', 'encode'\] need a latent section"),
        ({"model_kind": "flow"}, r"unknown model kind 'flow': kind must be one of \['ae'"),
    ],
)
def test_inconsistent_capabilities_are_refused_with_a_clear_message(
    changes: dict[str, Any], message: str | None
) -> None:
    data = v2_vae(**changes)
    if message is None:  # the control: a consistent variant validates
        assert Manifest.model_validate(data).capabilities == ["score", "decode"]
        return
    with pytest.raises(ValidationError, match=message):
        Manifest.model_validate(data)


def test_encode_needs_an_encoder_or_latent_outputs_of_the_scorer() -> None:
    scorer = _graph("scorer.onnx", ["input"], ["score", *SCORE_KINDS])
    with pytest.raises(ValidationError, match="'encoder' graph or a scorer with a 'latent_mu'"):
        Manifest.model_validate(v2_vae(capabilities=["score", "encode"],
                                       graphs={"scorer": scorer}))
    encoder = _graph("encoder.onnx", ["input"], ["latent_mu"])
    ok = Manifest.model_validate(v2_vae(capabilities=["score", "encode"],
                                        graphs={"scorer": scorer, "encoder": encoder}))
    assert ok.capabilities == ["score", "encode"]


def test_a_reference_needs_encode_and_score_kinds_need_a_source() -> None:
    reference = {"n_rows": 10, "fit_split": "10 rows"}
    with pytest.raises(ValidationError, match="reference .* needs the 'encode' capability"):
        Manifest.model_validate(v2_vae(capabilities=["score", "decode"], reference=reference))
    scoring = _scoring() | {"score_kinds": ["kl"], "default_score_kind": "kl",
                            "calibration": _scoring()["calibration"] | {"score_kinds": ["kl"]}}
    with pytest.raises(ValidationError, match="scorer output or the second stage's"):
        Manifest.model_validate(v2_vae(scoring=scoring))
    bad_default = _scoring() | {"default_score_kind": "kl"}
    with pytest.raises(ValidationError, match="default_score_kind 'kl' is not in"):
        Manifest.model_validate(v2_vae(scoring=bad_default))


def test_a_v1_manifest_is_upgraded_and_round_trips_as_v2() -> None:
    v1 = v1_vae()
    manifest = Manifest.model_validate_json(json.dumps(v1))
    assert manifest == Manifest.model_validate(v2_vae(reference=None))
    assert manifest.capabilities == ["score", "encode", "decode"]
    latent, scoring = manifest.require_latent(), manifest.require_scoring()
    assert (latent.latent_dim, latent.beta, latent.decoder, latent.n_importance_samples) == (
        v1["latent_dim"], v1["beta"], v1["decoder"], v1["n_importance_samples"])
    assert scoring.score_kinds == v1["score_kinds"]
    assert scoring.calibration.size == v1["calibration"]["size"]
    written = json.loads(manifest.to_json())
    assert written["format_version"] == 2 and "latent_dim" not in written
    assert Manifest.model_validate(written) == manifest


def test_a_v1_manifest_without_a_decoder_cannot_decode_and_a_bad_v1_is_refused() -> None:
    v1 = v1_vae()
    v1["graphs"] = {"scorer": v1["graphs"]["scorer"]}
    assert Manifest.model_validate(v1).capabilities == ["score", "encode"]
    del v1["format_version"]  # format 1 defaulted it
    assert Manifest.model_validate(v1).capabilities == ["score", "encode"]
    v1["default_score_kind"] = "kl"
    with pytest.raises(ValidationError, match="default_score_kind 'kl'"):
        Manifest.model_validate(v1)


def test_unknown_format_versions_are_refused() -> None:
    with pytest.raises(ValidationError, match="format_version"):
        Manifest.model_validate(v2_vae(format_version=3))
