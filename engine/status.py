"""The one mapping from Salon errors to gRPC statuses, and the one error boundary of the servicers
(:func:`error_boundary`).

Each error becomes a status code, a message written for people (never echoing request content), and
trailing metadata: ``salon-error-reason`` (stable, machine-readable) and, when a retry may help,
``salon-retry-after-ms``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar, cast

import grpc

from salon.storage.errors import (
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
from salon.storage.reasons import Reason

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

    reason = Reason.UNIMPLEMENTED


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
    md: list[tuple[str, str]] = [(REASON_KEY, str(error.reason))]
    if error.retry_after_s is not None:
        md.append((RETRY_AFTER_KEY, str(int(error.retry_after_s * 1000))))
    return tuple(md)


async def abort(context: Any, error: SalonError) -> None:
    """End the call with ``error``'s status."""
    context.set_trailing_metadata(trailing_metadata(error))
    await context.abort(status_code(error), error.message)


def salon_error(exc: Exception) -> SalonError:
    """``exc`` as the error a caller may see: itself when it is a :class:`SalonError`; otherwise INTERNAL with
    a fixed message (the exception is logged with its traceback, never shown: it may hold request content)."""
    if isinstance(exc, SalonError):
        return exc
    log.error("unexpected error in a gRPC handler", exc_info=exc)
    return SalonError("the engine failed to handle this request")


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
        raise salon_error(exc) from exc


Handler = TypeVar("Handler", bound=Callable[..., Any])


def error_boundary(handler: Handler) -> Handler:
    """The one error boundary of a gRPC servicer method ``(self, request_or_iterator, context)``.

    A :class:`SalonError` the handler raises ends the call with its status, message and trailing metadata
    (:func:`abort`); any other exception ends it with INTERNAL and a fixed message; :class:`ClientGone` ends it
    quietly. Works for coroutine handlers (unary responses, or streams written with ``context.write``) and for
    async generator handlers (streamed responses): grpc.aio drives a handler by its kind, so the wrapper keeps
    the kind of the handler it wraps."""
    if inspect.isasyncgenfunction(handler):

        @functools.wraps(handler)
        async def stream(owner: Any, request: Any, context: Any) -> AsyncIterator[Any]:
            try:
                async with contextlib.aclosing(handler(owner, request, context)) as responses:
                    async for response in responses:
                        yield response
            except Exception as exc:
                await _end(context, exc)

        return cast(Handler, stream)
    if not inspect.iscoroutinefunction(handler):
        raise TypeError(f"{handler.__qualname__} is not an async gRPC handler")

    @functools.wraps(handler)
    async def call(owner: Any, request: Any, context: Any) -> Any:
        try:
            return await handler(owner, request, context)
        except Exception as exc:
            await _end(context, exc)
            return None  # not reached after an abort, which raises

    return cast(Handler, call)


async def _end(context: Any, exc: Exception) -> None:
    """End the call that ``exc`` interrupted."""
    if isinstance(exc, ClientGone):
        return
    if isinstance(exc, grpc.aio.AbortError):
        raise exc  # the call already has its status
    await abort(context, salon_error(exc))
