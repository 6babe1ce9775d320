"""`latentwatch export` killed with SIGKILL at any point: only complete versions ever show.

Export stages a version in a hidden <model>/.export-XXXX and renames it into place last
(export/publish.py), so a kill leaves at most a hidden staging directory behind. The test here
kills real export processes, then serves the repository over a real channel and exports again.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.layout import (
    CALIBRATION_FILE,
    MANIFEST_FILE,
    STAGING_PREFIX,
    TRITON_CONFIG_FILE,
    is_hidden,
    version_dirs,
)
from latentwatch.repository.manifest import Manifest, sha256_file
from latentwatch.wire.tensors import to_tensor

EXPORT_TIMEOUT_S = 120  # one export process, torch import included, on a busy machine
POLL_S = 0.002

Watch = Callable[[Path, set[Path]], bool]  # (model directory, entries before the export)


def staged(ready: Callable[[Path], bool]) -> Watch:
    """True once a staging directory that is new since the export started shows `ready`."""
    return lambda model_dir, before: any(
        ready(s) for s in model_dir.glob(f"{STAGING_PREFIX}*") if s not in before
    )


# Kills from outside, the moment the model directory shows this.
WATCHED: dict[str, Watch] = {
    "staging-created": staged(lambda staging: True),
    "calibration-written": staged(lambda staging: (staging / CALIBRATION_FILE).exists()),
    "version-appeared": lambda model_dir, before: any(
        p not in before for p in version_dirs(model_dir)
    ),
}
# Kills from inside, at exact points: the process SIGKILLs itself when export calls os.rename
# on its staging directory (manifest written, nothing renamed yet), or os.replace onto
# config.pbtxt (the version renamed into place, Triton's configuration not yet replaced).
INJECTED = ("before-rename", "before-triton-config")
KILL_DRIVER = f"""
import os, signal, sys
from latentwatch.cli.main import main
point = sys.argv[1]
def killing(real, when):
    def call(src, dst, *args, **kwargs):
        if when(os.path.basename(os.fspath(src)), os.path.basename(os.fspath(dst))):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(src, dst, *args, **kwargs)
    return call
if point == "before-rename":
    os.rename = killing(os.rename, lambda src, dst: src.startswith({STAGING_PREFIX!r}))
if point == "before-triton-config":
    os.replace = killing(os.replace, lambda src, dst: dst == {TRITON_CONFIG_FILE!r})
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny VAE run: one epoch on 300 digits rows (export time matters here, not quality)."""
    from latentwatch.models.training import TrainConfig, train

    config = TrainConfig(
        data="digits", model="vae", out=tmp_path_factory.mktemp("chaos") / "run", body="mlp",
        hidden=(16,), latent_dim=2, epochs=1, max_rows=300, n_importance_samples=2,
        progress=False,
    )
    return train(config)


def start_export(run_dir: Path, repo: Path, name: str, log: Path, point: str) -> subprocess.Popen:
    args = ["export", str(run_dir), "--repo", str(repo), "--name", name]
    command = [sys.executable, "-c", KILL_DRIVER, point, *args]
    with log.open("w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def kill_all_at_their_points(
    processes: dict[str, subprocess.Popen], model_dirs: dict[str, Path]
) -> dict[str, int]:
    """Polls the model directory of every watched export and SIGKILLs each export the moment
    its condition holds; returns each process's exit status."""
    before = {point: set(model_dirs[point].iterdir()) for point in processes}
    pending = dict(processes)
    deadline = time.monotonic() + EXPORT_TIMEOUT_S
    while pending and time.monotonic() < deadline:
        for point, process in list(pending.items()):
            watch = WATCHED.get(point)
            if watch is not None and watch(model_dirs[point], before[point]):
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=10)
            if process.poll() is not None:
                del pending[point]
        time.sleep(POLL_S)
    assert not pending, f"exports never ended: {sorted(pending)}"
    return {point: process.returncode for point, process in processes.items()}


