"""One bad version never stops the server: whatever its files hold, it is refused with its reason,
counted in latentwatch_versions_refused, and every good version keeps serving.

One real server loads a repository with a good model and one broken model per case; the files
that a manifest lists must be regular files inside the version directory and within
max_model_file_bytes, and directories with unsafe names or links are skipped, not loaded.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from repo_builder import build_version
from server_harness import ServerThread, server_settings

from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.manifest import sha256_file
from latentwatch.service import loader
from latentwatch.wire.tensors import to_tensor

MAX_FILE_BYTES = 1 << 20  # the server's max_model_file_bytes here; the good files are KBs
FORGED = "x\n2026-01-01 00:00:00 INFO latentwatch: forged line"


def edit_manifest(version_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Changes manifest.json as a text editor would: no sha256 covers it."""
    data = json.loads((version_dir / "manifest.json").read_text())
    change(data)
    (version_dir / "manifest.json").write_text(json.dumps(data))


def rehash(version_dir: Path) -> None:
    """After changing a listed file: its sha256 matches again, so only its content is wrong."""
    def update(data: dict[str, Any]) -> None:
        data["sha256"] = {name: sha256_file(version_dir / name) for name in data["sha256"]}

    edit_manifest(version_dir, update)


def set_input_shape(shape: list[int]) -> Callable[[Path], None]:
    return lambda v: edit_manifest(v, lambda d: d["input"].__setitem__("shape", shape))


def calibration_zip(v: Path) -> None:
    with (v / "calibration.npy").open("wb") as f:
        np.savez(f, scores=np.zeros((99, 1)))
    rehash(v)


def calibration_truncated(v: Path) -> None:
    data = (v / "calibration.npy").read_bytes()
    (v / "calibration.npy").write_bytes(data[:200])
    rehash(v)


def calibration_int(v: Path) -> None:
    np.save(v / "calibration.npy", np.zeros((99, 1), dtype=np.int64))
    rehash(v)


def calibration_nan(v: Path) -> None:
    scores = np.load(v / "calibration.npy")
    scores[3, 0] = np.nan
    np.save(v / "calibration.npy", scores)
    rehash(v)


def calibration_huge_header(v: Path) -> None:
    # A header that declares 8 TiB of scores: checked before anything is allocated.
    header = {"descr": "<f8", "fortran_order": False, "shape": (2**40, 1)}
    with (v / "calibration.npy").open("wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(np.zeros(99).tobytes())
    rehash(v)


def reference_n_rows_vector(v: Path) -> None:
    with np.load(v / "reference.npz") as f:
        arrays = dict(f)
    arrays["n_rows"] = np.array([500, 500])
    with (v / "reference.npz").open("wb") as out:
        np.savez(out, **arrays)
    rehash(v)


def reference_not_a_zip(v: Path) -> None:
    (v / "reference.npz").write_bytes(b"not a zip archive")
    rehash(v)


def missing_encoder(v: Path) -> None:
    (v / "encoder.onnx").unlink()


def manifest_not_json(v: Path) -> None:
    (v / "manifest.json").write_text('{"name": "bad", ')


def manifest_a_list(v: Path) -> None:
    (v / "manifest.json").write_text("[1, 2, 3]")


def manifest_format_3(v: Path) -> None:
    edit_manifest(v, lambda d: d.__setitem__("format_version", 3))


def manifest_nan(v: Path) -> None:
    edit_manifest(v, lambda d: d["latent"].__setitem__("beta", float("nan")))  # the NaN token


def lists_etc_passwd(v: Path) -> None:
    edit_manifest(v, lambda d: d["sha256"].__setitem__("../" * 20 + "etc/passwd", "0" * 64))


def graph_outside(v: Path) -> None:
    outside = v.parents[2] / "outside-scorer.onnx"
    (v / "scorer.onnx").rename(outside)

    def point_outside(data: dict[str, Any]) -> None:
        data["graphs"]["scorer"]["file"] = str(outside)
        data["sha256"][str(outside)] = data["sha256"].pop("scorer.onnx")

    edit_manifest(v, point_outside)


def graph_symlink(v: Path) -> None:
    outside = v.parents[2] / "linked-scorer.onnx"
    (v / "scorer.onnx").rename(outside)
    (v / "scorer.onnx").symlink_to(outside)


def huge_listed_file(v: Path) -> None:
    with (v / "notes.bin").open("wb") as f:
        f.truncate(8 * 2**30)  # sparse: 8 GiB, as a stray dump would be
    edit_manifest(v, lambda d: d["sha256"].__setitem__("notes.bin", "0" * 64))


def listed_fifo(v: Path) -> None:
    os.mkfifo(v / "notes.fifo")  # opening it for reading would wait for a writer forever
    edit_manifest(v, lambda d: d["sha256"].__setitem__("notes.fifo", "0" * 64))


# model name -> (how to break it, a fragment of its refusal reason)
CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "shape-negative": (set_input_shape([-5]), "input.shape.0: Input should be greater than 0"),
    "shape-empty": (set_input_shape([]), "input.shape: List should have at least 1 item"),
    "shape-huge": (set_input_shape([2**40]), "input.shape.0: Input should be less than"),
    "calibration-zip": (calibration_zip, "calibration.npy is not an .npy array: a zip archive"),
    "calibration-truncated": (calibration_truncated, "calibration.npy cannot be read"),
    "calibration-int": (calibration_int, "calibration.npy holds [99, 1] int64"),
    "calibration-nan": (calibration_nan, "calibration.npy holds NaN"),
    "calibration-huge-header": (calibration_huge_header, "holds [1099511627776, 1] float64"),
    "reference-n-rows": (reference_n_rows_vector, "reference.npz cannot be used: TypeError"),
    "reference-not-zip": (reference_not_a_zip, "reference.npz cannot be used: not an .npz archive"),
    "missing-file": (missing_encoder, "encoder.onnx: missing"),
    "manifest-not-json": (manifest_not_json, "manifest.json is not valid: the manifest: Invalid"),
    "manifest-a-list": (manifest_a_list, "manifest.json is not valid"),
    "manifest-format-3": (manifest_format_3, "format_version 3 is not one this version"),
    "manifest-nan": (manifest_nan, "latent.beta"),
    "lists-etc-passwd": (lists_etc_passwd, "is not a file of the version directory"),
    "graph-outside": (graph_outside, "graphs.scorer.file: file name '/"),
    "graph-symlink": (graph_symlink, "scorer.onnx is a symbolic link"),
    "huge-listed-file": (huge_listed_file, "notes.bin holds 8,589,934,592 bytes, more than "
                                           f"max_model_file_bytes ({MAX_FILE_BYTES:,})"),
    "listed-fifo": (listed_fifo, "notes.fifo is not a regular file"),
}


