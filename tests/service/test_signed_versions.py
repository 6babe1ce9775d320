"""Signed versions on a real server: with signing keys, a present signature must verify; with
require_signed, only versions signed by a trusted key serve."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from repo_builder import build_version
from server_harness import ServerThread, server_settings

from latentwatch.cli.main import main
from latentwatch.errors import NotReady
from latentwatch.protos import latentwatch_pb2 as pb
from latentwatch.protos import latentwatch_pb2_grpc as pb_grpc
from latentwatch.repository.signing import TrustedKeys
from latentwatch.service.server import start_server
from latentwatch.wire.tensors import to_tensor


def _build(repo: Path, name: str) -> Path:
    return build_version(repo, name, "1", kind="ae", n_features=5, latent_dim=2)


def _sign(key: Path, version_dir: Path) -> None:
    assert main(["sign", "--key", str(key), str(version_dir)]) == 0


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    assert main(["keygen", "--out", str(root / "release")]) == 0
    assert main(["keygen", "--out", str(root / "stranger")]) == 0
    trusted = root / "trusted_keys"
    trusted.write_text("# release signing key\n" + (root / "release.pub").read_text())
    return {"release": root / "release.key", "stranger": root / "stranger.key",
            "trusted": trusted, "stranger_pub": root / "stranger.pub"}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Path]) -> Path:
    repo = tmp_path_factory.mktemp("signed") / "repo"
    _sign(keys["release"], _build(repo, "signed"))
    tampered = _build(repo, "tampered")
    _sign(keys["release"], tampered)
    data = json.loads((tampered / "manifest.json").read_text())
    data["scoring"]["calibration"]["default_alpha"] = 0.5  # still a valid manifest
    (tampered / "manifest.json").write_text(json.dumps(data))
    file_changed = _build(repo, "file-changed")
    _sign(keys["release"], file_changed)
    np.save(file_changed / "calibration.npy", np.zeros((99, 1)))  # the manifest is untouched
    _sign(keys["stranger"], _build(repo, "wrong-key"))
    _build(repo, "unsigned")
    return repo


@pytest.fixture(scope="module")
def stranger_id(keys: dict[str, Path]) -> str:
    return next(iter(TrustedKeys.read(keys["stranger_pub"]).keys))


def _serve(repo: Path, **settings: object) -> tuple[ServerThread, dict[str, str], list[str]]:
    """A server on `repo`: (server, refusal reason by model, warnings logged at start)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("latentwatch").addHandler(handler)
    try:
        server = ServerThread(server_settings(repo, **settings))
    finally:
        logging.getLogger("latentwatch").removeHandler(handler)
    refused = {r.name: r.reason for r in server.running.core.repository.refused}
    return server, refused, [r.getMessage() for r in records if r.levelno == logging.WARNING]


def _served(server: ServerThread) -> set[str]:
    stub = pb_grpc.LatentwatchStub(server.channel)
    served = {m.name for m in stub.ListModels(pb.ListModelsRequest()).models}
    for name in served:  # each one scores
        x = to_tensor(np.ones((2, 5), np.float32))
        assert len(stub.Score(pb.ScoreRequest(model_name=name, input=x), timeout=10).score) == 2
    return served


@pytest.fixture(scope="module")
def required(repo: Path, keys: dict[str, Path]) -> Iterator[tuple[ServerThread, dict[str, str]]]:
    server, refused, _ = _serve(repo, signing_keys=keys["trusted"], require_signed=True)
    yield server, refused
    server.close()


def test_required_signatures_serve_only_the_version_signed_by_a_trusted_key(
    required: tuple[ServerThread, dict[str, str]], stranger_id: str
) -> None:
    server, refused = required
    assert _served(server) == {"signed"}
    assert "manifest.sig by trusted key" in refused["tampered"]
    assert "does not match manifest.json" in refused["tampered"]
    assert "calibration.npy: sha256" in refused["file-changed"]  # the manifest's sha256 catch it
    assert refused["wrong-key"].startswith(f"manifest.sig is signed by key {stranger_id}, which "
                                           "is not one of the 1 trusted keys")
    assert refused["unsigned"] == "unsigned (no manifest.sig) and require_signed is set"


def test_with_keys_but_not_required_unsigned_versions_serve_with_a_warning(
    repo: Path, keys: dict[str, Path]
) -> None:
    server, refused, warnings = _serve(repo, signing_keys=keys["trusted"])
    try:
        assert _served(server) == {"signed", "unsigned"}
        assert set(refused) == {"tampered", "file-changed", "wrong-key"}  # a signature must hold
        assert sum("model unsigned version 1 is unsigned" in w for w in warnings) == 1
    finally:
        server.close()


def test_without_keys_signatures_are_not_checked(repo: Path) -> None:
    server, refused, _ = _serve(repo)
    try:
        assert _served(server) == {"signed", "tampered", "wrong-key", "unsigned"}
        assert set(refused) == {"file-changed"}
    finally:
        server.close()


def test_require_signed_without_keys_serves_nothing(repo: Path) -> None:
    with pytest.raises(NotReady, match="require_signed is set but no signing_keys file"):
        asyncio.run(start_server(server_settings(repo, require_signed=True)))
