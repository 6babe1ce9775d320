"""Signed versions: an ed25519 signature of a version's manifest.json, in manifest.sig beside it.

The manifest lists every other file's sha256, so a signature that verifies covers the whole
version. What is signed is SIGNED_CONTEXT followed by the manifest's exact bytes (the context
keeps a signature made for anything else from passing as one of a manifest). The manifest names
the model and version it describes and the reader checks them against the directory, so a
signed version cannot be served under another name or version.

    manifest.sig       one line: "ed25519 <key id> <base64 signature>"; the key id (KEY_ID_CHARS
                       hex digits of the sha256 of the raw public key) lets a refusal say which
                       key signed
    signing keys file  (settings.signing_keys) one base64 raw 32-byte public key a line; "#"
                       starts a comment, blank lines are ignored
    private key        PKCS#8 PEM, unencrypted, written with mode 0600 (`latentwatch keygen`)

Policy (check_signature): with `require_signed`, a version without a signature by a trusted key
is refused; with keys but without `require_signed`, a present signature must still verify and an
unsigned version loads with a warning; without keys, signatures are not checked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from latentwatch.errors import VersionRefused, quote
from latentwatch.repository.layout import MANIFEST_FILE, SIGNATURE_FILE, hidden_temp

log = logging.getLogger(__name__)

SIGNED_CONTEXT = b"latentwatch manifest signature v1\n"
ALGORITHM = "ed25519"
KEY_ID_CHARS = 16
MAX_SIGNATURE_BYTES = 1024  # one line of about 110 characters
MAX_KEYS_FILE_BYTES = 1 << 20
PRIVATE_KEY_SUFFIX = ".key"
PUBLIC_KEY_SUFFIX = ".pub"
_SIGNATURE_LINE = re.compile(rf"{ALGORITHM} ([0-9a-f]{{{KEY_ID_CHARS}}}) ([A-Za-z0-9+/=]{{86,88}})")


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public: Ed25519PublicKey) -> str:
    """The short name of a public key in signatures, refusals and key files."""
    return hashlib.sha256(_raw(public)).hexdigest()[:KEY_ID_CHARS]


def public_key_line(public: Ed25519PublicKey) -> str:
    """The key's line for a signing keys file: base64 raw key, then its id as a comment."""
    return f"{base64.b64encode(_raw(public)).decode()}  # {ALGORITHM} key {key_id(public)}"


@dataclass(frozen=True)
class TrustedKeys:
    """The public keys a signing keys file holds, by key id."""

    source: Path
    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def read(cls, path: Path) -> TrustedKeys:
        """ValueError (or OSError) naming the line for a file that is not a list of keys."""
        with path.open("rb") as f:
            data = f.read(MAX_KEYS_FILE_BYTES + 1)
        if len(data) > MAX_KEYS_FILE_BYTES:
            raise ValueError(f"{path} is larger than {MAX_KEYS_FILE_BYTES:,} bytes")
        keys: dict[str, Ed25519PublicKey] = {}
        for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            try:
                raw = base64.b64decode(text, validate=True)
                public = Ed25519PublicKey.from_public_bytes(raw)
            except (binascii.Error, ValueError):
                raise ValueError(
                    f"{path} line {number}: {quote(text)} is not a base64 raw ed25519 public key"
                ) from None
            keys[key_id(public)] = public
        return cls(path, keys)


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def write_key_pair(private: Ed25519PrivateKey, prefix: Path) -> tuple[Path, Path]:
    """PREFIX.key (PKCS#8 PEM, mode 0600, never over an existing file) and PREFIX.pub (the
    public key line); FileExistsError when either exists."""
    private_path = prefix.with_name(prefix.name + PRIVATE_KEY_SUFFIX)
    public_path = prefix.with_name(prefix.name + PUBLIC_KEY_SUFFIX)
    if public_path.exists():
        raise FileExistsError(f"{public_path} exists")
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL with mode 0600: the key is never readable by others, not even for a moment.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public_path.write_text(public_key_line(private.public_key()) + "\n")
    return private_path, public_path


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """ValueError for a file that is not an unencrypted ed25519 private key in PEM."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (TypeError, ValueError):
        raise ValueError(f"{path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} holds a {type(key).__name__}, not an ed25519 key")
    return key


def signature_line(private: Ed25519PrivateKey, manifest_bytes: bytes) -> str:
    signature = private.sign(SIGNED_CONTEXT + manifest_bytes)
    return f"{ALGORITHM} {key_id(private.public_key())} {base64.b64encode(signature).decode()}"


def write_signature(
    version_dir: Path, private: Ed25519PrivateKey, manifest_bytes: bytes
) -> str:
    """Writes the signature of `manifest_bytes` (the version's manifest.json as the caller read
    and checked it: signing vouches for what is there) to manifest.sig, replaced atomically;
    the key id."""
    line = signature_line(private, manifest_bytes)
    temp = version_dir / hidden_temp(SIGNATURE_FILE)
    temp.write_text(line + "\n")
    temp.replace(version_dir / SIGNATURE_FILE)
    return key_id(private.public_key())


def check_signature(
    manifest_bytes: bytes,
    signature: bytes | None,
    keys: TrustedKeys | None,
    require_signed: bool,
) -> str | None:
    """The id of the trusted key whose signature (manifest.sig's bytes, None when there is no
    file) verifies `manifest_bytes`, or None for a version that loads unsigned (or unchecked,
    without keys); VersionRefused saying which rule it breaks."""
    if keys is None:
        if require_signed:
            raise VersionRefused("require_signed is set but no signing_keys file names a key")
        return None
    if signature is None:
        if require_signed:
            raise VersionRefused(f"unsigned (no {SIGNATURE_FILE}) and require_signed is set")
        return None
    match = _SIGNATURE_LINE.fullmatch(signature.decode("ascii", "replace").strip())
    if match is None:
        raise VersionRefused(
            f"{SIGNATURE_FILE} is not a signature line '{ALGORITHM} <key id> <base64 signature>'"
        )
    signer, encoded = match.groups()
    public = keys.keys.get(signer)
    if public is None:
        raise VersionRefused(
            f"{SIGNATURE_FILE} is signed by key {signer}, which is not one of the "
            f"{len(keys.keys)} trusted keys in {keys.source}"
        )
    try:
        public.verify(base64.b64decode(encoded, validate=True), SIGNED_CONTEXT + manifest_bytes)
    except (InvalidSignature, binascii.Error, ValueError):
        raise VersionRefused(
            f"{SIGNATURE_FILE} by trusted key {signer} does not match {MANIFEST_FILE}: the "
            "manifest changed after it was signed (or the signature did)"
        ) from None
    return signer
