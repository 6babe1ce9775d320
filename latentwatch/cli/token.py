"""`latentwatch token`: a new random token, its hash appended to the token file.

The token is printed once, on stdout; the file keeps only its sha256 (see service/auth.py for
the format). A running server picks the new line up on its next call. To revoke a token, delete
its line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from latentwatch.errors import InvalidInput, quote
from latentwatch.service.auth import SCOPES, make_entry, new_token, read_tokens


def _names(text: str | None) -> list[str]:
    return [] if text is None else [part.strip() for part in text.split(",") if part.strip()]


def add_token(path: Path, name: str, scopes: list[str], models: list[str]) -> str:
    """Appends a new token's entry to `path` (created, readable by its owner only, when
    missing) and returns the token."""
    existing = read_tokens(path) if path.exists() else ()
    if any(entry.name == name for entry in existing):
        raise InvalidInput(f"{quote(path)} already holds a token named {quote(name)}; "
                           f"delete its line to replace it")
    token = new_token()
    entry = make_entry(name, token, scopes, models or ["*"])
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as f:
        if f.tell() > 0 and not path.read_bytes().endswith(b"\n"):
            f.write("\n")
        f.write(entry.to_line() + "\n")
    return token


def run(args: argparse.Namespace) -> None:
    scopes, models = _names(args.scopes), _names(args.models)
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidInput(f"--scopes: {', '.join(map(quote, unknown)) or 'none given'}; "
                           f"choose from {','.join(SCOPES)}")
    token = add_token(args.tokens_file, args.name, scopes, models)
    print(f"added token {quote(args.name)} (scopes {','.join(scopes)}; models "
          f"{','.join(models) or '*'}) to {args.tokens_file}; it is shown once:", file=sys.stderr)
    print(token)
