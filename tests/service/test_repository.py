"""Loading a repository: bad versions are refused with a reason, the others serve."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from repo_builder import build_graph, build_version
from server_harness import ServerThread, server_settings

from latentwatch.errors import ModelNotFound, NotReady
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.layout import find_versions
from latentwatch.repository.manifest import Manifest, sha256_file
from latentwatch.service.loader import load_repository
from latentwatch.service.metrics import ServiceMetrics
from latentwatch.service.runtime import CUDA
from latentwatch.service.server import start_server
from latentwatch.service.settings import Settings
from latentwatch.wire.tensors import to_tensor


def rewrite_manifest(version_dir: Path, **changes: object) -> None:
    manifest = Manifest.read(version_dir)
    sha256 = {name: sha256_file(version_dir / name) for name in manifest.sha256}
    updated = manifest.model_copy(update={"sha256": sha256, **changes})
    (version_dir / "manifest.json").write_text(updated.to_json())


def tamper(v: Path) -> None:
    with (v / "scorer.onnx").open("ab") as f:
        f.write(b"\0")


def delete_encoder(v: Path) -> None:
    (v / "encoder.onnx").unlink()


def unlist_encoder(v: Path) -> None:
    manifest = Manifest.read(v)
    sha256 = {k: h for k, h in manifest.sha256.items() if k != "encoder.onnx"}
    (v / "manifest.json").write_text(manifest.model_copy(update={"sha256": sha256}).to_json())


def wrong_version(v: Path) -> None:
    rewrite_manifest(v, version="7")


def broken_json(v: Path) -> None:
    (v / "manifest.json").write_text('{"name": ')


def cannot_score(v: Path) -> None:
    # A valid format-2 manifest of a version that only encodes.
    rewrite_manifest(v, capabilities=["encode"], scoring=None)
    Manifest.read(v)  # the manifest itself is valid: the server refuses it, not the schema


def no_manifest(v: Path) -> None:
    (v / "manifest.json").unlink()


def short_calibration(v: Path) -> None:
    np.save(v / "calibration.npy", np.zeros((5, 4)))
    rewrite_manifest(v)


def nan_calibration(v: Path) -> None:
    scores = np.load(v / "calibration.npy")
    scores[3, 0] = np.nan
    np.save(v / "calibration.npy", scores)
    rewrite_manifest(v)


def garbage_graph(v: Path) -> None:
    (v / "scorer.onnx").write_bytes(b"not an onnx model")
    rewrite_manifest(v)


def missing_output(v: Path) -> None:
    import onnx

    outputs = ["score", "neg_elbo", "iwae_nll", "recon_error", "latent_mu", "latent_logvar"]
    onnx.save(build_graph("vae", 64, 3, outputs), v / "scorer.onnx")  # no "kl"
    rewrite_manifest(v)


@pytest.mark.parametrize(
    ("break_version", "reason"),
    [
        (tamper, "scorer.onnx: sha256"),
        (delete_encoder, "encoder.onnx: missing"),
        (unlist_encoder, "files without a sha256 in manifest.json: ['encoder.onnx']"),
        (wrong_version, "describes m version 7"),
        (broken_json, "manifest.json is not valid"),
        (no_manifest, "no manifest.json"),
        (short_calibration, "holds [5, 4] float64; the manifest promises [99, 4]"),
        (nan_calibration, "NaN"),
        (garbage_graph, "ONNX Runtime cannot load"),
        (missing_output, "scorer graph lacks outputs ['kl']"),
        (cannot_score, "this server serves versions with the capabilities ['score', 'encode']"),
    ],
)
def test_a_bad_version_is_refused_with_its_reason_and_the_others_load(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    break_version: Callable[[Path], None],
    reason: str,
) -> None:
    build_version(tmp_path, "m", "1")
    break_version(build_version(tmp_path, "m", "2"))
    build_version(tmp_path, "other", "1", kind="ae", n_features=5)
    metrics = ServiceMetrics()
    with caplog.at_level(logging.ERROR):
        repository = asyncio.run(load_repository(
            tmp_path, find_versions(tmp_path), server_settings(tmp_path), metrics
        ))
    assert [(r.name, r.version) for r in repository.refused] == [("m", "2")]
    assert reason in repository.refused[0].reason
    assert any("refusing model m version 2" in r.message and reason in r.message
               for r in caplog.records if r.levelno >= logging.ERROR)
    assert repository.get("m").version == "1"  # the latest that loaded
    assert repository.get("other", "1").name == "other"
    with pytest.raises(ModelNotFound, match="refused at load"):
        repository.get("m", "2")


def test_the_latest_version_is_the_largest_integer(tmp_path: Path) -> None:
    for version in ("2", "10", "9"):
        build_version(tmp_path, "m", version)
    (tmp_path / "m" / "draft").mkdir()  # not a version: ignored
    found = find_versions(tmp_path)
    assert [v for _, v, _ in found] == ["2", "9", "10"]
    repository = asyncio.run(
        load_repository(tmp_path, found, server_settings(tmp_path), ServiceMetrics())
    )
    assert repository.get("m").version == "10"
    assert list(repository.versions["m"]) == ["2", "9", "10"]
    with pytest.raises(ModelNotFound, match=r"loaded versions: 2, 9, 10"):
        repository.get("m", "3")
    with pytest.raises(ModelNotFound, match=r"this server has: m \(versions 2, 9, 10\)"):
        repository.get("x")


def test_a_server_with_a_tampered_version_serves_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tamper(build_version(tmp_path, "img", "1"))
    build_version(tmp_path, "img", "2")
    build_version(tmp_path, "tab", "1", kind="ae", n_features=5)
    with caplog.at_level(logging.ERROR):
        server = ServerThread(server_settings(tmp_path))
    try:
        assert any("img version 1" in r.message and "sha256" in r.message
                   for r in caplog.records if r.levelno >= logging.ERROR)
        health = health_pb2_grpc.HealthStub(server.channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        assert status == health_pb2.HealthCheckResponse.SERVING
        stub = pb_grpc.LatentwatchStub(server.channel)
        models = {m.name: list(m.versions) for m in stub.ListModels(pb.ListModelsRequest()).models}
        assert models == {"img": ["2"], "tab": ["1"]}
        x = to_tensor(np.zeros((1, 64), np.float32))
        assert stub.Score(pb.ScoreRequest(model_name="img", input=x)).model_version == "2"
        with pytest.raises(grpc.RpcError) as caught:
            stub.Score(pb.ScoreRequest(model_name="img", model_version="1", input=x))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert "refused" in caught.value.details()
    finally:
        server.close()


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda repo: None, "does not exist"),
        (lambda repo: (repo / "just-a-model").mkdir(parents=True),
         "holds no version directories"),
        (lambda repo: tamper(build_version(repo, "m", "1")), "every version in"),
    ],
    ids=["missing", "empty", "all refused"],
)
def test_nothing_to_serve_fails_the_start_and_says_what_was_found(
    tmp_path: Path, make: Callable[[Path], None], message: str
) -> None:
    repo = tmp_path / "repo"
    make(repo)
    with pytest.raises(NotReady, match=message):
        asyncio.run(start_server(server_settings(repo)))


def test_require_gpu_without_cuda_keeps_the_server_not_serving(tmp_path: Path) -> None:
    build_version(tmp_path, "m", "1")
    server = ServerThread(server_settings(tmp_path, require_gpu=True))
    try:
        provider = server.running.core.get_model("m").execution_provider
        health = health_pb2_grpc.HealthStub(server.channel)
        status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        stub = pb_grpc.LatentwatchStub(server.channel)
        request = pb.ScoreRequest(model_name="m", input=to_tensor(np.zeros((1, 64), np.float32)))
        if provider == CUDA:  # a machine with a working GPU serves
            assert status == health_pb2.HealthCheckResponse.SERVING
            stub.Score(request)
        else:
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as caught:
                stub.Score(request)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "GPU is required" in caught.value.details()
    finally:
        server.close()


def test_copying_a_version_directory_is_caught(tmp_path: Path) -> None:
    shutil.copytree(build_version(tmp_path, "m", "1"), tmp_path / "m" / "2")
    repository = asyncio.run(load_repository(
        tmp_path, find_versions(tmp_path), server_settings(tmp_path), ServiceMetrics()
    ))
    assert list(repository.versions["m"]) == ["1"]
    assert "describes m version 1" in repository.refused[0].reason


def test_a_runtime_that_batches_itself_gets_requests_without_a_batching_delay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latentwatch.service import loader
    from latentwatch.service.ort_runtime import OrtRuntime

    class SelfBatching(OrtRuntime):
        batches_itself = True

    async def make(
        path: Path, settings: Settings, executor: object = None, sha256: str | None = None,
        ref: object = None,
    ) -> OrtRuntime:
        runtime = SelfBatching(path, settings.intra_op_threads)
        await runtime.load()
        return runtime

    monkeypatch.setattr(loader, "make_runtime", make)
    build_version(tmp_path, "m", "1")
    settings = server_settings(tmp_path, max_batch_delay_ms=60_000.0)
    repository = asyncio.run(
        load_repository(tmp_path, find_versions(tmp_path), settings, ServiceMetrics())
    )
    mv = repository.get("m")

    async def one_row() -> float:
        start = time.monotonic()
        await mv.scorer.submit(np.zeros((1, mv.manifest.n_features), np.float32))
        elapsed_s = time.monotonic() - start
        await repository.close()
        return elapsed_s

    assert asyncio.run(one_row()) < 30.0  # a 60 s delay would have held the lone row
