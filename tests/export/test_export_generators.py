"""Export of generator families: generator.onnx (gan, cgan) and translator.onnx (pix2pix).

Tiny real runs (one epoch on 400 built-in digits) go through `export_run`, the path the CLI
takes; the versions must pass the server's checks (read_version). Behaviour asserted: tensors
and shapes, samples in data units (pixels 0..16), labels that change the sample, determinism,
parity that catches a wrong graph, and the recorded pix2pix dropout choice.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from latentwatch.export.errors import ExportError
from latentwatch.export.exporter import export_run
from latentwatch.export.generator_export import export_generator
from latentwatch.export.generator_graphs import (
    DropoutChoice,
    build_generator_graphs,
    choose_dropout,
    seeded_feeds,
    with_fixed_masks,
)
from latentwatch.export.generator_inputs import GeneratorInputs
from latentwatch.export.generator_onnx import check_generator_parity, export_generator_onnx
from latentwatch.export.generator_run import load_generator_run
from latentwatch.export.parity import ParityConfig
from latentwatch.repository.manifest import Manifest, Provenance
from latentwatch.repository.reader import read_version
from latentwatch.scoring.preprocessing import Preprocessing

KINDS = ("gan", "cgan", "pix2pix")
PIXEL_MAX = 16.0  # the built-in digits' pixel range is [0, 16]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """kind -> (run directory, exported version directory)."""
    from latentwatch.models.gan_training import GANTrainConfig, run_gan_training

    root = tmp_path_factory.mktemp("generator-runs")
    out = {}
    for kind in KINDS:
        result = run_gan_training(GANTrainConfig(
            data="digits", model=kind, out=root / kind, epochs=1, max_rows=400, seed=0,
            progress=False, sample_grids=False))
        out[kind] = (result.run_dir, export_run(result.run_dir, root / "repo", f"digits-{kind}"))
    return out


def _session(version_dir: Path, graph: str) -> ort.InferenceSession:
    manifest = Manifest.read(version_dir)
    return ort.InferenceSession(str(version_dir / manifest.graphs[graph].file),
                                providers=["CPUExecutionProvider"])


def _z(n: int, latent_dim: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, latent_dim)).astype(np.float32)


@pytest.mark.parametrize("kind", KINDS)
def test_a_version_passes_the_server_checks_and_says_what_it_makes(
    runs: dict[str, tuple[Path, Path]], kind: str
) -> None:
    version_dir = runs[kind][1]
    files = read_version(f"digits-{kind}", version_dir.name, version_dir)
    manifest = files.manifest
    graph = "translator" if kind == "pix2pix" else "generator"
    assert manifest.capabilities == (["translate"] if kind == "pix2pix" else ["generate"])
    assert list(manifest.graphs) == [graph] and f"{graph}.onnx" in manifest.sha256
    assert manifest.scoring is None and manifest.latent is None and files.calibration == {}
    spec = manifest.require_generation()
    assert spec.output_shape == [1, 8, 8] and spec.output_range == [0.0, PIXEL_MAX]
    assert spec.stabilisation  # what training used, from the checkpoint
    assert (spec.n_classes == 10) == (kind == "cgan")
    assert (spec.dropout_at_inference is not None) == (kind == "pix2pix")
    errors = manifest.parity.max_abs_error
    assert list(errors) == [f"{graph}.{'translated' if kind == 'pix2pix' else 'sample'}"]
    assert 0.0 <= next(iter(errors.values())) <= 1e-3 * PIXEL_MAX
    config = (version_dir.parent / "config.pbtxt").read_text()
    assert f'default_model_filename: "{graph}.onnx"' in config


def test_generator_tensors_are_the_contracts(runs: dict[str, tuple[Path, Path]]) -> None:
    latent_dim = Manifest.read(runs["cgan"][1]).require_generation().latent_dim
    session = _session(runs["cgan"][1], "generator")
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert inputs == {"z": ("tensor(float)", ["batch", latent_dim]),
                      "label": ("tensor(int64)", ["batch"])}
    assert [(o.name, o.shape) for o in session.get_outputs()] == [("sample",
                                                                  ["batch", 1, 8, 8])]
    translator = _session(runs["pix2pix"][1], "translator")
    assert [(i.name, i.shape) for i in translator.get_inputs()] == [("image",
                                                                    ["batch", 1, 8, 8])]
    assert [o.name for o in translator.get_outputs()] == ["translated"]
    config = (runs["cgan"][1].parent / "config.pbtxt").read_text()
    assert re.search(r'name: "label" data_type: TYPE_INT64 dims: \[ 1 \] reshape', config)
    assert re.search(r'name: "sample" data_type: TYPE_FP32 dims: \[ 1, 8, 8 \]', config)


@pytest.mark.parametrize("kind", KINDS)
def test_the_triton_config_parses_and_declares_the_graph(
    runs: dict[str, tuple[Path, Path]], kind: str
) -> None:
    from google.protobuf import text_format
    from test_export_triton import _triton_model_config

    version_dir = runs[kind][1]
    parsed = text_format.Parse((version_dir.parent / "config.pbtxt").read_text(),
                               _triton_model_config().ModelConfig())
    graph = next(iter(Manifest.read(version_dir).graphs.values()))
    assert parsed.default_model_filename == graph.file
    assert [(i.name, list(i.dims) or [1]) for i in parsed.input] == [
        (t.name, t.shape[1:] or [1]) for t in graph.inputs]
    assert [(o.name, list(o.dims)) for o in parsed.output] == [
        (t.name, t.shape[1:]) for t in graph.outputs]


def test_samples_are_in_data_units_the_models_postprocessing_baked_in(
    runs: dict[str, tuple[Path, Path]],
) -> None:
    run_dir, version_dir = runs["gan"]
    inputs = load_generator_run(run_dir)
    z = _z(32, inputs.latent_dim)
    (sample,) = _session(version_dir, "generator").run(["sample"], {"z": z})
    assert sample.shape == (32, 1, 8, 8) and sample.dtype == np.float32
    assert sample.min() >= 0.0 and sample.max() <= PIXEL_MAX
    assert sample.std() > 0.1  # not a constant image
    with torch.no_grad():
        model_space = inputs.model.generator.eval()(torch.from_numpy(z)).numpy()  # [0, 1]
    np.testing.assert_allclose(sample, model_space * PIXEL_MAX, atol=1e-4)


def test_the_label_changes_the_sample_and_samples_are_deterministic(
    runs: dict[str, tuple[Path, Path]],
) -> None:
    version_dir = runs["cgan"][1]
    latent_dim = Manifest.read(version_dir).require_generation().latent_dim
    z = np.repeat(_z(1, latent_dim), 10, axis=0)  # one z, every label
    labels = np.arange(10, dtype=np.int64)
    session = _session(version_dir, "generator")
    (by_label,) = session.run(["sample"], {"z": z, "label": labels})
    differences = np.abs(by_label[:, None] - by_label[None, :]).max(axis=(2, 3, 4))
    assert differences[~np.eye(10, dtype=bool)].min() > 0.1  # every pair of labels differs
    (again,) = _session(version_dir, "generator").run(["sample"], {"z": z, "label": labels})
    assert np.array_equal(by_label, again)  # a fresh session, the same bits
    (alone,) = session.run(["sample"], {"z": z[3:4], "label": labels[3:4]})
    np.testing.assert_allclose(alone[0], by_label[3], atol=1e-5)  # a row is its own


def test_the_translator_keeps_shape_range_and_determinism_and_records_dropout(
    runs: dict[str, tuple[Path, Path]],
) -> None:
    run_dir, version_dir = runs["pix2pix"]
    inputs = load_generator_run(run_dir)
    assert inputs.heldout_pairs is not None
    sketches = inputs.heldout_pairs[0][:16]
    session = _session(version_dir, "translator")
    (translated,) = session.run(["translated"], {"image": sketches})
    (again,) = session.run(["translated"], {"image": sketches})
    assert translated.shape == sketches.shape and np.array_equal(translated, again)
    assert translated.min() >= 0.0 and translated.max() <= PIXEL_MAX
    # The recorded mode is the one the measurement picks, and the graph computes that mode.
    generator, choice = choose_dropout(inputs, inputs.model.generator)
    spec = Manifest.read(version_dir).require_generation()
    assert spec.dropout_at_inference is choice.at_inference
    assert min(choice.l1_eval, choice.l1_fixed_mask, choice.l1_train) > 0
    from latentwatch.export.generator_graphs import Translator

    with torch.no_grad():
        expected = Translator(generator, inputs.preprocessing, [1, 8, 8])(
            torch.from_numpy(sketches)).numpy()
    np.testing.assert_allclose(translated, expected, atol=1e-4)


def test_the_dropout_rule_and_fixed_masks() -> None:
    tie = DropoutChoice(l1_eval=1.0, l1_fixed_mask=0.995, l1_train=1.2, n_pairs=10)
    assert not tie.at_inference  # a gain within the margin keeps eval mode
    better = DropoutChoice(l1_eval=1.0, l1_fixed_mask=0.9, l1_train=1.2, n_pairs=10)
    assert better.at_inference
    net = torch.nn.Sequential(torch.nn.Linear(4, 64), torch.nn.Dropout(0.5))
    fixed = with_fixed_masks(net, torch.zeros(1, 4), seed=3)
    x = torch.randn(5, 4)
    with torch.no_grad():
        out, plain = fixed(x), net.eval()(x)
    dropped = out == 0
    assert 0.2 < dropped[0].float().mean() < 0.8  # about half the units of a row are off
    assert (dropped == dropped[0]).all()  # the same mask for every row
    torch.testing.assert_close(out[~dropped], 2 * plain[~dropped])  # kept units scaled by 2
    torch.testing.assert_close(with_fixed_masks(net, torch.zeros(1, 4), seed=3)(x), out)


def _tabular_inputs() -> GeneratorInputs:
    """A tabular GAN (untrained MLP pair) with min-max scaled rows of three unlike columns."""
    from latentwatch.models.gan import GAN, GANConfig

    torch.manual_seed(0)
    model = GAN(GANConfig(kind="gan", n_features=3, latent_dim=2, hidden=(8,))).eval()
    low, span = np.array([-5.0, 0.0, 100.0]), np.array([10.0, 1.0, 50.0])
    pre = Preprocessing(kind="scale", shift=low.tolist(), scale=(1 / span).tolist(),
                        clip=(0.0, 1.0))
    provenance = Provenance(data="synthetic", n_train=1, n_validation=0, seed=0, epochs=1,
                            final_losses={}, trained_at="2026-01-01T00:00:00Z",
                            latentwatch_version="0", torch_version=torch.__version__)
    return GeneratorInputs(model=model, model_kind="gan", sample_shape=[3], preprocessing=pre,
                           provenance=provenance, latent_dim=2,
                           feature_names=["a", "b", "c"])


def test_tabular_samples_come_back_through_the_preprocessing(tmp_path: Path) -> None:
    inputs = _tabular_inputs()
    version_dir = export_generator(inputs, tmp_path, "rows-gan")
    manifest = read_version("rows-gan", "1", version_dir).manifest
    assert manifest.require_generation().output_range is None  # per-column ranges
    assert manifest.input.feature_names == ["a", "b", "c"]
    z = _z(256, 2) * 3  # far into the tails: the sigmoid saturates, the clip holds
    (rows,) = _session(version_dir, "generator").run(["sample"], {"z": z})
    assert rows.shape == (256, 3)
    assert (rows.min(axis=0) >= [-5.0, 0.0, 100.0]).all()
    assert (rows.max(axis=0) <= [5.0, 1.0, 150.0]).all()
    with torch.no_grad():
        model_space = inputs.model.generator(torch.from_numpy(z)).numpy()  # type: ignore[operator]
    np.testing.assert_allclose(rows, inputs.preprocessing.invert(model_space), rtol=1e-5,
                               atol=1e-4)


def test_parity_catches_a_graph_that_computes_something_else(tmp_path: Path) -> None:
    inputs = _tabular_inputs()
    (graph,) = build_generator_graphs(inputs)
    path = tmp_path / graph.file
    export_generator_onnx(graph, path)
    feeds = seeded_feeds(graph, 64, seed=0, n_classes=None)
    config = ParityConfig()
    assert max(check_generator_parity(graph, path, feeds, config).values()) < 1e-4
    with torch.no_grad():  # the torch model drifts after the trace: parity must notice
        inputs.model.generator.body.bias.add_(0.5)  # type: ignore[union-attr, operator]
    with pytest.raises(ExportError, match="parity failed: graph 'generator' output 'sample'"):
        check_generator_parity(graph, path, feeds, config)
