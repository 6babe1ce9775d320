"""benchmarks/selection_eval.py: the fixed halves by name and the what-if rules over evidence."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module("selection_eval")


def test_halves_alternate_over_names_sorted_without_case(bench: ModuleType) -> None:
    names = [bench.set_name(Path(p)) for p in ("33_skin.npz", "1_ALOI.npz", "2_annthyroid.npz",
                                                "4_breastw.npz", "30_satellite.npz")]
    assert names == ["skin", "ALOI", "annthyroid", "breastw", "satellite"]
    selection, report = bench.halves(names)
    assert selection == ["ALOI", "breastw", "skin"] and report == ["annthyroid", "satellite"]


def test_a_rule_keeps_the_plan_within_its_margin(bench: ModuleType) -> None:
    entry = {
        "fixed": {"auroc": 0.9},
        "test_auroc_by_candidate": {"plan": 0.9, "knn": 0.99},
        "selection": {"candidates": [
            {"name": "plan", "auroc": {"interpolation": 0.70, "marginal_shuffle": 0.9}},
            {"name": "knn", "auroc": {"interpolation": 0.75, "marginal_shuffle": 0.8}},
        ]},
    }
    assert bench.rule_outcome(entry, ("interpolation",), 0.01) == 0.99
    assert bench.rule_outcome(entry, ("interpolation",), 0.1) == 0.9
    assert bench.rule_outcome(entry, ("interpolation", "marginal_shuffle"), 0.01) == 0.9
    skipped = {**entry, "selection": {"candidates": []}}
    assert bench.rule_outcome(skipped, ("interpolation",), 0.01) == 0.9
