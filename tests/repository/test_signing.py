"""Signatures of manifests: keys, the signature line, and the policy that refuses or admits."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from latentwatch.errors import VersionRefused
from latentwatch.repository.signing import (
    SIGNED_CONTEXT,
    TrustedKeys,
    check_signature,
    generate_key,
    key_id,
    public_key_line,
    read_private_key,
    signature_line,
    write_key_pair,
)

MANIFEST = b'{"name": "m", "version": "1"}\n'
Signer = tuple[Ed25519PrivateKey, TrustedKeys]


@pytest.fixture
def trusted(tmp_path: Path) -> Signer:
    private = generate_key()
    other = generate_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(
        "# trusted signers\n\n"
        f"{public_key_line(private.public_key())}\n"
        f"   {public_key_line(other.public_key()).split('#')[0]}   \n"
    )
    return private, TrustedKeys.read(keys_file)


def test_keys_file_with_comments_and_blank_lines(trusted: Signer) -> None:
    private, keys = trusted
    assert len(keys.keys) == 2
    assert key_id(private.public_key()) in keys.keys


def test_a_bad_keys_file_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("# ok\nnot-a-key\n")
    with pytest.raises(ValueError, match=r"line 2: 'not-a-key' is not a base64 raw ed25519"):
        TrustedKeys.read(tmp_path / "keys")


def test_a_signature_verifies_and_names_its_key(trusted: Signer) -> None:
    private, keys = trusted
    line = signature_line(private, MANIFEST).encode()
    signer = key_id(private.public_key())
    assert check_signature(MANIFEST, line, keys, require_signed=True) == signer
    assert check_signature(MANIFEST, line, keys, require_signed=False) == signer


@pytest.mark.parametrize("require_signed", [True, False])
def test_a_present_signature_must_verify_whether_or_not_signing_is_required(
    trusted: Signer, require_signed: bool
) -> None:
    private, keys = trusted
    line = signature_line(private, MANIFEST).encode()
    with pytest.raises(VersionRefused, match="does not match manifest.json"):
        check_signature(MANIFEST.replace(b'"1"', b'"2"'), line, keys, require_signed)
    stranger = signature_line(generate_key(), MANIFEST).encode()
    with pytest.raises(VersionRefused, match="which is not one of the 2 trusted keys"):
        check_signature(MANIFEST, stranger, keys, require_signed)
    with pytest.raises(VersionRefused, match="is not a signature line"):
        check_signature(MANIFEST, b"garbage\n", keys, require_signed)


def test_the_context_is_part_of_what_is_signed(trusted: Signer) -> None:
    private, keys = trusted
    raw = private.sign(MANIFEST)  # no context: another use
    line = f"ed25519 {key_id(private.public_key())} {base64.b64encode(raw).decode()}"
    with pytest.raises(VersionRefused, match="does not match"):
        check_signature(MANIFEST, line.encode(), keys, require_signed=False)
    assert SIGNED_CONTEXT.endswith(b"\n")


def test_unsigned_versions(trusted: Signer) -> None:
    _, keys = trusted
    with pytest.raises(VersionRefused, match=r"unsigned \(no manifest.sig\) and require_signed"):
        check_signature(MANIFEST, None, keys, require_signed=True)
    assert check_signature(MANIFEST, None, keys, require_signed=False) is None
    assert check_signature(MANIFEST, b"garbage", None, require_signed=False) is None  # no keys
    with pytest.raises(VersionRefused, match="no signing_keys file"):
        check_signature(MANIFEST, None, None, require_signed=True)


def test_a_key_pair_is_written_private_and_never_over_an_existing_one(tmp_path: Path) -> None:
    private = generate_key()
    private_path, public_path = write_key_pair(private, tmp_path / "release")
    assert private_path.name == "release.key" and public_path.name == "release.pub"
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert key_id(read_private_key(private_path).public_key()) == key_id(private.public_key())
    keys = TrustedKeys.read(public_path)
    assert list(keys.keys) == [key_id(private.public_key())]
    with pytest.raises(FileExistsError):
        write_key_pair(generate_key(), tmp_path / "release")
    assert key_id(read_private_key(private_path).public_key()) == key_id(private.public_key())
    with pytest.raises(ValueError, match="not an unencrypted PEM private key"):
        read_private_key(public_path)
