"""The repository layout: names, the version rule and the one walker over versions."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from latentwatch.repository import layout
from latentwatch.repository.layout import (
    MANIFEST_FILE,
    STAGING_PREFIX,
    find_versions,
    is_hidden,
    is_version_name,
    next_version,
    published_versions,
    version_dirs,
)


def _dirs(root: Path, *names: str) -> None:
    for name in names:
        (root / name).mkdir(parents=True)


def test_versions_count_up(tmp_path: Path) -> None:
    assert next_version(tmp_path) == "1"
    (tmp_path / "1").mkdir()
    (tmp_path / "7").mkdir()
    (tmp_path / "tmp-export").mkdir()
    assert next_version(tmp_path) == "8"


def test_next_version_counts_past_ten_as_numbers_and_starts_a_new_model_at_one(
    tmp_path: Path,
) -> None:
    _dirs(tmp_path / "m", "9", "10", f"{STAGING_PREFIX}abc", "11.bak")
    assert next_version(tmp_path / "m") == "11"
    assert next_version(tmp_path / "not-yet") == "1"


def test_the_version_rule() -> None:
    assert is_version_name("1") and is_version_name("10")
    assert not is_version_name("v1") and not is_version_name("1.0")
    assert not is_version_name(f"{STAGING_PREFIX}x7") and not is_version_name("")
    assert is_hidden(f"{STAGING_PREFIX}x7") and is_hidden(layout.hidden_temp("config.pbtxt"))
    assert not is_hidden("1") and not is_hidden("digits-vae")


def test_graph_files() -> None:
    assert [layout.graph_file(g) for g in ("scorer", "encoder", "decoder")] == [
        layout.SCORER_FILE, layout.ENCODER_FILE, layout.DECODER_FILE,
    ] == ["scorer.onnx", "encoder.onnx", "decoder.onnx"]


def test_walker_orders_versions_numerically_and_ignores_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _dirs(tmp_path / "b", "10", "2", "9", "draft", f"{STAGING_PREFIX}x1", ".old")
    _dirs(tmp_path / "a", "1")
    _dirs(tmp_path / ".trash", "3")  # a hidden model directory: never a model
    _dirs(tmp_path / "empty", "notes")
    (tmp_path / "b" / "11").write_text("a file, not a version directory")
    (tmp_path / "b" / "config.pbtxt").write_text("")
    with caplog.at_level(logging.WARNING):
        found = find_versions(tmp_path)
    assert [(m, v) for m, v, _ in found] == [("a", "1"), ("b", "2"), ("b", "9"), ("b", "10")]
    assert all(d == tmp_path / m / v for m, v, d in found)
    warnings = [r.getMessage() for r in caplog.records]
    assert any("ignoring b/draft" in w for w in warnings)
    assert any("ignoring empty/notes" in w for w in warnings)
    assert any("holds no version directories" in w and "empty" in w for w in warnings)
    assert not any(STAGING_PREFIX in w or ".old" in w or ".trash" in w for w in warnings)
    assert version_dirs(tmp_path / "b") == [tmp_path / "b" / v for v in ("2", "9", "10")]


def test_published_versions_are_those_with_a_manifest(tmp_path: Path) -> None:
    assert published_versions(tmp_path / "missing") == []
    assert published_versions(tmp_path) == []
    _dirs(tmp_path / "m", "1", "2", "10", f"{STAGING_PREFIX}x")
    _dirs(tmp_path / ".hidden", "1")
    for version_dir in ("m/10", "m/2", f"m/{STAGING_PREFIX}x", ".hidden/1"):
        (tmp_path / version_dir / MANIFEST_FILE).write_text("{}")
    assert published_versions(tmp_path) == [tmp_path / "m" / "2", tmp_path / "m" / "10"]


def test_version_names_are_ascii_integers_without_leading_zeros() -> None:
    # "²" and "١" pass str.isdigit() but int() refuses the first: the walker's sort crashed.
    for name in ("²", "١", "01", "007", "1 ", "-1", "1e3", "9" * 19):
        assert not is_version_name(name), name
    assert is_version_name("0") and is_version_name("123")


def test_safe_names() -> None:
    for name in ("digits-vae", "m", "a.b_c-1", "1", "scorer.onnx"):
        assert layout.is_safe_name(name), name
    for name in ("", ".hidden", "..", "a/b", "a\\b", "a\nb", "a b", "é", "/etc", "x" * 129):
        assert not layout.is_safe_name(name), name


def test_unsafe_and_linked_directories_are_skipped_with_one_quoted_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repo = tmp_path / "repo"
    forged = "x\n2026-01-01 INFO forged line"
    _dirs(repo, "good/1", f"{forged}/1", f"good/2\n{forged}", "good/²", "odd name/1")
    outside = tmp_path / "outside"
    _dirs(outside, "1")
    (repo / "linked").symlink_to(outside, target_is_directory=True)
    (repo / "good" / "3").symlink_to(outside / "1", target_is_directory=True)
    with caplog.at_level(logging.WARNING):
        found = find_versions(repo)
    assert [(m, v) for m, v, _ in found] == [("good", "1")]
    warnings = [r.getMessage() for r in caplog.records]
    assert all("\n" not in w for w in warnings)  # no forged line
    for shown in (repr(forged), repr(f"2\n{forged}"), "'odd name'"):
        assert sum(shown in w for w in warnings) == 1, (shown, warnings)
    assert sum("'linked'" in w and "symbolic link" in w for w in warnings) == 1
    assert sum("'3'" in w and "symbolic link" in w for w in warnings) == 1
    assert sum("'²'" in w for w in warnings) == 1  # a digit to str.isdigit, not ASCII
    assert model_dirs_names(repo) == ["good"]
    assert version_dirs(repo / "good") == [repo / "good" / "1"]


def model_dirs_names(repo: Path) -> list[str]:
    return [p.name for p in layout.model_dirs(repo)]


def test_a_repository_walked_again_warns_about_each_directory_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _dirs(tmp_path, "m/1", "m/draft", "bad name/1")
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # the server polls its repository
            assert [(m, v) for m, v, _ in find_versions(tmp_path)] == [("m", "1")]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and any("'bad name'" in w for w in warnings), warnings
