"""Server interceptors that refuse a call before its handler runs (and without parsing its request): calls
whose metadata is too large, and calls the engine cannot take on now (NATS away, disk full)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc

from salon.engine.status import abort
from salon.engine.transport import MAX_CALL_METADATA_BYTES, metadata_bytes
from salon.storage.errors import InvalidArgument, SalonError, Unavailable

Handler = Any  # grpc.RpcMethodHandler: grpc ships no type information

NATS_RETRY_AFTER_S: Final = 1.0
"""The retry hint while NATS is away: an embedded server is back within about a second."""
STORAGE_FULL_RETRY_AFTER_S: Final = 30.0
"""The retry hint while the disk is full: space comes back when someone frees it."""


class MetadataLimitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses a call whose metadata is over :data:`~salon.engine.transport.MAX_CALL_METADATA_BYTES` with
    ``INVALID_ARGUMENT`` (``CALL_METADATA_TOO_LARGE``), before authentication reads the metadata."""

    _error = InvalidArgument(
        f"the call metadata is over the limit of {MAX_CALL_METADATA_BYTES} bytes", reason="CALL_METADATA_TOO_LARGE"
    )

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Handler]], handler_call_details: Any
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or metadata_bytes(handler_call_details.invocation_metadata or ()) <= MAX_CALL_METADATA_BYTES:
            return handler
        return refusing(handler, self._error)


class Availability:
    """What the engine can take on right now. The engine's watchers set the flags; health and
    :class:`AvailabilityGate` read them.

    ``nats_methods``: method prefixes that need NATS (sessions, turns, usage counters). ``writing_methods``:
    full method names that make the engine write (new sessions, turns, ingestion).
    """

    def __init__(self, nats_methods: tuple[str, ...], writing_methods: frozenset[str]) -> None:
        self._nats_methods = nats_methods
        self._writing_methods = writing_methods
        self.bus_ready = True
        """False from a lost NATS connection until the bus is restored on the reconnected one."""
        self.disk_full = False
        """The data directory's disk is (nearly) full: see :mod:`salon.engine.disk`."""
        self.store_healthy = True
        """The batch writer can write the transcript store (the gateway refuses turns itself when not)."""

    @property
    def serving(self) -> bool:
        """What health reports: everything a new turn needs is there."""
        return self.bus_ready and not self.disk_full and self.store_healthy

    def halt(self) -> SalonError | None:
        """Why a running turn's stream is ended now, or None: a full disk keeps its events from being stored,
        so the client is told (and resumes or retries under its key once space returns) instead of waiting for
        its deadline."""
        return _DISK_FULL_WHILE_RUNNING if self.disk_full else None

    def refusal(self, method: str) -> SalonError | None:
        """Why a new call to ``method`` is refused now, or None. A full disk is named first: it is the cause
        an operator must act on, and it can also keep NATS from coming back."""
        if self.disk_full and method in self._writing_methods:
            return _DISK_FULL
        if not self.bus_ready and method.startswith(self._nats_methods):
            return _NATS_DOWN
        return None


_NATS_DOWN = Unavailable(
    "the engine's message bus (NATS) is not reachable; retry shortly",
    reason="NATS_UNAVAILABLE",
    retry_after_s=NATS_RETRY_AFTER_S,
)
_DISK_FULL_WHILE_RUNNING = Unavailable(
    "the engine's disk is full: this turn's events cannot be stored now; resume it after the last event received "
    "(or send it again under its idempotency key) once space is freed",
    reason="STORAGE_FULL",
    retry_after_s=STORAGE_FULL_RETRY_AFTER_S,
)
_DISK_FULL = Unavailable(
    "the engine's disk is full; new sessions and turns are refused until space is freed",
    reason="STORAGE_FULL",
    retry_after_s=STORAGE_FULL_RETRY_AFTER_S,
)


class AvailabilityGate(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses, at once and with a reason and retry hint, the calls :meth:`Availability.refusal` names,
    instead of letting each wait for its own NATS request or disk write to fail."""

    def __init__(self, availability: Availability) -> None:
        self._availability = availability

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Handler]], handler_call_details: Any
    ) -> Handler:
        handler = await continuation(handler_call_details)
        error = self._availability.refusal(handler_call_details.method or "")
        if handler is None or error is None:
            return handler
        return refusing(handler, error)


def refusing(handler: Handler, error: SalonError) -> Handler:
    """A handler of the same kind as ``handler`` that ends the call with ``error``, its request unread."""

    async def refuse(request: Any, context: Any) -> None:
        await abort(context, error)

    async def refuse_stream(request: Any, context: Any) -> Any:
        await abort(context, error)
        yield  # never reached: an async generator, as grpc.aio drives a response stream

    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream)
    return grpc.stream_stream_rpc_method_handler(refuse_stream)
