"""What export writes into a model repository: manifest, hashes, calibration, versions, failures."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from latentwatch.bias.drift import LatentReference
from latentwatch.cli.main import main
from latentwatch.errors import InvalidInput
from latentwatch.export.errors import ExportError
from latentwatch.export.exporter import export_inputs, export_run, load_run
from latentwatch.export.parity import ParityConfig, compare
from latentwatch.export.sessions import cpu_session, run_session
from latentwatch.repository.manifest import MANIFEST_FILE, Manifest, sha256_file, verify_files
from latentwatch.service.offline import OfflineScorer

if TYPE_CHECKING:
    from conftest import Exported

ALL_KINDS = ("vae", "ae", "beta-vae")


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_manifest_validates_and_its_hashes_match_the_files(
    exported: dict[str, Exported], kind: str
) -> None:
    version_dir = exported[kind].version_dir
    manifest = Manifest.read(version_dir)  # validates
    assert manifest.name == f"digits-{kind}" and manifest.version == version_dir.name
    assert manifest.model_kind == kind
    files = {p.name for p in version_dir.iterdir()} - {MANIFEST_FILE}
    assert set(manifest.sha256) == files == {
        "scorer.onnx", "encoder.onnx", "decoder.onnx", "calibration.npy", "second_stage.npz",
        "reference.npz", "explain.npz",
    }
    assert verify_files(version_dir, manifest) == []
    assert all(manifest.sha256[name] == sha256_file(version_dir / name) for name in files)


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_graph_files_match_the_manifest_and_load_in_onnx_runtime_1_31(
    exported: dict[str, Exported], kind: str
) -> None:
    version_dir = exported[kind].version_dir
    manifest = Manifest.read(version_dir)
    variational = kind != "ae"
    expected_kinds = (
        ["neg_elbo", "iwae_nll", "recon_error", "kl", "recon_prob_nll"] if variational
        else ["recon_error"]
    )
    assert manifest.scoring.score_kinds == [*expected_kinds, "stats_density"]
    assert manifest.scoring.default_score_kind == "stats_density"
    assert manifest.scoring.default_score_reason
    assert manifest.onnx.opset == 17 and manifest.onnx.ir_version <= 13
    for spec in manifest.graphs.values():
        model = onnx.load(str(version_dir / spec.file))
        assert model.ir_version == manifest.onnx.ir_version
        signature = ((spec.inputs, model.graph.input), (spec.outputs, model.graph.output))
        for declared, actual in signature:
            assert [t.name for t in declared] == [t.name for t in actual]
            for tensor, value in zip(declared, actual, strict=True):
                dims = value.type.tensor_type.shape.dim
                assert dims[0].dim_param == "batch"
                assert [d.dim_value for d in dims[1:]] == tensor.shape[1:]
        assert cpu_session(version_dir / spec.file).get_providers() == ["CPUExecutionProvider"]
    scorer_outputs = [t.name for t in manifest.graphs["scorer"].outputs]
    latents = ["latent_mu", "latent_logvar"] if variational else ["latent_mu"]
    assert scorer_outputs == ["score", *expected_kinds, *latents]
    assert [t.name for t in manifest.graphs["encoder"].outputs] == latents
    assert [t.name for t in manifest.graphs["decoder"].inputs] == ["latent"]
    assert [t.name for t in manifest.graphs["decoder"].outputs] == ["reconstruction"]
    assert set(manifest.parity.max_abs_error) >= {f"scorer.{name}" for name in scorer_outputs}
    assert manifest.parity.batch_sizes == [1, 64]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_calibration_holds_onnx_runtime_scores_of_the_held_out_rows(
    exported: dict[str, Exported], kind: str
) -> None:
    version_dir, run_dir = exported[kind].version_dir, exported[kind].run_dir
    manifest = Manifest.read(version_dir)
    calibration = np.load(version_dir / "calibration.npy", allow_pickle=False)
    rows = np.load(run_dir / "calibration_rows.npy", allow_pickle=False)
    assert calibration.dtype == np.float64
    assert calibration.shape == (len(rows), len(manifest.scoring.score_kinds)) == (
        manifest.scoring.calibration.size, len(manifest.scoring.calibration.score_kinds)
    )
    assert np.isfinite(calibration).all()
    scores = OfflineScorer.from_version_dir(version_dir).score(rows)
    for column, name in enumerate(manifest.scoring.score_kinds):
        np.testing.assert_allclose(calibration[:, column], scores[name], rtol=1e-6, atol=1e-7)
    graph = run_session(cpu_session(version_dir / "scorer.onnx"), "input", rows)
    for name in set(manifest.scoring.score_kinds) & set(graph):
        np.testing.assert_allclose(scores[name], graph[name], rtol=1e-6, atol=1e-7)
    assert manifest.scoring.calibration.default_alpha == 0.05
    assert str(len(rows)) in manifest.scoring.calibration.split


def test_offline_scorer_scores_only_the_kinds_asked(exported: dict[str, Exported]) -> None:
    version_dir, run_dir = exported["vae"].version_dir, exported["vae"].run_dir
    rows = np.load(run_dir / "calibration_rows.npy", allow_pickle=False)[:16]
    scorer = OfflineScorer.from_version_dir(version_dir)
    every = scorer.score(rows)
    default = scorer.default_score_kind
    one = scorer.score(rows, [default])
    assert list(one) == [default]
    np.testing.assert_array_equal(one[default], every[default])
    with pytest.raises(InvalidInput, match="unknown score kind"):
        scorer.score(rows, ["no_such_kind"])


def test_versions_count_up_and_no_staging_is_left(
    trained_runs: dict[str, Path], tmp_path: Path
) -> None:
    first = export_run(trained_runs["ae"], tmp_path, "m", default_alpha=0.1)
    second = export_run(trained_runs["ae"], tmp_path, "m")
    assert (first.name, second.name) == ("1", "2")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["1", "2", "config.pbtxt"]
    assert Manifest.read(first).scoring.calibration.default_alpha == 0.1
    assert Manifest.read(second).version == "2"
    # Same run, same fixed draws: the two versions score identically.
    np.testing.assert_array_equal(
        np.load(first / "calibration.npy"), np.load(second / "calibration.npy")
    )


class _DriftsOutsideTracing(nn.Module):
    """A model whose eager decoder differs from the traced one, as a broken export would."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.inner.encode(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        loc = self.inner.decode(z)
        return loc if torch.jit.is_tracing() else loc + 0.5

    def log_px(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        return self.inner.log_px(x, loc)

    def reconstruct(self, loc: torch.Tensor) -> torch.Tensor:
        return self.inner.reconstruct(loc)


@pytest.mark.parametrize("existing_versions", [0, 1])
def test_failed_parity_raises_and_publishes_nothing(
    trained_runs: dict[str, Path], tmp_path: Path, existing_versions: int
) -> None:
    inputs = load_run(trained_runs["vae"])
    for _ in range(existing_versions):
        export_inputs(inputs, tmp_path, "m")
    broken = dataclasses.replace(inputs, model=_DriftsOutsideTracing(inputs.model))
    with pytest.raises(ExportError, match=r"graph 'scorer' output '\w+' at batch 1: max \|ort"):
        export_inputs(broken, tmp_path, "m")
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    expected = [] if existing_versions == 0 else sorted(
        str(p.relative_to(tmp_path)) for p in [tmp_path / "m", *(tmp_path / "m").rglob("*")]
    )
    assert left == expected
    assert all("export" not in name for name in left)


def test_parity_check_fails_loudly_when_outputs_differ() -> None:
    config = ParityConfig(rtol=0.0, atol=0.0)
    expected = np.linspace(-3, 3, 64, dtype=np.float32)
    assert compare(expected, expected.copy(), config, where=("scorer", "kl", 64)) == 0.0
    nudged = expected + np.float32(1e-4)
    with pytest.raises(ExportError, match="graph 'decoder' output 'reconstruction' at batch 64"):
        compare(expected, nudged, config, where=("decoder", "reconstruction", 64))
    assert compare(expected, nudged, ParityConfig(), where=("scorer", "kl", 64)) == pytest.approx(
        1e-4, rel=1e-2
    )
    with pytest.raises(ExportError, match="non-finite"):
        compare(expected, np.full_like(expected, np.nan), ParityConfig(), where=("s", "o", 1))
    with pytest.raises(ExportError, match="shape"):
        compare(expected, expected[:1], ParityConfig(), where=("s", "o", 1))


def test_bad_requests_name_the_problem(trained_runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="checkpoint.pt"):
        export_run(tmp_path / "no-run", tmp_path / "repo", "m")
    with pytest.raises(ExportError, match="model name"):
        export_run(trained_runs["ae"], tmp_path / "repo", "../escape")
    with pytest.raises(ExportError, match="default_alpha"):
        export_run(trained_runs["ae"], tmp_path / "repo", "m", default_alpha=1.5)
    inputs = load_run(trained_runs["ae"])
    narrow = dataclasses.replace(inputs, calibration_rows=inputs.calibration_rows[:, :10])
    with pytest.raises(ExportError, match="calibration rows have shape"):
        export_inputs(narrow, tmp_path / "repo", "m")
    assert not (tmp_path / "repo").exists()


def test_cli_export_prints_where_it_exported(
    trained_runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = tmp_path / "repo"
    assert main(["export", str(trained_runs["ae"]), "--repo", str(repo), "--name", "cli-ae"]) == 0
    assert str(repo / "cli-ae" / "1") in capsys.readouterr().out
    assert main(["export", str(tmp_path / "missing"), "--repo", str(repo), "--name", "x"]) == 2
    assert "checkpoint.pt" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_reference_holds_the_training_rows_latent_means(
    exported: dict[str, Exported], kind: str
) -> None:
    version_dir, run_dir = exported[kind].version_dir, exported[kind].run_dir
    manifest = Manifest.read(version_dir)
    assert manifest.reference is not None
    reference = LatentReference.load(version_dir / manifest.reference.file)
    rows = np.load(run_dir / "train_rows.npy", allow_pickle=False)
    assert reference.n_rows == manifest.reference.n_rows == len(rows)
    assert reference.latent_dim == manifest.latent.latent_dim
    graph = "encoder.onnx" if "encoder" in manifest.graphs else "scorer.onnx"
    mu = run_session(cpu_session(version_dir / graph), "input", rows)["latent_mu"]
    np.testing.assert_allclose(reference.mean, mu.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(reference.share.sum(axis=1), 1.0)
    np.testing.assert_allclose(reference.psi_share.sum(axis=1), 1.0)
    # Autoencoders have no posterior variance; VAEs do.
    assert (reference.sigma2_mean > 0).all() == (manifest.model_kind != "ae")


def test_one_run_exports_at_another_k_and_reference_size(
    trained_runs: dict[str, Path], tmp_path: Path
) -> None:
    run_dir = trained_runs["beta-vae"]
    repo = tmp_path / "repo"
    trained_k = load_run(run_dir).n_importance_samples
    one = export_run(run_dir, repo, "k", n_importance_samples=2, n_reference_rows=64,
                     select_statistics=False)
    assert main(["export", str(run_dir), "--repo", str(repo), "--name", "k",
                 "--n-importance-samples", "4", "--no-select-statistics"]) == 0
    four = repo / "k" / "2"
    ks = [Manifest.read(v).require_latent().n_importance_samples for v in (one, four)]
    assert ks == [2, 4] and trained_k not in ks
    stages = [Manifest.read(v).require_scoring().second_stage for v in (one, four)]
    assert stages[0] is not None and stages[0].n_reference_rows == 64
    assert stages[1] is not None and stages[1].n_reference_rows == len(
        np.load(run_dir / "train_rows.npy", allow_pickle=False))
    rows = load_run(run_dir).calibration_rows[:32]
    elbo = [OfflineScorer.from_version_dir(v).score(rows)["neg_elbo"] for v in (one, four)]
    assert not np.allclose(elbo[0], elbo[1])  # other draws: other estimates of the same ELBO
    with pytest.raises(ExportError, match="draws no latent samples"):
        export_run(trained_runs["ae"], repo, "ae", n_importance_samples=2)
    with pytest.raises(ExportError, match="n_reference_rows"):
        export_run(run_dir, repo, "k", n_reference_rows=0)
    assert main(["export", str(run_dir), "--repo", str(repo), "--name", "k",
                 "--n-importance-samples", "0"]) == 2
