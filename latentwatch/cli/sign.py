"""`latentwatch keygen` and `latentwatch sign`: ed25519 keys, and signed model versions.

A server with `signing_keys` (and `require_signed`) serves only versions whose manifest.sig
verifies with one of its trusted keys; latentwatch.repository.signing says what is signed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from latentwatch.errors import LatentwatchError, VersionRefused
from latentwatch.repository.layout import SIGNATURE_FILE
from latentwatch.repository.reader import read_manifest
from latentwatch.repository.signing import (
    generate_key,
    public_key_line,
    read_private_key,
    write_key_pair,
    write_signature,
)


def run(args: argparse.Namespace) -> None:
    if args.command == "keygen":
        keygen(args.out)
    else:
        sign(args.key, args.version_dir)


def keygen(prefix: Path) -> None:
    private = generate_key()
    try:
        private_path, public_path = write_key_pair(private, prefix)
    except FileExistsError as err:
        raise LatentwatchError(f"{err}: nothing was written; choose another --out") from err
    print(f"private key: {private_path} (mode 0600: keep it secret, sign with it)")
    print(f"public key:  {public_path}; add its line to the server's signing keys file:")
    print(public_key_line(private.public_key()))


def sign(key_file: Path, version_dir: Path) -> None:
    try:
        private = read_private_key(key_file)
    except (OSError, ValueError) as err:
        raise LatentwatchError(f"cannot use the key: {err}") from err
    version_dir = version_dir.resolve()
    # Signing vouches for the files as they are: only a version that verifies gets signed.
    try:
        manifest, manifest_json, _ = read_manifest(version_dir.parent.name, version_dir.name,
                                                   version_dir)
    except VersionRefused as err:
        raise LatentwatchError(f"{version_dir} was not signed: {err}") from err
    key_id = write_signature(version_dir, private, manifest_json.encode("utf-8"))
    print(f"signed {manifest.name} version {manifest.version} with key {key_id}: "
          f"{version_dir / SIGNATURE_FILE}")
