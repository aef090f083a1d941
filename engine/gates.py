"""Server interceptors that refuse a call before its handler runs (and without parsing its request): calls
whose metadata is too large, and calls that need NATS while the engine's connection to it is down."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import grpc

from engine.status import abort
from engine.transport import MAX_CALL_METADATA_BYTES, metadata_bytes
from storage.errors import InvalidArgument, SalonError, Unavailable

Handler = Any  # grpc.RpcMethodHandler: grpc ships no type information

NATS_RETRY_AFTER_S: Final = 1.0
"""The retry hint while NATS is away: an embedded server is back within about a second."""


class MetadataLimitInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Refuses a call whose metadata is over :data:`~engine.transport.MAX_CALL_METADATA_BYTES` with
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


class NatsGateInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """While ``available()`` is False, refuses calls to the methods under ``prefixes`` (those that need NATS:
    sessions, turns, usage) at once with ``UNAVAILABLE`` (``NATS_UNAVAILABLE``) and a retry hint, instead of
    letting each wait for its own NATS request to time out. Other services (health, knowledge) go on."""

    _error = Unavailable(
        "the engine's message bus (NATS) is not reachable; retry shortly",
        reason="NATS_UNAVAILABLE",
        retry_after_s=NATS_RETRY_AFTER_S,
    )

    def __init__(self, available: Callable[[], bool], prefixes: tuple[str, ...]) -> None:
        self._available = available
        self._prefixes = prefixes

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Handler]], handler_call_details: Any
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method or ""
        if handler is None or self._available() or not method.startswith(self._prefixes):
            return handler
        return refusing(handler, self._error)


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
