"""The one error export raises when it cannot produce a trustworthy model version."""

from __future__ import annotations

import grpc

from latentwatch.errors import LatentwatchError


class ExportError(LatentwatchError):
    """An export that failed a check (parity, ONNX validity, calibration); nothing was published.

    The message names what failed: the graph, the output, the batch size and the error seen.
    """

    # Export is offline work; if it is ever surfaced over gRPC, the precondition (a model that
    # survives export) was not met rather than the server breaking.
    code = grpc.StatusCode.FAILED_PRECONDITION
