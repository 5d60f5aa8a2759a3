"""Typed exceptions for server errors. Each carries the gRPC status code and the server's message,
which names the problem (the unknown dataset, the bad spec field)."""

from __future__ import annotations

import grpc


class AugServeError(Exception):
    """A call to the augserve server failed. `code` is the gRPC status name, `details` the server's
    message."""

    code: str = "UNKNOWN"

    def __init__(self, details: str, code: str | None = None):
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.details}"


class InvalidArgumentError(AugServeError, ValueError):
    """A bad spec or request field; the message names the field."""

    code = "INVALID_ARGUMENT"


class NotFoundError(AugServeError, LookupError):
    """Unknown dataset."""

    code = "NOT_FOUND"


class ResourceExhaustedError(AugServeError):
    """Over a server limit (batch size, request size, concurrent streams)."""

    code = "RESOURCE_EXHAUSTED"


class OutOfRangeError(AugServeError):
    """A message over the transport's size limit."""

    code = "OUT_OF_RANGE"


class FailedPreconditionError(AugServeError):
    """An image failed and the spec's on_error is "fail"."""

    code = "FAILED_PRECONDITION"


class UnavailableError(AugServeError, ConnectionError):
    """The server cannot be reached, or the connection was lost (and could not be resumed)."""

    code = "UNAVAILABLE"


class UnauthenticatedError(AugServeError, PermissionError):
    """Missing or wrong access token."""

    code = "UNAUTHENTICATED"


class PermissionDeniedError(AugServeError, PermissionError):
    code = "PERMISSION_DENIED"


class DeadlineExceededError(AugServeError, TimeoutError):
    code = "DEADLINE_EXCEEDED"


class CancelledError(AugServeError):
    code = "CANCELLED"


class InternalError(AugServeError):
    code = "INTERNAL"


_BY_CODE = {
    cls.code: cls
    for cls in (
        InvalidArgumentError,
        NotFoundError,
        ResourceExhaustedError,
        OutOfRangeError,
        FailedPreconditionError,
        UnavailableError,
        UnauthenticatedError,
        PermissionDeniedError,
        DeadlineExceededError,
        CancelledError,
        InternalError,
    )
}


def from_rpc_error(e: grpc.RpcError) -> AugServeError:
    """The typed exception for a failed gRPC call."""
    code = e.code() if hasattr(e, "code") else None
    name = code.name if code is not None else "UNKNOWN"
    details = (e.details() if hasattr(e, "details") else None) or str(e)
    cls = _BY_CODE.get(name, AugServeError)
    return cls(details, code=name)
