"""The Triton backend (service/triton_runtime.py) against a real tritonserver.

The peer is nvidia-pytriton's tritonserver serving the Triton repository that
`write_triton_repository` made from a synthetic latentwatch repository
(deploy/triton/serve_onnx.py, in the `make triton` environment). Two latentwatch servers serve the
same repository, one on ONNX Runtime here and one with `backend="triton"` pointed at the peer;
the same rows must give the same results on both: scores within SCORE_RTOL/SCORE_ATOL (the same
graphs in the same ONNX Runtime version, batched differently), p-values and decisions exactly.
Then Triton stops (UNAVAILABLE naming its URL) and starts again (scoring recovers by itself).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from gen_builder import build_generative_version
from repo_builder import build_version
from served import rows_for
from server_harness import ServerThread, server_settings

from latentwatch.client import LatentwatchClient
from latentwatch.errors import NotReady
from latentwatch.export.triton import write_triton_repository
from latentwatch.repository.manifest import Manifest
from latentwatch.service.runtime import triton_model_name
from latentwatch.service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TRITON_VENV = Path(os.environ.get("LATENTWATCH_TRITON_VENV", ROOT / ".venv-triton"))
PEER = ROOT / "deploy" / "triton" / "serve_onnx.py"
PEER_START_S = 180.0
SCORE_RTOL = 1e-5  # Triton's batches differ from ours: float sums may round differently
SCORE_ATOL = 1e-5
IMAGE = [1, 8, 8]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Peer:
    """The pytriton tritonserver in its own process group, started and stopped by the test."""

    def __init__(self, triton_repo: Path, log: Path, models: list[tuple[str, str]]) -> None:
        failed = TRITON_VENV / ".failed"
        if failed.exists():
            pytest.skip(f"no Triton environment: {failed.read_text().strip()}")
        if not (TRITON_VENV / ".installed").exists():
            pytest.skip(f"no Triton environment at {TRITON_VENV} (`make triton` builds it)")
        self.triton_repo, self.log = triton_repo, log
        self.models = models  # (Triton model, version) pairs it must serve before it is up
        self.port = _free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [str(TRITON_VENV / "bin" / "python"), str(PEER), "--triton-repo",
                 str(self.triton_repo), "--grpc-port", str(self.port),
                 "--http-port", str(_free_port()), "--metrics-port", str(_free_port())],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        import tritonclient.grpc as triton_grpc

        client = triton_grpc.InferenceServerClient(self.url)
        deadline = time.monotonic() + PEER_START_S
        try:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"the peer exited: {self._tail()}"
                try:
                    if all(client.is_model_ready(m, v) for m, v in self.models):
                        return
                except Exception:  # not listening yet
                    pass
                time.sleep(0.5)
        finally:
            client.close()
        raise AssertionError(f"the peer was not ready in {PEER_START_S} s: {self._tail()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        group = self.proc.pid  # its own process group: tritonserver and the backend stubs
        os.killpg(group, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            pass  # killed below
        deadline = time.monotonic() + 30
        while True:  # until tritonserver, which holds the port, is gone too
            try:
                os.killpg(group, signal.SIGKILL if time.monotonic() > deadline else 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("triton-repo-source")
    build_version(repo, "img-vae", kind="vae", image_shape=IMAGE, with_decoder=True)
    build_version(repo, "tab-ae", kind="ae", n_features=5, latent_dim=2, seed=1)
    build_generative_version(repo, "img-cgan", kind="cgan", n_classes=3)
    build_generative_version(repo, "img-p2p", kind="pix2pix")
    # Two versions: the peer serves only the newest, so version 1 is never ready in Triton.
    build_version(repo, "two-ae", "1", kind="ae", n_features=5, latent_dim=2, seed=2)
    build_version(repo, "two-ae", "2", kind="ae", n_features=5, latent_dim=2, seed=3)
    return repo


@pytest.fixture(scope="module")
def peer(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peer]:
    root = tmp_path_factory.mktemp("triton")
    models = write_triton_repository(repo, root / "models")
    running = Peer(root / "models", root / "peer.log", [(m.name, m.versions[-1]) for m in models])
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def servers(
    repo: Path, peer: Peer
) -> Iterator[tuple[LatentwatchClient, LatentwatchClient, ServerThread]]:
    """Clients of a latentwatch on ONNX Runtime and one on the peer, and the latter's server."""
    local = ServerThread(server_settings(repo))
    remote = ServerThread(server_settings(
        repo, backend="triton", triton_url=peer.url, triton_ready_timeout_s=1.0,
        triton_timeout_s=5.0,
    ))
    clients = [LatentwatchClient(f"127.0.0.1:{s.running.port}") for s in (local, remote)]
    yield clients[0], clients[1], remote
    for client in clients:
        client.close()
    remote.close()
    local.close()


def _manifest(repo: Path, name: str, version: str = "1") -> Manifest:
    return Manifest.read(repo / name / version)


@pytest.mark.parametrize("name", ["img-vae", "tab-ae"])
def test_scores_and_p_values_match_onnx_runtime(servers, repo: Path, name: str) -> None:
    local, triton, _ = servers
    rows = rows_for(_manifest(repo, name), 600, seed=5)  # past max_batch_rows: several runs
    ours = local.score(name, rows, kinds=("*",), fdr=0.1)
    theirs = triton.score(name, rows, kinds=("*",), fdr=0.1)
    np.testing.assert_allclose(theirs.score, ours.score, rtol=SCORE_RTOL, atol=SCORE_ATOL)
    assert sorted(theirs.scores) == sorted(ours.scores)
    for kind in ours.scores:
        np.testing.assert_allclose(theirs.scores[kind], ours.scores[kind],
                                   rtol=SCORE_RTOL, atol=SCORE_ATOL, err_msg=kind)
    np.testing.assert_array_equal(theirs.p_value, ours.p_value)
    np.testing.assert_array_equal(theirs.is_outlier, ours.is_outlier)
    assert ours.fdr is not None and theirs.fdr is not None
    np.testing.assert_array_equal(theirs.fdr.is_outlier, ours.fdr.is_outlier)


