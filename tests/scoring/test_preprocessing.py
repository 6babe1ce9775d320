"""The one preprocessing definition: numpy apply, its inverse, the torch twin, the JSON form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from latentwatch.models.preprocessing import (
    Preprocess,
    min_max_preprocessing,
    preprocess,
    scale_preprocessing,
    standardize_preprocessing,
)
from latentwatch.repository.manifest import InputSpec
from latentwatch.scoring.preprocessing import (
    STD_FLOOR_RELATIVE,
    Preprocessing,
    image_scaling,
    min_max_scaling,
    standardization,
)

F = 7


def _train_rows(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rows = rng.normal(loc=3.0, scale=[0.1, 1, 2, 5, 10, 50, 1], size=(200, F))
    rows[:, -1] = 4.0  # a constant feature: its std is floored
    return rows.astype(np.float32)


def _kinds() -> dict[str, Preprocessing]:
    train = _train_rows()
    return {
        "images": image_scaling(F, 255.0),
        "min-max": min_max_scaling(train),
        "standardize": standardization(train),
    }


@pytest.mark.parametrize("name", ["images", "min-max", "standardize"])
def test_numpy_apply_and_the_torch_twin_agree_on_random_rows(name: str) -> None:
    pre = _kinds()[name]
    rng = np.random.default_rng(1)
    # Wide rows: for the clipped kinds, many values fall outside [0, 1] in model space.
    rows = rng.normal(loc=3.0, scale=200.0, size=(64, F)).astype(np.float32)
    expected = pre.apply(rows)
    with torch.no_grad():
        got = Preprocess(pre)(torch.from_numpy(rows)).numpy()
    assert got.dtype == expected.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    if pre.clip is not None:
        assert expected.min() == pre.clip[0] and expected.max() == pre.clip[1]


@pytest.mark.parametrize("name", ["images", "min-max", "standardize"])
def test_invert_undoes_apply_where_apply_did_not_clip(name: str) -> None:
    pre = _kinds()[name]
    rng = np.random.default_rng(2)
    rows = rng.normal(loc=3.0, scale=200.0, size=(500, F)).astype(np.float32)
    model_rows = pre.apply(rows)
    back = pre.invert(model_rows)
    assert back.dtype == np.float64 and back.shape == rows.shape
    if pre.clip is None:
        unclipped = np.ones(rows.shape, dtype=bool)
    else:
        unclipped = (model_rows > pre.clip[0]) & (model_rows < pre.clip[1])
    assert unclipped.sum() > 20  # the check below is not vacuous
    np.testing.assert_allclose(back[unclipped], rows[unclipped], rtol=1e-5, atol=1e-4)
    # apply(invert(z)) == z over the model's range (not on the constant feature: its floored
    # span scales by 1e6, past float32's resolution of the raw value).
    np.testing.assert_allclose(pre.apply(back)[:, :-1], model_rows[:, :-1], rtol=1e-5, atol=1e-5)


def test_clipping_loses_what_lay_beyond_the_bounds() -> None:
    pre = image_scaling(2, 255.0)
    back = pre.invert(pre.apply(np.array([[-40.0, 900.0]])))
    np.testing.assert_array_equal(back, [[0.0, 255.0]])


def test_constructors_keep_their_numbers() -> None:
    train = _train_rows()
    images = image_scaling(F, 16.0)
    assert images.kind == "scale" and images.clip == (0.0, 1.0)
    assert images.shift == [0.0] * F and images.scale == [1 / 16] * F
    with pytest.raises(ValueError, match="max_value"):
        image_scaling(F, 0.0)
    std = standardization(train)
    assert std.kind == "standardize" and std.clip is None
    np.testing.assert_allclose(std.shift, train.astype(np.float64).mean(0))
    np.testing.assert_allclose(1 / np.asarray(std.scale[:-1]), train[:, :-1].std(0), rtol=1e-5)
    assert 1 / std.scale[-1] == pytest.approx(STD_FLOOR_RELATIVE * 4.0)  # floored
    mm = min_max_scaling(train)
    assert mm.kind == "scale" and mm.clip == (0.0, 1.0)
    scaled = mm.apply(train)
    np.testing.assert_allclose(scaled[:, :-1].min(0), 0.0, atol=1e-6)
    np.testing.assert_allclose(scaled[:, :-1].max(0), 1.0, atol=1e-5)
    np.testing.assert_array_equal(scaled[:, -1], 0.0)  # a constant feature maps to 0


@pytest.mark.parametrize("name", ["images", "min-max", "standardize"])
def test_json_round_trip_and_the_checkpoint_dict(name: str) -> None:
    pre = _kinds()[name]
    assert Preprocessing.model_validate_json(pre.model_dump_json()) == pre
    spec = InputSpec(shape=[F], preprocessing=pre)
    assert InputSpec.model_validate_json(spec.model_dump_json()).preprocessing == pre
    as_dict = pre.model_dump(mode="json")
    assert set(as_dict) == {"kind", "shift", "scale", "clip"}
    assert as_dict["clip"] in (None, [0.0, 1.0])
    assert Preprocessing.model_validate(as_dict) == pre


def test_checkpoint_dicts_are_the_constructors_json_form() -> None:
    train = _train_rows()
    assert scale_preprocessing(F, 255.0) == image_scaling(F, 255.0).model_dump(mode="json")
    assert min_max_preprocessing(train) == min_max_scaling(train).model_dump(mode="json")
    assert standardize_preprocessing(train) == standardization(train).model_dump(mode="json")
    pre = standardize_preprocessing(train)
    np.testing.assert_array_equal(preprocess(train, pre), standardization(train).apply(train))
    with pytest.raises(ValueError, match="features"):
        preprocess(train[:, :3], pre)


def test_unknown_fields_are_refused() -> None:
    with pytest.raises(ValueError):
        Preprocessing.model_validate(
            {"kind": "scale", "shift": [0.0], "scale": [1.0], "offset": 1.0}
        )


def test_magnitude_is_the_unclipped_model_space_distance_without_overflow() -> None:
    pre = Preprocessing(kind="scale", shift=[1.0, 0.0], scale=[0.5, 2.0], clip=(0.0, 1.0))
    rows = np.array([[5.0, -1.0], [1.0, 3e38]], dtype=np.float32)
    np.testing.assert_allclose(pre.magnitude(rows), [[2.0, 2.0], [0.0, 6e38]], rtol=1e-6)
    assert np.isfinite(pre.magnitude(rows)).all()  # float32 would overflow at 6e38
