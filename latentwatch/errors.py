"""One error hierarchy; each class carries the gRPC status code it maps to.

The service maps these in one place (service/errors.py); anything else becomes INTERNAL with a
generic message and the traceback in the log.
"""

from __future__ import annotations

import grpc


class LatentwatchError(Exception):
    code: grpc.StatusCode = grpc.StatusCode.INTERNAL


class InvalidInput(LatentwatchError):
    """Bad shape, datatype, byte length, NaN/Inf, empty or oversized input, bad parameters."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ModelNotFound(LatentwatchError):
    code = grpc.StatusCode.NOT_FOUND


class QueueFull(LatentwatchError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class NotReady(LatentwatchError):
    code = grpc.StatusCode.UNAVAILABLE


class DataError(LatentwatchError):
    """A data source that cannot be read: the message names the file and the problem."""

    code = grpc.StatusCode.INVALID_ARGUMENT
