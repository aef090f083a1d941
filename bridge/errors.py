"""Errors as the bridge answers them: an HTTP status and a JSON body carrying Salon's reason.

Body: ``{"error": {"code": 404, "status": "NOT_FOUND", "reason": "SESSION_NOT_FOUND", "message": "…"}}`` (the shape
of Google's JSON errors, plus Salon's stable ``reason``), with ``retryAfterMs`` and a ``Retry-After`` header when a
retry may help. Statuses follow the usual gRPC-to-HTTP mapping (the one grpc-gateway and Google's APIs use).
Messages come from the engine, which never echoes a request; errors without a Salon reason (the gateway is
unreachable, say) get a fixed message, never gRPC's own text, which can name internal addresses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import grpc

REASON_KEY = "salon-error-reason"
RETRY_AFTER_KEY = "salon-retry-after-ms"

HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

_FIXED_MESSAGES: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.UNAVAILABLE: "the engine is unavailable; try again",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the engine did not answer in time",
    grpc.StatusCode.CANCELLED: "the call was cancelled",
    grpc.StatusCode.UNIMPLEMENTED: "the engine does not offer this call",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "the request is too large or a limit was reached",
}
_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED}
)


@dataclass(frozen=True, slots=True)
class BridgeError(Exception):
    """An error the bridge answers with: the gRPC status it stands for, Salon's reason and a message for people."""

    code: grpc.StatusCode
    reason: str
    message: str
    retry_after_ms: int | None = None
    status: int | None = None
    """An HTTP status more precise than the code's (413 and 415 have no gRPC code of their own)."""

    @property
    def http_status(self) -> int:
        """The HTTP status of this error."""
        return self.status or HTTP_STATUS.get(self.code, 500)

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later."""
        return self.code in _RETRYABLE

    def body(self) -> dict[str, Any]:
        """The JSON body."""
        error: dict[str, Any] = {
            "code": self.http_status,
            "status": self.code.name,
            "reason": self.reason,
            "message": self.message,
        }
        if self.retry_after_ms is not None:
            error["retryAfterMs"] = self.retry_after_ms
        return {"error": error}

    def headers(self) -> dict[str, str]:
        """Headers that go with the status: ``Retry-After`` (seconds), and the Bearer challenge of a 401."""
        headers: dict[str, str] = {}
        if self.retry_after_ms is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after_ms / 1000)))
        if self.code is grpc.StatusCode.UNAUTHENTICATED:
            headers["WWW-Authenticate"] = 'Bearer realm="salon", error="invalid_token"'
        return headers


def bad_request(reason: str, message: str) -> BridgeError:
    """A request the bridge refuses itself, before the engine sees it."""
    return BridgeError(grpc.StatusCode.INVALID_ARGUMENT, reason, message)


def unauthenticated(reason: str, message: str) -> BridgeError:
    """A request without a credential the bridge accepts."""
    return BridgeError(grpc.StatusCode.UNAUTHENTICATED, reason, message)


def from_rpc_error(error: grpc.aio.AioRpcError) -> BridgeError:
    """The engine's status as the bridge answers it."""
    code = error.code()
    trailing = {key: value for key, value in (error.trailing_metadata() or ()) if isinstance(value, str)}
    reason = trailing.get(REASON_KEY, "")
    retry_after: int | None = None
    raw_retry = trailing.get(RETRY_AFTER_KEY, "")
    if raw_retry.isdigit():
        retry_after = int(raw_retry)
    if reason:
        message = error.details() or code.name.lower().replace("_", " ")
    else:
        # Not an answer of Salon's (the transport's, or a proxy's): its text is not written for callers.
        reason = code.name
        message = _FIXED_MESSAGES.get(code, "the engine failed to handle this request")
    return BridgeError(code, reason, message, retry_after)
