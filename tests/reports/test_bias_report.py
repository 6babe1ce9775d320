"""The bias report's JSON document, summary sentences and HTML page, from reports built locally."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from latentwatch.bias.accumulator import BiasAccumulator, BiasReport
from latentwatch.bias.drift import LatentReference
from latentwatch.bias.groups import farthest_from_parity
from latentwatch.bias.options import BiasOptions
from latentwatch.reports.bias_html import Examples, RegionExamples, render_html
from latentwatch.reports.bias_json import ReportContext, report_to_dict, write_json
from latentwatch.reports.charts import image_uri, log_ticks, nice_ticks, png_bytes
from latentwatch.reports.summary import sparse_weight_share, summary

Z = 6
CONTEXT = ReportContext("digits-vae", "3", "rows.csv", created_at="2026-01-02T03:04:05Z")


def _latents(n: int, seed: int, shift: float = 0.0) -> NDArray[np.float64]:
    return np.random.default_rng(seed).normal(shift, 1.0, size=(n, Z))


def _report(
    mu: NDArray,
    *,
    ids: list[str] | None = None,
    groups: dict[str, list[str]] | None = None,
    reference: LatentReference | None = None,
    options: BiasOptions | None = None,
) -> BiasReport:
    accumulator = BiasAccumulator(Z, max_rows=100_000)
    half = mu.shape[0] // 2  # two chunks, as a stream would send them
    for part in (slice(0, half), slice(half, None)):
        accumulator.add(
            mu[part], None,
            ids=None if ids is None else ids[part],
            groups=None if groups is None else {k: v[part] for k, v in groups.items()},
        )
    return accumulator.finish(options or BiasOptions(), reference)


@pytest.fixture(scope="module")
def tail_group() -> tuple[NDArray, dict[str, list[str]]]:
    """1,000 rows; group `label=far` (10%) sits in the tails of every latent dimension."""
    mu = _latents(1000, seed=1)
    far = np.zeros(1000, dtype=bool)
    far[::10] = True
    mu[far] *= 3.0
    return mu, {"label": ["far" if f else "near" for f in far]}


def test_json_has_every_row_in_order_with_positions_as_ids(tmp_path: Path) -> None:
    mu = _latents(300, seed=0)
    report = _report(mu)
    document = report_to_dict(report, CONTEXT)
    path = tmp_path / "out" / "report.json"
    write_json(path, document)
    loaded = json.loads(path.read_text())

    assert loaded["model"] == {"name": "digits-vae", "version": "3"}
    assert loaded["data"] == "rows.csv" and loaded["created_at"] == "2026-01-02T03:04:05Z"
    assert (loaded["n_rows"], loaded["latent_dim"]) == (300, Z)
    assert (loaded["mode"], loaded["bins"], loaded["alpha"]) == ("max", 10, 1e-3)
    assert len(loaded["rows"]) == 300
    assert [r["id"] for r in loaded["rows"]] == list(range(300))
    np.testing.assert_allclose([r["weight"] for r in loaded["rows"]], report.weight)
    np.testing.assert_allclose([r["log_density"] for r in loaded["rows"]], report.log_density)
    assert loaded["effective_sample_size"] == pytest.approx(report.effective_sample_size)
    assert loaded["effective_sample_fraction"] == pytest.approx(report.effective_sample_size / 300)
    assert [r["position"] for r in loaded["sparsest"]] == report.sparsest.tolist()
    assert loaded["sparsest"][0]["id"] == int(report.sparsest[0])
    assert [r["position"] for r in loaded["densest"]] == report.densest.tolist()
    assert loaded["groups"] == [] and loaded["worst_group_ratio"] is None
    assert loaded["drift"] is None
    assert loaded["kl_to_prior"]["reference_total"] is None
    assert loaded["kl_to_prior"]["total"] == pytest.approx(float(report.kl_to_prior.sum()))
    assert len(loaded["dimensions"]) == Z
    first = loaded["dimensions"][0]
    assert len(first["edges"]) == 11 and sum(first["counts"]) == 300
    assert first["reference"] is None
    assert loaded["summary"] == summary(report)


def test_json_uses_given_ids_and_reports_groups_and_drift(
    tail_group: tuple[NDArray, dict[str, list[str]]],
) -> None:
    mu, groups = tail_group
    ids = [f"row-{i}" for i in range(mu.shape[0])]
    reference = LatentReference.from_latents(_latents(2000, seed=7))
    report = _report(mu, ids=ids, groups=groups, reference=reference)
    document = json.loads(json.dumps(report_to_dict(report, CONTEXT), allow_nan=False))

    assert [r["id"] for r in document["rows"]] == ids
    assert document["sparsest"][0]["id"] == ids[int(report.sparsest[0])]
    by_value = {g["value"]: g for g in document["groups"]}
    assert set(by_value) == {"far", "near"}
    far = by_value["far"]
    assert set(far) >= {"column", "value", "n_rows", "share", "sparse_share",
                        "representation_ratio", "mean_weight", "flagged"}
    assert far["n_rows"] == 100 and far["flagged"] is True
    assert far["representation_ratio"] > 1.25
    assert far["representation_ratio"] == pytest.approx(far["sparse_share"] / far["share"])
    # The ratio farthest from parity (latentwatch.bias.groups), significant or not.
    assert document["worst_group_ratio"] == pytest.approx(
        farthest_from_parity(report.groups).representation_ratio
    )

    drift = document["drift"]
    assert drift["overall"] == pytest.approx(report.drift.overall)  # type: ignore[union-attr]
    assert drift["level"] in {"none", "moderate", "significant"}
    assert drift["reference_rows"] == 2000
    assert [d["dimension"] for d in drift["per_dimension"]] == list(range(Z))
    assert all(set(d) == {"dimension", "psi", "mean_shift", "active"}
               for d in drift["per_dimension"])
    reference_part = document["dimensions"][2]["reference"]
    assert len(reference_part["edges"]) == len(reference_part["share"]) + 1
    assert sum(reference_part["share"]) + reference_part["below"] + reference_part["above"] == (
        pytest.approx(1.0))
    assert document["kl_to_prior"]["reference_total"] == pytest.approx(
        float(reference.kl_to_prior.sum()))


def test_non_finite_numbers_become_null() -> None:
    report = _report(_latents(50, seed=2))
    weight = report.weight.copy()
    weight[3] = np.inf
    log_density = report.log_density.copy()
    log_density[4] = np.nan
    broken = replace(report, weight=weight, log_density=log_density, effective_sample_size=np.nan)
    document = report_to_dict(broken, CONTEXT)
    text = json.dumps(document, allow_nan=False)  # raises if a NaN or Inf slipped through

    rows = json.loads(text)["rows"]
    assert rows[3]["weight"] is None and rows[4]["log_density"] is None
    assert rows[5]["weight"] == pytest.approx(report.weight[5])
    assert document["effective_sample_size"] is None


def test_summary_names_the_sparse_weight_share_and_the_group_found_in_sparse_regions(
    tail_group: tuple[NDArray, dict[str, list[str]]],
) -> None:
    mu, groups = tail_group
    report = _report(mu, groups=groups)
    n_sparse, share = sparse_weight_share(report)
    sparsest = np.argsort(report.log_density)[:n_sparse]
    assert n_sparse == 100
    assert share == pytest.approx(report.weight[sparsest].sum() / report.weight.sum())

    sentences = summary(report)
    assert sentences[0].startswith(f"The 10% of rows in the sparsest latent regions (100 rows) "
                                   f"get {100 * share:.0f}% of the resampling weight")
    ess = f"{round(report.effective_sample_size):,}"
    assert any(s.startswith(f"Effective sample size is {ess} of 1,000 rows") for s in sentences)
    far = [s for s in sentences if "label=far lies" in s]
    assert len(far) == 1
    # What was measured, with its interval and test; never a claim about the group's numbers.
    assert far[0].startswith("A larger share of group label=far lies in the sparsest latent "
                             "regions (92% of its 100 rows) than of the data overall (10%): "
                             "ratio 9.2, 95% interval ")
    assert "significant at 0.05 after Benjamini-Hochberg over 2 groups" in far[0]
    # 100 of 1,000 rows in a column of two values: also far fewer rows than an even split, said
    # against that baseline in its own sentence; neither finding claims "under-represented".
    fewer = [s for s in sentences if s.startswith("Group label=far has fewer rows")]
    assert fewer == ["Group label=far has fewer rows than an even split: it holds 10.0% of the "
                     "rows (100 of 1,000), against 50.0% for an even split of the 2 groups of "
                     "label: ratio 0.20, 95% interval [0.17, 0.24], p = 1.3e-161, significant "
                     "at 0.05 after Benjamini-Hochberg over 2 groups."]
    assert not any("represented" in s for s in sentences)
    assert any("no stored training reference" in s for s in sentences)


def test_summary_names_groups_most_in_sparse_regions_first_and_counts_the_rest() -> None:
    # Eight tight clusters in distinct histogram bins: the small ones are the sparse regions.
    sizes = [40, 60, 80, 100, 600, 900, 1100, 1120]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    mu = 5.0 * labels[:, None] + 0.1 * _latents(4000, seed=10)
    report = _report(mu, groups={"g": [f"n{sizes[k]}" for k in labels]})
    ratio = {g.value: g.representation_ratio for g in report.groups}
    flagged = [g for g in report.groups if g.flagged]
    assert sum(g.representation_ratio > 1.25 for g in flagged) >= 4
    assert sum(g.representation_ratio < 0.8 for g in flagged) >= 2

    group_sentences = [s for s in summary(report) if " share of group " in s]
    named = [s.split(" share of group g=")[1].split()[0] for s in group_sentences]
    assert len(named) == 4
    assert all(s.startswith("A larger share of group") for s in group_sentences[:3])
    assert [ratio[v] for v in named[:3]] == sorted((ratio[v] for v in ratio), reverse=True)[:3]
    assert group_sentences[3].startswith("A smaller share of group")
    assert ratio[named[3]] == min(ratio.values())
    rest = len(flagged) - 4
    assert f"{rest} more group{'s' if rest > 1 else ''}" in " ".join(summary(report))


def test_summary_without_groups_and_without_disparity() -> None:
    mu = _latents(4000, seed=3)
    assert any("No group labels" in s for s in summary(_report(mu)))
    balanced = {"half": ["a" if i % 2 else "b" for i in range(4000)]}
    sentences = summary(_report(mu, groups=balanced))
    assert any(s.startswith("No group's share of the sparsest latent regions differs from the "
                            "data's with significance at 0.05 and a ratio outside [0.8, 1.25]")
               for s in sentences)


def test_summary_reports_significant_drift_against_a_shifted_reference() -> None:
    reference = LatentReference.from_latents(_latents(3000, seed=4))
    shifted = _report(_latents(1000, seed=5, shift=1.5), reference=reference)
    same = _report(_latents(1000, seed=6), reference=reference)

    drift_sentence = next(s for s in summary(shifted) if "drift" in s.lower())
    assert drift_sentence.startswith("Significant drift against the training data (PSI ")
    assert f"over {Z} active latent dimensions" in drift_sentence
    assert next(s for s in summary(same) if "drift" in s.lower()).startswith("No drift")


def _png_pixels(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, colour type, raw scanlines) after checking the signature and every CRC."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    offset, chunks = 8, {}
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        tag = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert crc == zlib.crc32(tag + body)
        chunks[tag] = body
        offset += 12 + length
    assert set(chunks) == {b"IHDR", b"IDAT", b"IEND"}
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert depth == 8
    return width, height, colour, zlib.decompress(chunks[b"IDAT"])


def test_png_encoder_round_trips_grey_and_rgb() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    width, height, colour, raw = _png_pixels(png_bytes(grey))
    assert (width, height, colour) == (4, 3, 0)
    rows = np.frombuffer(raw, np.uint8).reshape(3, 5)
    assert (rows[:, 0] == 0).all()  # filter type "none" on every scanline
    np.testing.assert_array_equal(rows[:, 1:], grey)

    rgb = np.random.default_rng(0).integers(0, 256, size=(2, 3, 3), dtype=np.uint8)
    width, height, colour, raw = _png_pixels(png_bytes(rgb))
    assert (width, height, colour) == (3, 2, 2)
    np.testing.assert_array_equal(np.frombuffer(raw, np.uint8).reshape(2, 10)[:, 1:],
                                  rgb.reshape(2, 9))

    uri = image_uri(np.linspace(0, 1, 64), (1, 8, 8))
    assert uri.startswith("data:image/png;base64,")
    _, _, _, raw = _png_pixels(base64.b64decode(uri.split(",", 1)[1]))
    pixels = np.frombuffer(raw, np.uint8).reshape(8, 9)[:, 1:]
    assert pixels[0, 0] == 0 and pixels[-1, -1] == 255


def test_nice_ticks_are_round_and_bounded() -> None:
    assert nice_ticks(472) == [100, 200, 300, 400]
    assert nice_ticks(3) == [1, 2, 3]
    assert nice_ticks(1) == [1]
    assert [round(10**t, 6) for t in log_ticks(-0.9, 1.0)] == [0.2, 0.5, 1, 2, 5, 10]
    assert [round(10**t, 6) for t in log_ticks(-2.5, 2.5)] == [0.01, 0.1, 1, 10, 100]
    assert log_ticks(-30.0, 2.0) == [-28.0, -24.0, -20.0, -16.0, -12.0, -8.0, -4.0, 0.0]


def _assert_self_contained(page: str) -> None:
    for external in ("http://", "https://", 'src="//', "<script", "<link", "@import", "url("):
        assert external not in page, external


def test_html_is_self_contained_and_has_every_section(
    tail_group: tuple[NDArray, dict[str, list[str]]],
) -> None:
    mu, groups = tail_group
    reference = LatentReference.from_latents(_latents(2000, seed=7))
    report = _report(mu, groups=groups, reference=reference, options=BiasOptions(top_k=5))
    images = np.random.default_rng(0).random((mu.shape[0], 16))
    examples = Examples(
        image_shape=(1, 4, 4),
        densest=RegionExamples(report.densest[:3], images[report.densest[:3]], images[:3]),
        sparsest=RegionExamples(report.sparsest[:3], images[report.sparsest[:3]], None),
    )
    page = render_html(report, CONTEXT, examples)

    _assert_self_contained(page)
    assert page.startswith("<!DOCTYPE html>")
    for heading in ("Summary", "Key figures", "Groups", "Resampling weights",
                    "Latent dimensions", "Examples", "Rows at the extremes"):
        assert f"<h2>{heading}</h2>" in page
    for sentence in summary(report):
        assert sentence.replace("'", "&#x27;") in page
    assert "label=far" in page and "fair band [0.8, 1.25]" in page
    assert "training reference" in page  # the per-dimension legend
    # Densest: 3 inputs and 3 decoded; sparsest: 3 inputs, no decoded means.
    assert page.count("data:image/png;base64,") == 3 + 3 + 3
    assert "mode max · bins 10 · alpha 0.001" in page and "2026-01-02T03:04:05Z" in page


def test_html_escapes_labels_ids_and_names() -> None:
    mu = _latents(200, seed=8)
    hostile = "<script>alert(1)</script>"
    report = _report(mu, ids=[f"{hostile}{i}" for i in range(200)],
                     groups={"<b>col": [hostile if i % 2 else "x&y" for i in range(200)]})
    context = ReportContext('model"><img src=x>', "1", "<data>.csv")
    page = render_html(report, context)

    _assert_self_contained(page)
    assert hostile not in page and "<img src=x>" not in page and "<b>col" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "x&amp;y" in page and "&lt;data&gt;.csv" in page


def test_html_caps_dimension_panels_and_shows_tables_for_rows() -> None:
    z = 40
    mu = np.random.default_rng(9).normal(size=(500, z))
    accumulator = BiasAccumulator(z, max_rows=1000)
    accumulator.add(mu, None)
    report = accumulator.finish(BiasOptions(top_k=4), None)
    rows = np.random.default_rng(1).normal(size=(500, 15)) * 100
    examples = Examples(
        image_shape=None,
        densest=RegionExamples(report.densest[:2], rows[report.densest[:2]], rows[:2]),
        sparsest=RegionExamples(report.sparsest[:2], rows[report.sparsest[:2]], rows[2:4]),
    )
    page = render_html(report, CONTEXT, examples)

    _assert_self_contained(page)
    assert "Showing 32 of 40 dimensions" in page
    assert len(re.findall(r'<div class="panel">', page)) == 32
    assert "data:image/png" not in page
    assert page.count('<td class="l">decoded</td>') == 4
    assert "First 12 of 15 features." in page
