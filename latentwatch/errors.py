"""One error hierarchy and the one status table: exception class <-> gRPC status code, and
the HTTP status each code has on the KServe v2 REST port.

Server side, a class's `code` is the status its exceptions end a call with (the interceptor in
service/interceptor.py applies it to every servicer on the port); anything else becomes INTERNAL
with a generic message and the traceback in the log. Client side, `error_for_status` picks the
class to raise for a status code from the same table.
"""

from __future__ import annotations

import grpc

QUOTE_LIMIT = 120  # characters of a caller's string an error message repeats


def quote(text: object, limit: int = QUOTE_LIMIT) -> str:
    """A caller's (or a file's) string as an error or log message may repeat it: repr-quoted, so
    a newline or control character cannot forge a log line, and cut to `limit` characters with
    the full length said, so a 1 MB model name does not become a 1 MB error."""
    text = str(text)
    quoted = repr(text[: limit + 1])  # escapes make the repr longer than the text: cut it
    if len(text) <= limit and len(quoted) <= limit + 2:
        return quoted
    return f"{quoted[:limit]}... ({len(text):,} characters)"


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


class Unauthenticated(LatentwatchError):
    """No credentials, or credentials the server does not know."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(LatentwatchError):
    """Known credentials without the scope or model the call needs."""

    code = grpc.StatusCode.PERMISSION_DENIED


class StreamIdle(LatentwatchError):
    """A request stream that sent nothing for longer than the server waits."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class RequestTooLarge(LatentwatchError):
    """A request body past the server's limit (the REST port's; gRPC refuses such messages
    itself with RESOURCE_EXHAUSTED)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(LatentwatchError):
    """A request this version cannot serve as it was exported (e.g. explanations without
    explain.npz); another version, or a new export, can."""

    code = grpc.StatusCode.FAILED_PRECONDITION


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
    Unauthenticated,
    PermissionDenied,
    StreamIdle,
    RequestTooLarge,
    FailedPrecondition,
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


# The HTTP status of each gRPC status code on the REST port (service/kserve_rest.py), as Triton's
# HTTP endpoint answers them; a code not listed is 500. A class may have a status of its own.
HTTP_STATUS_TABLE: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}
_HTTP_STATUS_OF_CLASS: dict[type[LatentwatchError], int] = {RequestTooLarge: 413, StreamIdle: 408}


def http_status(error: LatentwatchError) -> int:
    """The HTTP status a REST caller gets for `error`."""
    for error_class, status in _HTTP_STATUS_OF_CLASS.items():
        if isinstance(error, error_class) and error.code == error_class.code:
            return status
    return HTTP_STATUS_TABLE.get(error.code, 500)
