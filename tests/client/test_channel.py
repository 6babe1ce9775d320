"""The client's channel options: TLS files and tokens, checked before anything connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from latentwatch.client.channel import read_token_file
from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import InvalidInput


def test_token_files_hold_the_token_on_their_first_line(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("\n  lw_abc  \n")
    assert read_token_file(path) == "lw_abc"
    path.write_text("\n \n")
    with pytest.raises(InvalidInput, match="is empty"):
        read_token_file(path)
    with pytest.raises(InvalidInput, match="cannot read"):
        read_token_file(tmp_path / "absent")


def test_bad_tls_options_and_tokens_are_refused_at_construction(tmp_path: Path) -> None:
    pem = tmp_path / "cert.pem"
    pem.write_text("unused")
    with pytest.raises(InvalidInput, match="both tls_cert and tls_key"):
        LatentwatchClient("127.0.0.1:1", tls_cert=pem)
    with pytest.raises(InvalidInput, match="tls_ca 'nowhere.pem': cannot read"):
        LatentwatchClient("127.0.0.1:1", tls_ca="nowhere.pem")
    with pytest.raises(InvalidInput, match="metadata cannot carry"):
        LatentwatchClient("127.0.0.1:1", token="two\nlines")

