"""The one mapping from Salon errors to gRPC statuses.

Each error becomes a status code, a message written for people (never echoing request content), and
trailing metadata: ``salon-error-reason`` (stable, machine-readable) and, when a retry may help,
``salon-retry-after-ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import grpc

from storage.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SalonError,
    Unauthenticated,
    Unavailable,
)

log = logging.getLogger(__name__)

REASON_KEY = "salon-error-reason"
RETRY_AFTER_KEY = "salon-retry-after-ms"

_CODES: list[tuple[type[SalonError], grpc.StatusCode]] = [
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
    (ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
]


class ClientGone(Exception):
    """The call ended under a write (the client hung up): nothing to answer, nothing to log."""


class Unimplemented(SalonError):
    """The RPC exists in the API but its behaviour is not available yet."""

    reason = "UNIMPLEMENTED"


def status_code(error: SalonError) -> grpc.StatusCode:
    """The gRPC status code of ``error``."""
    if isinstance(error, Unimplemented):
        return grpc.StatusCode.UNIMPLEMENTED
    for cls, code in _CODES:
        if isinstance(error, cls):
            return code
    return grpc.StatusCode.INTERNAL


def trailing_metadata(error: SalonError) -> tuple[tuple[str, str], ...]:
    """Trailing metadata that carries the reason (and retry hint) of ``error``."""
    md: list[tuple[str, str]] = [(REASON_KEY, error.reason)]
    if error.retry_after_s is not None:
        md.append((RETRY_AFTER_KEY, str(int(error.retry_after_s * 1000))))
    return tuple(md)


async def abort(context: Any, error: SalonError) -> None:
    """End the call with ``error``'s status."""
    context.set_trailing_metadata(trailing_metadata(error))
    await context.abort(status_code(error), error.message)


@contextlib.contextmanager
def as_salon_errors() -> Iterator[None]:
    """Turn unexpected exceptions into :class:`SalonError` (INTERNAL, logged) so no handler leaks a trace or
    request content to the caller."""
    try:
        yield
    except (SalonError, ClientGone, asyncio.CancelledError):
        raise
    except grpc.aio.AbortError:
        raise
    except Exception as exc:
        log.exception("unexpected error in a gRPC handler")
        raise SalonError("the engine failed to handle this request") from exc