def test_concurrent_single_rows_batch_in_triton_and_match(servers, repo: Path) -> None:
    local, triton, _ = servers
    rows = rows_for(_manifest(repo, "img-vae"), 64, seed=6)
    with ThreadPoolExecutor(16) as pool:
        theirs = list(pool.map(lambda i: triton.score("img-vae", rows[i : i + 1]), range(64)))
    ours = local.score("img-vae", rows)
    got = np.concatenate([r.score for r in theirs])
    np.testing.assert_allclose(got, ours.score, rtol=SCORE_RTOL, atol=SCORE_ATOL)
    np.testing.assert_array_equal(np.concatenate([r.p_value for r in theirs]), ours.p_value)


def test_encode_generate_and_translate_match(servers, repo: Path) -> None:
    local, triton, _ = servers
    rows = rows_for(_manifest(repo, "img-vae"), 20, seed=7)
    for theirs, ours in zip(triton.encode("img-vae", rows), local.encode("img-vae", rows),
                            strict=True):
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-6)
    for name, kw in (("img-vae", {}), ("img-cgan", {"labels": [0, 1, 2, 1]})):
        ours = local.generate(name, 4, seed=3, **kw).samples
        theirs = triton.generate(name, 4, seed=3, **kw).samples
        np.testing.assert_allclose(theirs, ours, rtol=1e-5, atol=1e-5, err_msg=name)
    images = np.random.default_rng(8).uniform(0, 16, size=(3, *IMAGE)).astype(np.float32)
    np.testing.assert_allclose(triton.translate("img-p2p", images),
                               local.translate("img-p2p", images), rtol=1e-6, atol=1e-6)


def test_versions_follow_triton_model_readiness(servers, peer: Peer) -> None:
    _, triton, server = servers
    refused = {(r.name, r.version): r.reason for r in server.running.core.repository.refused}
    reason = refused[("two-ae", "1")]
    assert f"Triton at {peer.url}" in reason and "'two-ae.scorer'" in reason
    assert "not ready after 1 s" in reason
    assert [("two-ae", "1")] == list(refused)  # every other version is served
    info = triton.get_model("two-ae")
    assert info.version == "2" and info.execution_provider == "Triton KIND_CPU"


def test_a_required_gpu_is_not_met_by_triton_cpu_instances(repo: Path, peer: Peer) -> None:
    server = ServerThread(server_settings(repo, backend="triton", triton_url=peer.url,
                                          triton_ready_timeout_s=0.5, require_gpu=True))
    try:
        with LatentwatchClient(f"127.0.0.1:{server.running.port}") as client:
            with pytest.raises(NotReady, match="a GPU is required") as err:
                client.score("tab-ae", np.zeros((1, 5), np.float32))
        assert "tab-ae:1 on Triton KIND_CPU" in str(err.value)
    finally:
        server.close()


def test_triton_outage_is_unavailable_and_scoring_recovers(servers, repo: Path, peer: Peer) -> None:
    local, triton, _ = servers
    rows = rows_for(_manifest(repo, "tab-ae"), 8, seed=9)
    expected = local.score("tab-ae", rows).score
    peer.stop()
    with pytest.raises(NotReady) as err:
        triton.score("tab-ae", rows)
    assert f"Triton at {peer.url}" in str(err.value) and "unavailable" in str(err.value)
    peer.start()
    deadline = time.monotonic() + 30
    while True:  # no restart of latentwatch: its channel reconnects
        try:
            got = triton.score("tab-ae", rows).score
            break
        except NotReady:
            assert time.monotonic() < deadline, "scoring did not recover after Triton returned"
            time.sleep(0.2)
    np.testing.assert_allclose(got, expected, rtol=SCORE_RTOL, atol=SCORE_ATOL)


def test_an_unreachable_triton_refuses_every_version_naming_the_url(repo: Path) -> None:
    url = f"127.0.0.1:{_free_port()}"  # nothing listens there
    settings = server_settings(repo, backend="triton", triton_url=url,
                               triton_ready_timeout_s=0.2)
    with pytest.raises(NotReady) as err:
        ServerThread(settings)
    message = str(err.value)
    assert "every version" in message and f"Triton at {url}" in message
    assert "not ready after 0.2 s (UNAVAILABLE" in message
    assert triton_model_name("img-vae", "scorer") in message


def test_backend_settings_from_the_environment_and_the_cli(monkeypatch) -> None:
    from latentwatch.cli.main import build_parser
    from latentwatch.cli.serve import settings_from_args

    monkeypatch.setenv("LATENTWATCH_BACKEND", "triton")
    monkeypatch.setenv("LATENTWATCH_TRITON_URL", "triton.internal:8001")
    settings = Settings()
    assert (settings.backend, settings.triton_url) == ("triton", "triton.internal:8001")
    monkeypatch.delenv("LATENTWATCH_BACKEND")
    args = build_parser().parse_args(["serve", "--backend", "triton", "--triton-url", "h:9"])
    from_flags = settings_from_args(args)
    assert (from_flags.backend, from_flags.triton_url) == ("triton", "h:9")
    with pytest.raises(ValueError, match="backend"):
        Settings(backend="tensorflow")  # type: ignore[arg-type]

