"""benchmarks/quality.py's protocol pieces: the fixed halves, ranks, the Wilcoxon test, the
calibration means over sets that resolve alpha, and the DTE-NP baseline on toy sets whose
answer is known."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
ADBENCH = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "adbench"


def _bench(name: str) -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


# The 29 ADBench development sets, as their files are named.
DEVELOPMENT_SETS = [
    "1_ALOI", "2_annthyroid", "4_breastw", "5_campaign", "7_Cardiotocography", "8_celeba",
    "10_cover", "11_donors", "15_Hepatitis", "16_http", "17_InternetAds", "18_Ionosphere",
    "19_landsat", "20_letter", "21_Lymphography", "22_magic.gamma", "24_mnist", "25_musk",
    "29_Pima", "30_satellite", "32_shuttle", "33_skin", "34_smtp", "37_Stamps", "39_vertebral",
    "41_Waveform", "43_WDBC", "45_wine", "46_WPBC",
]


def test_halves_alternate_over_names_sorted_case_insensitively() -> None:
    halves = _bench("quality_halves")
    split = halves.split_halves(reversed(DEVELOPMENT_SETS))
    names = {h: [halves.dataset_name(s) for s in stems] for h, stems in split.items()}
    assert names["selection"] == [
        "ALOI", "breastw", "Cardiotocography", "cover", "Hepatitis", "InternetAds", "landsat",
        "Lymphography", "mnist", "Pima", "shuttle", "smtp", "vertebral", "WDBC", "WPBC"]
    assert names["report"] == [
        "annthyroid", "campaign", "celeba", "donors", "http", "Ionosphere", "letter",
        "magic.gamma", "musk", "satellite", "skin", "Stamps", "Waveform", "wine"]
    assert halves.dataset_name("22_magic.gamma") == "magic.gamma"
    assert halves.dataset_name("no_prefix") == "no_prefix"
    # A subset keeps the labels of the whole directory; "all" keeps the order given.
    assert halves.select_half(["2_annthyroid", "1_ALOI"], "report", DEVELOPMENT_SETS) == [
        "2_annthyroid"]
    assert halves.select_half(["2_annthyroid", "1_ALOI"], "all") == ["2_annthyroid", "1_ALOI"]
    with pytest.raises(ValueError, match="half must be"):
        halves.select_half(DEVELOPMENT_SETS, "test")


def test_tabular_files_picks_the_half_of_the_whole_directory(tmp_path: Path) -> None:
    tabular = _bench("quality_tabular")
    for stem in ("1_b", "2_A", "3_c", "4_D"):
        (tmp_path / f"{stem}.npz").write_bytes(b"")
    assert [f.stem for f in tabular.tabular_files(tmp_path, None, False, "selection")] == [
        "2_A", "3_c"]
    assert [f.stem for f in tabular.tabular_files(tmp_path, None, False, "report")] == [
        "1_b", "4_D"]
    assert [f.stem for f in tabular.tabular_files(tmp_path, ["D", "b"], False, "report")] == [
        "1_b", "4_D"]
    with pytest.raises(SystemExit, match="not in the report half: 2_A"):
        tabular.tabular_files(tmp_path, ["D", "A"], False, "report")


@pytest.mark.skipif(not ADBENCH.is_dir(), reason="the ADBench development sets are not here")
def test_the_development_directory_holds_the_sets_the_halves_document() -> None:
    stems = sorted(p.stem for p in ADBENCH.glob("*.npz"))
    assert stems == sorted(DEVELOPMENT_SETS)


def test_ranks_share_ties_and_put_nan_last() -> None:
    summary = _bench("quality_summary")
    assert summary.rank_rows({"a": 0.9, "b": 0.7, "c": 0.9, "d": float("nan")}) == {
        "a": 1.5, "c": 1.5, "b": 3.0, "d": 4.0}
    per_set = [{"x": 0.9, "y": 0.8}, {"x": 0.6, "y": 0.7}, {"x": 0.99, "y": 0.5}]
    assert summary.mean_ranks(per_set, ["x", "y"]) == {"x": pytest.approx(4 / 3),
                                                       "y": pytest.approx(5 / 3)}


def test_wilcoxon_matches_the_exact_signed_rank_distribution() -> None:
    summary = _bench("quality_summary")
    # Six differences, all positive: W- = 0, the exact two-sided p-value is 2 / 2^6.
    a = [0.9, 0.8, 0.85, 0.7, 0.95, 0.6]
    b = [0.8, 0.75, 0.8, 0.69, 0.9, 0.4]
    test = summary.wilcoxon_test(a, b)
    assert (test["wins"], test["losses"], test["ties"], test["n"]) == (6, 0, 0, 6)
    assert test["statistic"] == 0.0
    assert test["p_value"] == pytest.approx(2 / 64)
    # Mirrored differences: no evidence either way.
    mirrored = summary.wilcoxon_test([0.5, 0.7, 0.6, 0.8], [0.6, 0.6, 0.7, 0.7])
    assert mirrored["wins"] == mirrored["losses"] == 2 and mirrored["p_value"] > 0.5
    assert summary.wilcoxon_test([0.5], [0.5])["p_value"] is None  # only ties: no test


def _set(n_calibration: int, far: float, methods: dict[str, float], half: str) -> dict[str, Any]:
    rates = {str(a): far for a in (0.01, 0.05, 0.1)}
    calibration = {"n_calibration": n_calibration, "min_alpha": 1 / (n_calibration + 1),
                   "false_alarm_rate": rates, "bh": {"fdr": 0.05, "power": 0.5}}
    return {
        "half": half,
        "seeds": [{"calibration": calibration}],
        "mean": {"methods": {m: {"auroc": v, "aupr": v / 2, "seconds": 1.0}
                             for m, v in methods.items()},
                 "calibration": {"n_calibration": n_calibration, "false_alarm_rate": rates,
                                 "bh_fdr": 0.05, "bh_power": 0.5}},
    }


def test_group_summary_counts_only_sets_that_resolve_alpha() -> None:
    summary = _bench("quality_summary")
    datasets = {
        "1_big": _set(999, 0.04, {"default": 0.9, "knn": 0.8, "ecod": 0.7}, "selection"),
        "2_WPBC": _set(15, 0.0, {"default": 0.6, "knn": 0.7, "ecod": 0.5}, "report"),
        "3_mid": _set(30, 0.08, {"default": 0.8, "knn": 0.6, "ecod": 0.85}, "selection"),
    }
    group = summary.summarize_group(datasets)
    c = group["calibration"]
    # 1/16 = 0.0625: WPBC resolves only 0.1; 1/31 = 0.032: mid resolves 0.05 and 0.1.
    assert c["sets_left_out"] == {"0.01": ["2_WPBC", "3_mid"], "0.05": ["2_WPBC"], "0.1": []}
    assert c["false_alarm_rate"]["0.01"] == pytest.approx(0.04)
    assert c["false_alarm_rate"]["0.05"] == pytest.approx(0.06)
    assert c["false_alarm_rate"]["0.1"] == pytest.approx(0.04)
    assert group["best_baseline"] == "knn"  # mean 0.70 against ecod's 0.683
    assert group["default_minus_best_baseline_auroc_points"] == pytest.approx(100 * (2.3 - 2.1) / 3)
    methods = group["methods"]
    assert methods["default"]["mean_rank"] == pytest.approx((1 + 2 + 2) / 3)
    assert methods["knn"]["mean_rank"] == pytest.approx((2 + 1 + 3) / 3)
    assert methods["default"]["aupr"] == pytest.approx(0.3833333)
    assert group["wilcoxon_default_vs_best_baseline"]["wins"] == 2
    assert [r["dataset"] for r in group["gap_sets"]] == ["2_WPBC"]
    assert group["gap_sets"][0]["set_best_baseline"] == "knn"
    halves = summary.summarize_halves(datasets)
    assert halves["selection"]["datasets"] == ["1_big", "3_mid"]
    assert halves["report"]["datasets"] == ["2_WPBC"]


def test_dte_posterior_peaks_where_the_noise_explains_the_distance() -> None:
    """One training row, a row at distance r in d dimensions: p(sigma | x) is largest at
    sigma^2 = r^2 / d, and the expected diffusion time grows with r."""
    dte = _bench("quality_dte")
    sigmas = dte.noise_levels(2000)
    d = 8
    for r in (0.5, 3.0, 40.0):
        post = dte.diffusion_time_posterior(np.array([[r * r]]), d, sigmas)[0]
        assert post.sum() == pytest.approx(1.0)
        assert sigmas[post.argmax()] ** 2 == pytest.approx(r * r / d, rel=0.02)
    detector = dte.DTENonParametric(k=1).fit(np.zeros((1, d)))
    rows = np.zeros((4, d))
    rows[:, 0] = [0.1, 1.0, 10.0, 100.0]
    times = detector.decision_function(rows)
    assert np.all(np.diff(times) > 0) and 0.0 < times[0] and times[-1] < 1.0


def test_dte_ranks_outliers_of_a_gaussian_above_its_normal_rows() -> None:
    dte = _bench("quality_dte")
    rng = np.random.default_rng(0)
    train = rng.normal(size=(500, 5))
    test = np.vstack([rng.normal(size=(200, 5)), rng.normal(size=(20, 5)) + 4.0])
    y = np.r_[np.zeros(200), np.ones(20)]
    scores = dte.DTENonParametric().fit(train).decision_function(test)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, scores) > 0.98
    with pytest.raises(ValueError, match="P >= k"):
        dte.DTENonParametric(k=5).fit(train[:3])


def test_markdown_tables_show_each_half_and_all_sets() -> None:
    tabular = _bench("quality_tabular")
    report = _bench("quality_report")
    datasets = {
        "1_big": _set(999, 0.04, {"default": 0.9, "knn": 0.8}, "selection"),
        "2_WPBC": _set(15, 0.0, {"default": 0.6, "knn": 0.7}, "report"),
    }
    lines = report.markdown_lines({"tabular": tabular.summarize_tabular(datasets)})
    assert lines[0] == ("| method | report half: AUROC / AUPR / rank | selection half: AUROC / "
                        "AUPR / rank | all 2 sets: AUROC / AUPR / rank |")
    assert "| `default` | 60.0 / 30.0 / 2.00 | 90.0 / 45.0 / 1.00 | 75.0 / 37.5 / 1.50 |" in lines
    assert "| 2_WPBC | report | 60.0 | knn 70.0 | knn 70.0 |" in lines
    assert any(line.startswith("- all 2 sets: default − knn = +0.0 AUROC points, 1 wins / "
                               "1 losses") for line in lines)
