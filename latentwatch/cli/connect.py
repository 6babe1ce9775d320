"""How the CLI's client commands reach a server: the TLS and token flags as client options."""

from __future__ import annotations

import argparse
from typing import Any

from latentwatch.client.channel import read_token_file


def security_options(args: argparse.Namespace) -> dict[str, Any]:
    """LatentwatchClient keyword arguments from --tls-ca, --tls-cert, --tls-key, --token-file.

    Without --token-file the client falls back on LATENTWATCH_TOKEN. A token is never a flag of
    its own: command lines are visible to every user of the machine.
    """
    token_file = getattr(args, "token_file", None)
    return {
        "tls_ca": getattr(args, "tls_ca", None),
        "tls_cert": getattr(args, "tls_cert", None),
        "tls_key": getattr(args, "tls_key", None),
        "token": None if token_file is None else read_token_file(token_file),
    }
