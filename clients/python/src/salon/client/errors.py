"""Errors raised by the client: the server's gRPC status with its stable reason."""

from __future__ import annotations

import grpc

REASON_KEY = "salon-error-reason"
RETRY_AFTER_KEY = "salon-retry-after-ms"


class SalonError(Exception):
    """A call failed. ``code`` is the gRPC status, ``reason`` Salon's stable reason (UPPER_SNAKE_CASE),
    ``retry_after_s`` the server's hint when retrying may help."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(f"{code.name}: {message}" + (f" [{reason}]" if reason else ""))
        self.code = code
        self.reason = reason
        self.message = message
        self.retry_after_s = retry_after_s

    @classmethod
    def from_rpc_error(cls, error: grpc.aio.AioRpcError) -> SalonError:
        """Read code, message, reason and retry hint off a failed call."""
        trailers = dict(error.trailing_metadata() or ())
        retry_ms = trailers.get(RETRY_AFTER_KEY)
        retry_after = int(retry_ms) / 1000 if isinstance(retry_ms, str) and retry_ms.isdigit() else None
        reason = trailers.get(REASON_KEY, "")
        return cls(error.code(), reason if isinstance(reason, str) else "", error.details() or "", retry_after)
