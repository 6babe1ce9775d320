"""`latentwatch keygen` and `latentwatch sign`: keys written privately, versions signed only as
they verify."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from latentwatch.cli.main import main
from latentwatch.repository.layout import SIGNATURE_FILE
from latentwatch.repository.signing import TrustedKeys, check_signature

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from repo_builder import build_version  # noqa: E402


def test_keygen_writes_a_private_key_only_its_owner_reads_and_a_key_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--out", str(tmp_path / "release")]) == 0
    private, public = tmp_path / "release.key", tmp_path / "release.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    line = public.read_text().strip()
    assert line in capsys.readouterr().out
    assert len(TrustedKeys.read(public).keys) == 1
    before = private.read_bytes()
    assert main(["keygen", "--out", str(tmp_path / "release")]) == 2
    assert "exists: nothing was written" in capsys.readouterr().err
    assert private.read_bytes() == before


def test_sign_writes_a_signature_the_server_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    version_dir = build_version(tmp_path / "repo", "m", "1", kind="ae", n_features=5)
    capsys.readouterr()
    assert main(["sign", "--key", str(tmp_path / "k.key"), str(version_dir)]) == 0
    keys = TrustedKeys.read(tmp_path / "k.pub")
    (key_id,) = keys.keys
    assert f"signed m version 1 with key {key_id}" in capsys.readouterr().out
    signature = (version_dir / SIGNATURE_FILE).read_bytes()
    manifest = (version_dir / "manifest.json").read_bytes()
    assert check_signature(manifest, signature, keys, require_signed=True) == key_id
    assert sorted(p.name for p in version_dir.iterdir() if p.name.startswith(".")) == []


def test_sign_refuses_a_version_whose_files_do_not_match(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    version_dir = build_version(tmp_path / "repo", "m", "1", kind="ae", n_features=5)
    with (version_dir / "scorer.onnx").open("ab") as f:
        f.write(b"\0")
    assert main(["sign", "--key", str(tmp_path / "k.key"), str(version_dir)]) == 2
    err = capsys.readouterr().err
    assert "was not signed: scorer.onnx: sha256" in err
    assert not (version_dir / SIGNATURE_FILE).exists()
    assert main(["sign", "--key", str(tmp_path / "k.pub"), str(version_dir)]) == 2
    assert "not an unencrypted PEM private key" in capsys.readouterr().err