def _check_graphs_failing_for_version_2(real: Callable[..., None]) -> Callable[..., None]:
    def check(manifest: Any, *args: Any) -> None:
        if (manifest.name, manifest.version) == ("good", "2"):
            raise RuntimeError("a bug\nINFO forged")
        real(manifest, *args)

    return check


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad_versions")
    repo = root / "repo"
    build_version(repo, "good", "1", kind="ae", n_features=5, latent_dim=2, seed=1)
    build_version(repo, "good", "2", kind="ae", n_features=5, latent_dim=2, seed=1)
    for name, (break_version, _) in CASES.items():
        with_reference = name.startswith("reference")
        break_version(build_version(repo, name, "1", kind="ae", n_features=5, latent_dim=2,
                                    with_reference=with_reference))
    # Directories the walker skips: never loaded, never refused, one quoted warning each.
    build_version(root, "elsewhere", "1", kind="ae", n_features=5, latent_dim=2)
    (repo / "good" / "3").symlink_to(root / "elsewhere" / "1", target_is_directory=True)
    (repo / "linked").symlink_to(root / "elsewhere", target_is_directory=True)
    build_version(root, "forged", "1", kind="ae", n_features=5, latent_dim=2)
    (root / "forged").rename(repo / FORGED)
    return repo


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[tuple[ServerThread, list[logging.LogRecord]]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("latentwatch").addHandler(handler)
    patch = pytest.MonkeyPatch()
    patch.setattr(loader, "check_graphs", _check_graphs_failing_for_version_2(loader.check_graphs))
    try:
        running = ServerThread(server_settings(repo, max_model_file_bytes=MAX_FILE_BYTES))
    finally:
        patch.undo()
        logging.getLogger("latentwatch").removeHandler(handler)
    yield running, records
    running.close()


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_version_is_refused_with_its_reason(
    server: tuple[ServerThread, list[logging.LogRecord]], name: str
) -> None:
    running, records = server
    refused = {(r.name, r.version): r.reason for r in running.running.core.repository.refused}
    reason = refused.get((name, "1"), "")
    assert CASES[name][1] in reason, reason
    assert "\n" not in reason
    logged = [r.getMessage() for r in records if r.levelno == logging.ERROR]
    assert any(f"refusing model {name} version 1: " in m and CASES[name][1] in m for m in logged)
    stub = pb_grpc.LatentwatchStub(running.channel)
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetModel(pb.GetModelRequest(model_name=name), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_good_versions_serve_and_the_refusals_are_counted(
    server: tuple[ServerThread, list[logging.LogRecord]],
) -> None:
    running, _ = server
    stub = pb_grpc.LatentwatchStub(running.channel)
    models = {m.name: list(m.versions) for m in stub.ListModels(pb.ListModelsRequest()).models}
    assert models == {"good": ["1"]}
    x = to_tensor(np.ones((3, 5), np.float32))
    reply = stub.Score(pb.ScoreRequest(model_name="good", input=x), timeout=10)
    assert reply.model_version == "1"
    assert np.allclose(reply.score, [5.0, 5.0, 5.0])  # the synthetic AE: sum(|x|)
    url = f"http://127.0.0.1:{running.running.metrics_port}/metrics"
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    count = next(float(line.split()[-1]) for line in text.splitlines()
                 if line.startswith("latentwatch_versions_refused "))
    assert count == len(CASES) + 1  # and good version 2, whose graph check raised


def test_an_unexpected_exception_refuses_its_version_only(
    server: tuple[ServerThread, list[logging.LogRecord]],
) -> None:
    running, records = server
    refused = {(r.name, r.version): r.reason for r in running.running.core.repository.refused}
    assert refused[("good", "2")] == "unexpected RuntimeError while loading: 'a bug INFO forged'"
    assert any(r.exc_info is not None and "good version 2" in r.getMessage() for r in records)


def test_unsafe_and_linked_directories_are_skipped_with_one_quoted_warning(
    server: tuple[ServerThread, list[logging.LogRecord]],
) -> None:
    running, records = server
    refused = {(r.name, r.version) for r in running.running.core.repository.refused}
    assert not {("linked", "1"), ("good", "3"), (FORGED, "1")} & refused
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert sum(repr(FORGED) in w for w in warnings) == 1
    assert sum("'linked'" in w and "symbolic link" in w for w in warnings) == 1
    assert sum("good/'3'" in w and "symbolic link" in w for w in warnings) == 1
    assert all("\n" not in w for w in warnings)  # no forged log line
