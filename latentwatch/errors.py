"""One error hierarchy and the one status table: exception class <-> gRPC status code.

Server side, a class's `code` is the status its exceptions end a call with (the interceptor in
service/interceptor.py applies it to every servicer on the port); anything else becomes INTERNAL
with a generic message and the traceback in the log. Client side, `error_for_status` picks the
class to raise for a status code from the same table.
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


class VersionRefused(LatentwatchError):
    """A model version that cannot be served; the message says why."""

    # Refusals are logged and listed at load time, never sent to a caller as a status.
    code = grpc.StatusCode.INTERNAL


# The status table. Each class's `code` is what the server sends for it; for a status code, the
# client raises the first class listed here that carries it (the base class for the others).
STATUS_TABLE: tuple[type[LatentwatchError], ...] = (
    LatentwatchError,
    InvalidInput,
    ModelNotFound,
    QueueFull,
    NotReady,
    DataError,
    VersionRefused,
)
_CLASS_OF_CODE: dict[grpc.StatusCode, type[LatentwatchError]] = {}
for _error_class in STATUS_TABLE:
    _CLASS_OF_CODE.setdefault(_error_class.code, _error_class)


def error_for_status(code: grpc.StatusCode, message: str) -> LatentwatchError:
    """The exception a caller gets for a call that ended with `code` and `message`.

    Codes that no class carries (DEADLINE_EXCEEDED, CANCELLED, ...) give a LatentwatchError
    whose `code` is the real one, for callers that branch on it.
    """
    error_class = _CLASS_OF_CODE.get(code, LatentwatchError)
    error = error_class(message)
    if error.code != code:
        error.code = code
    return error
