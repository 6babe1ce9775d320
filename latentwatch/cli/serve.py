"""`latentwatch serve`: flags over the LATENTWATCH_* settings, then service.server.serve.

Never imports torch: the serving path does not need it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from latentwatch.service.server import serve
from latentwatch.service.settings import Settings
from latentwatch.service.workers import serve_workers


def settings_from_args(args: argparse.Namespace) -> Settings:
    """LATENTWATCH_* settings, with the flags that were given (not None) taking precedence."""
    overrides = {
        key: value
        for key in (
            "repo", "host", "port", "metrics_port", "tls_cert", "tls_key", "tls_client_ca",
            "auth_tokens", "backend", "triton_url", "http_port", "workers",
        )
        if (value := getattr(args, key, None)) is not None
    }
    return Settings(**overrides)


def run(args: argparse.Namespace) -> None:
    """Serves until SIGTERM/SIGINT, then returns after a clean stop."""
    settings = settings_from_args(args)
    cli_level = getattr(args, "log_level", None)
    # The CLI's --log-level defaults to INFO; a level other than that was asked for explicitly.
    level = cli_level if cli_level and cli_level.upper() != "INFO" else settings.log_level
    logging.getLogger().setLevel(level.upper())
    if settings.workers > 1:
        sys.exit(serve_workers(settings))
    asyncio.run(serve(settings))
