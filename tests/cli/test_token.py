"""`latentwatch token`: a new token printed once, only its hash in the token file."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from latentwatch.cli.main import main
from latentwatch.service.auth import TokenFile, read_tokens


def _token(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["token", *args]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1  # the token alone on stdout, for `> file`
    return out[0]


def test_a_token_is_printed_once_and_only_its_hash_is_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens.jsonl"
    token = _token(["--tokens-file", str(path), "--name", "batch", "--scopes", "score,read",
                    "--models", "m1, m2"], capsys)
    assert len(token) >= 40 and token.isascii() and " " not in token
    text = path.read_text()
    assert token not in text
    entry = json.loads(text)
    assert entry == {"name": "batch", "sha256": hashlib.sha256(token.encode()).hexdigest(),
                     "scopes": ["read", "score"], "models": ["m1", "m2"]}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    found = TokenFile(path).authenticate(token)
    assert found.allows_model("m2") and not found.allows_model("m3")


def test_tokens_are_appended_and_default_to_every_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "tokens.jsonl"
    path.write_text("# kept\n")
    first = _token(["--tokens-file", str(path), "--name", "a", "--scopes", "read"], capsys)
    with path.open("a") as f:
        f.write("# no newline at the end")
    second = _token(["--tokens-file", str(path), "--name", "b", "--scopes", "admin"], capsys)
    assert first != second
    entries = read_tokens(path)
    assert [e.name for e in entries] == ["a", "b"]
    assert entries[0].allows_model("anything") and entries[1].scopes == {"admin"}
    assert path.read_text().startswith("# kept\n")


@pytest.mark.parametrize(("extra", "message"), [
    (["--name", "a", "--scopes", "score,everything"], "'everything'"),
    (["--name", "a", "--scopes", ","], "none given"),
    (["--name", "taken", "--scopes", "read"], "already holds a token named 'taken'"),
])
def test_bad_requests_are_one_line_errors_and_leave_the_file_alone(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    path = tmp_path / "tokens.jsonl"
    _token(["--tokens-file", str(path), "--name", "taken", "--scopes", "read"], capsys)
    before = path.read_text()
    assert main(["token", "--tokens-file", str(path), *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("latentwatch token: error:")
    assert message in lines[0]
    assert path.read_text() == before
