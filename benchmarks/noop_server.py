"""The transport floor: a grpc.aio Latentwatch server whose Score does no work.

    python benchmarks/noop_server.py --port P --response canned.bin

Every Score call returns the same canned ScoreResponse (serialized bytes read from a file, in
the benchmark a real response of the service), so a client sees the payload sizes of the real
service and the cost of gRPC alone. Requests are not decoded beyond what gRPC itself does.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

import grpc
from grpc_load import MAX_MESSAGE_BYTES

logger = logging.getLogger(__name__)



def _handler(canned: bytes) -> grpc.GenericRpcHandler:
    async def score(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return canned

    # No (de)serializers: bytes in, bytes out, so the server does no protobuf work either.
    method = grpc.unary_unary_rpc_method_handler(score)
    return grpc.method_handlers_generic_handler(
        "latentwatch.v1.Latentwatch", {"Score": method}
    )


async def serve(port: int, canned: bytes) -> None:
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ]
    )
    server.add_generic_rpc_handlers([_handler(canned)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    logger.info("no-op server on port %d, %d-byte responses", port, len(canned))
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--response", type=Path, required=True,
                        help="file with one serialized ScoreResponse")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    asyncio.run(serve(args.port, args.response.read_bytes()))


if __name__ == "__main__":
    main()
