"""Group-conditional p-values against a per-group brute force, and the request checks."""

from __future__ import annotations

import numpy as np
import pytest

from latentwatch.errors import InvalidInput, VersionRefused
from latentwatch.repository.manifest_groups import GroupCalibration, groups_array, split_by_group
from latentwatch.scoring.mondrian import request_groups


def _calibration(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    groups = groups_array(rng.choice(["a", "bb", "ccc"], size=300).tolist())
    scores = rng.integers(0, 30, size=(300, 2)).astype(np.float64)  # ties are common
    scores[groups == "bb"] += 10  # a harder group
    return scores, groups


@pytest.mark.parametrize("seed", range(3))
def test_group_p_values_equal_a_brute_force_count_within_each_group(seed: int) -> None:
    scores, groups = _calibration(seed)
    spec = GroupCalibration.of("site", groups)
    by_group = split_by_group(spec, scores, groups, ["k0", "k1"])
    rng = np.random.default_rng(seed + 10)
    asked = rng.choice(["a", "bb", "ccc"], size=50).tolist()
    test_scores = rng.integers(-2, 45, size=50).astype(np.float64)
    grouped, alpha = request_groups(asked, 50, by_group, 0.05, "model 'm' version '2'")
    assert grouped is not None and alpha == 0.05
    p = grouped.p_values("k1", test_scores)
    for i, (g, s) in enumerate(zip(asked, test_scores, strict=True)):
        own = scores[groups == g, 1]
        assert p[i] == (1 + np.count_nonzero(own >= s)) / (len(own) + 1)
    np.testing.assert_array_equal(grouped.calibration_sizes,
                                  [np.count_nonzero(groups == g) for g in asked])


def test_requests_with_bad_groups_are_refused_with_what_to_do() -> None:
    scores, groups = _calibration(0)
    by_group = split_by_group(GroupCalibration.of("site", groups), scores, groups, ["k0", "k1"])
    what = "model 'm' version '2'"
    assert request_groups([], 3, by_group, 0.05, what) == (None, 0.05)
    with pytest.raises(InvalidInput, match=r"unknown group\(s\) 'zz'; model 'm' version '2' "
                                           r"has 'a', 'bb', 'ccc'"):
        request_groups(["a", "zz"], 2, by_group, 0.05, what)
    with pytest.raises(InvalidInput, match="2 given for 3 rows"):
        request_groups(["a", "a"], 3, by_group, 0.05, what)
    with pytest.raises(InvalidInput, match="calibrated without a group column"):
        request_groups(["a"], 1, {}, 0.05, what)
    smallest = min(np.count_nonzero(groups == g) for g in ("a", "bb", "ccc"))
    with pytest.raises(InvalidInput, match=r"group '.*': alpha 0.001 is below 1/\(n\+1\)"):
        request_groups(["a", "bb", "ccc"], 3, by_group, 0.001, what)
    assert request_groups(["a"], 1, by_group, 1 / (smallest + 1), what)[1] > 0


def test_a_groups_file_that_does_not_fit_the_manifest_is_refused() -> None:
    scores, groups = _calibration(1)
    spec = GroupCalibration.of("site", groups)
    with pytest.raises(VersionRefused, match="one per calibration row"):
        split_by_group(spec, scores, groups[:-1], ["k0", "k1"])
    renamed = groups.copy()
    renamed[0] = "x"
    with pytest.raises(VersionRefused, match="groups not in the manifest: 'x'"):
        split_by_group(spec, scores, renamed, ["k0", "k1"])
    moved = groups.copy()
    moved[moved == "a"] = "bb"
    moved[0] = "a"
    with pytest.raises(VersionRefused, match="group sizes that differ"):
        split_by_group(spec, scores, moved, ["k0", "k1"])
    with pytest.raises(ValueError, match="group names repeat"):
        GroupCalibration(column="site", groups=["a", "a"], sizes=[1, 2])
    with pytest.raises(ValueError, match="2 groups but 1 sizes"):
        GroupCalibration(column="site", groups=["a", "b"], sizes=[1])
