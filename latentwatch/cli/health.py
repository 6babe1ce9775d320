"""`latentwatch health`: exit 0 when a server's gRPC health check says SERVING, 1 otherwise.

The container image's HEALTHCHECK runs it (there is no grpc_health_probe in the image), and
scripts can use it to wait for a server. It asks grpc.health.v1 for the whole server (""),
which stays NOT_SERVING until every model version has loaded and warmed up.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

NOT_HEALTHY = 1  # Docker's HEALTHCHECK reads 1 as unhealthy (2 is reserved there)


def add_command(
    sub: argparse._SubParsersAction,
    add_connection: Callable[[argparse.ArgumentParser], None],
    positive_float: Callable[[str], float],
) -> None:
    p = sub.add_parser(
        "health", help="exit 0 when the server's gRPC health check says SERVING, else 1"
    )
    p.add_argument("--server", default=None, metavar="HOST:PORT",
                   help="server to ask (default: 127.0.0.1 and $LATENTWATCH_PORT, else 50051)")
    p.add_argument("--timeout", type=positive_float, default=3.0,
                   help="seconds to wait for SERVING before giving up (default: 3)")
    add_connection(p)


def run(args: argparse.Namespace) -> int:
    # Imported here: the parser is built for every command, the client only for this one.
    from latentwatch.cli.connect import security_options
    from latentwatch.client.client import LatentwatchClient
    from latentwatch.errors import LatentwatchError
    from latentwatch.service.settings import Settings

    target = args.server or f"127.0.0.1:{Settings().port}"
    try:
        with LatentwatchClient(
            target, timeout_s=args.timeout, **security_options(args)
        ) as client:
            client.wait_ready(args.timeout)
    except LatentwatchError as err:
        print(f"latentwatch health: {err}", file=sys.stderr)
        return NOT_HEALTHY
    print(f"{target}: SERVING")
    return 0
