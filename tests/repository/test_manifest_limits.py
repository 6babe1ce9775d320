"""No sha256 covers the manifest: every field it has is checked for shape and range, and a file
name is a plain name inside the version directory. Pure pydantic, no models."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from pydantic import ValidationError
from test_manifest_v2 import v2_vae

from latentwatch.repository.manifest import MAX_WIDTH, Manifest
from latentwatch.repository.reader import validation_reason


def _with(path: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(v2_vae())
    *parents, last = path.split("/")
    node: Any = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[last] = value
    return data


REFUSED = [
    ("input/shape", [-5], "greater than 0"),
    ("input/shape", [], "at least 1 item"),
    ("input/shape", [2**40], f"less than or equal to {MAX_WIDTH}"),
    ("input/shape", [4, 4], "at most 1 item"),
    ("input/shape", [0], "greater than 0"),
    ("input/image_shape", [1, 3, 3], "holds 9 values, not the 4 features"),
    ("input/image_shape", [4], "at least 3 items"),
    ("input/preprocessing/shift", [0.0] * 3, "shift has 3 values for 4 features"),
    ("input/preprocessing/scale", [1.0, 0.0, 1.0, 1.0], "scale holds a zero"),
    ("input/preprocessing/scale", [1.0, float("nan"), 1.0, 1.0], "NaN or infinite"),
    ("input/preprocessing/clip", [1.0, 0.0], "not a finite (low, high)"),
    ("input/feature_names", ["a", "b"], "2 names for 4 features"),
    ("input/name", "in\nput", "should match pattern"),
    ("graphs/scorer/outputs/0/shape", [-1, 0], "axis of length 0"),
    ("graphs/scorer/outputs/0/shape", [-2], "greater than or equal to -1"),
    ("graphs/scorer/outputs/0/shape", [-1] * 9, "at most 8 items"),
    ("graphs/scorer/file", "../scorer.onnx", "is not a file of the version directory"),
    ("graphs/scorer/file", "/etc/passwd", "is not a file of the version directory"),
    ("graphs/scorer/file", "sub/scorer.onnx", "is not a file of the version directory"),
    ("graphs/scorer/file", ".scorer.onnx", "is not a file of the version directory"),
    ("graphs/scorer/file", "", "is not a file of the version directory"),
    ("graphs/scorer/file", "manifest.json", "cannot be listed"),
    ("sha256", {"../../etc/passwd": "0" * 64}, "is not a file of the version directory"),
    ("sha256", {"manifest.sig": "0" * 64}, "cannot be listed"),
    ("sha256", {"scorer.onnx": "not hex"}, "should match pattern"),
    ("sha256", {"scorer.onnx": "A" * 64}, "should match pattern"),
    ("name", "m\nINFO forged", "is not a directory name the repository uses"),
    ("name", "..", "is not a directory name the repository uses"),
    ("version", "01", "is not an integer"),
    ("version", "1/../2", "is not an integer"),
    ("latent/latent_dim", 0, "greater than 0"),
    ("latent/latent_dim", 2**40, "less than or equal to"),
    ("latent/beta", -1.0, "greater than or equal to 0"),
    ("latent/n_importance_samples", 10**9, "less than or equal to"),
    ("scoring/calibration/size", 0, "greater than 0"),
    ("scoring/calibration/size", 2**40, "less than or equal to"),
    ("scoring/calibration/default_alpha", 1.0, "less than 1"),
    ("scoring/calibration/default_alpha", float("nan"), "finite number"),
    ("scoring/score_kinds", ["neg_elbo", "neg_elbo", "recon_error"], "name one kind twice"),
    ("parity/rtol", -1e-5, "greater than or equal to 0"),
    ("parity/batch_sizes", [0], "greater than 0"),
    ("onnx/opset", 0, "greater than 0"),
    ("provenance/n_train", -1, "greater than or equal to 0"),
    ("model_kind", "v" * 10_000, "at most 64 characters"),
    ("format_version", 3, "format_version 3 is not one this version of latentwatch reads"),
    ("format_version", "2", "format_version '2' is not one"),
    ("format_version", True, "format_version True is not one"),
]


@pytest.mark.parametrize(("path", "value", "message"), REFUSED)
def test_a_field_out_of_range_is_refused_with_a_one_line_reason(
    path: str, value: Any, message: str
) -> None:
    text = json.dumps(_with(path, value))  # as a file holds it (NaN as the token NaN)
    with pytest.raises(ValidationError) as caught:
        Manifest.model_validate_json(text)
    reason = validation_reason(caught.value)
    assert message in reason, reason
    assert "\n" not in reason


def test_the_fixture_is_valid_and_the_bounds_admit_real_values() -> None:
    assert Manifest.model_validate_json(json.dumps(v2_vae())).n_features == 4
    wide = _with("input/shape", [MAX_WIDTH])
    wide["input"]["preprocessing"] = {"kind": "scale", "shift": [0.0], "scale": [0.5],
                                      "clip": [0.0, 1.0]}
    assert Manifest.model_validate(wide).n_features == MAX_WIDTH  # one shift for all: allowed
    image = _with("input/shape", [64]) | {}
    image["input"].update(image_shape=[1, 8, 8], preprocessing={
        "kind": "scale", "shift": [0.0] * 64, "scale": [1 / 16] * 64, "clip": [0.0, 1.0]})
    assert Manifest.model_validate(image).input.image_shape == [1, 8, 8]


def test_a_file_name_reason_quotes_it() -> None:
    data = _with("sha256", {"a\nb": "0" * 64})
    with pytest.raises(ValidationError) as caught:
        Manifest.model_validate(data)
    reason = validation_reason(caught.value)
    assert "'a\\nb'" in reason and "\n" not in reason