def check_only_complete_versions(model_dir: Path) -> list[str]:
    """Every visible entry is config.pbtxt or a version directory holding a valid manifest
    whose files all match their sha256; returns the version names."""
    for entry in model_dir.iterdir():
        if is_hidden(entry.name) or entry.name == TRITON_CONFIG_FILE:
            continue
        assert entry.is_dir() and entry.name.isdigit(), f"stray visible entry {entry}"
    versions = []
    for version_dir in version_dirs(model_dir):
        assert (version_dir / MANIFEST_FILE).is_file(), f"{version_dir} has no manifest"
        manifest = Manifest.read(version_dir)
        assert manifest.version == version_dir.name
        for file, digest in manifest.sha256.items():
            assert sha256_file(version_dir / file) == digest, f"{version_dir / file} differs"
        versions.append(version_dir.name)
    return versions


def versions_refused(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    for family in text_string_to_metric_families(text.decode()):
        if family.name == "latentwatch_versions_refused":
            return family.samples[0].value
    raise AssertionError("latentwatch_versions_refused is missing")


def check_served(repo: Path, on_disk: dict[str, list[str]], n_features: int) -> None:
    """A fresh server lists and scores every complete version and refuses none."""
    server = ServerThread(server_settings(repo))
    try:
        stub = pb_grpc.LatentwatchStub(server.channel)
        served = {m.name: list(m.versions) for m in stub.ListModels(pb.ListModelsRequest()).models}
        assert served == on_disk
        assert versions_refused(server.running.metrics_port) == 0
        x = np.random.default_rng(0).uniform(0, 16, size=(3, n_features)).astype(np.float32)
        for name, versions in on_disk.items():
            for version in versions:
                reply = stub.Score(pb.ScoreRequest(
                    model_name=name, model_version=version, input=to_tensor(x)), timeout=30)
                assert reply.model_version == version and len(reply.p_value) == 3
    finally:
        server.close()


def test_export_killed_at_any_point_leaves_only_complete_versions(
    run_dir: Path, tmp_path: Path
) -> None:
    from latentwatch.export.exporter import export_run

    repo = tmp_path / "repo"
    points = [*WATCHED, *INJECTED]
    model_dirs = {point: repo / point for point in points}
    for point in points:  # version 1 of each model, exported in this process
        assert export_run(run_dir, repo, point).name == "1"
    n_features = Manifest.read(repo / points[0] / "1").n_features

    started_s = time.monotonic()
    processes: dict[str, subprocess.Popen] = {}
    try:
        for point in points:  # at once: each kills its own model's export
            processes[point] = start_export(run_dir, repo, point, tmp_path / f"{point}.log", point)
        codes = kill_all_at_their_points(processes, model_dirs)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    logs = {p: (tmp_path / f"{p}.log").read_text()[-2000:] for p in points}
    print(f"kills: {codes} in {time.monotonic() - started_s:.1f} s")

    on_disk = {p: check_only_complete_versions(model_dirs[p]) for p in points}
    # The kills while staging must land; after calibration or once the version shows, the
    # export may finish first (the version is complete then: also fine).
    for point in ("staging-created", *INJECTED):
        assert codes[point] == -signal.SIGKILL, f"{point}: {codes[point]}\n{logs[point]}"
    for point in ("calibration-written", "version-appeared"):
        assert codes[point] in (0, -signal.SIGKILL), f"{point}: {codes[point]}\n{logs[point]}"
    staged_dirs = {p: list(model_dirs[p].glob(f"{STAGING_PREFIX}*")) for p in points}
    assert staged_dirs["before-rename"] and all(
        (s / MANIFEST_FILE).is_file() for s in staged_dirs["before-rename"]
    ), "the kill before the rename left no staging directory with a manifest"
    assert not staged_dirs["before-triton-config"]  # renamed into place before the kill

    # Which versions each kill may leave: version 1, and version 2 once it was renamed.
    allowed = {"before-triton-config": [["1", "2"]], "version-appeared": [["1", "2"]],
               "calibration-written": [["1"], ["1", "2"]]}
    for point in points:
        assert on_disk[point] in allowed.get(point, [["1"]]), (point, on_disk[point])
    check_served(repo, on_disk, n_features)

    for point in points:  # the next export takes the next number, staging leftovers or not
        expected = str(len(on_disk[point]) + 1)
        assert export_run(run_dir, repo, point).name == expected
        assert check_only_complete_versions(model_dirs[point])[-1] == expected
    check_served(repo, {p: check_only_complete_versions(model_dirs[p]) for p in points},
                 n_features)
