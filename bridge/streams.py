"""A turn's gRPC event stream relayed as Server-Sent Events.

The response's status is decided by how the stream starts: the bridge waits (up to ``open_wait_s``) for the first
event or the call's failure, so a refused turn, a token for another session or an unknown turn get a plain HTTP
error with Salon's reason; a stream that ends at once (a resume after the last event) gets 204, which also tells
EventSource not to reconnect. A turn whose next event is slow to come (waiting for a tool result, say) opens its
stream after ``open_wait_s`` anyway, with keep-alive comments until it moves. The stream lives as long as the HTTP
response: the client going away cancels the gRPC call (whose session's disconnect policy then decides the turn).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from starlette.responses import JSONResponse, Response, StreamingResponse

from salon.bridge.errors import BridgeError, from_rpc_error
from salon.bridge.sse import KEEPALIVE, PREAMBLE, error_frame, event_frame

STREAM_HEADERS = {
    "Cache-Control": "no-store",
    # Proxies (nginx and the like) would otherwise hold events back to fill their buffers.
    "X-Accel-Buffering": "no",
}


class _Ended:
    """The stream ended (its terminal event was the last one)."""


_END = _Ended()
Item = Any  # a response message of the call, _END, or the call's BridgeError


class EventRelay:
    """Reads one server-streaming call (``SendTurn`` or ``ResumeTurn``) and writes it as SSE.

    The relay owns the call and its pending read: whatever way the response ends, :meth:`close` cancels both."""

    def __init__(self, call: Any, *, keepalive_s: float) -> None:
        self._call = call
        self._keepalive_s = keepalive_s
        self._read: asyncio.Future[Any] | None = None

    def _next(self) -> asyncio.Future[Any]:
        # One read in flight at a time, never cancelled while the stream lives: a keep-alive only stops waiting on
        # it, and the next wait takes up the same read.
        if self._read is None:
            self._read = asyncio.ensure_future(self._call.read())
        return self._read

    async def _wait(self, wait_s: float | None) -> Item | None:
        """The next item, or None when ``wait_s`` passed first."""
        read = self._next()
        done, _ = await asyncio.wait({read}, timeout=wait_s)
        if not done:
            return None
        self._read = None
        try:
            message = read.result()
        except grpc.aio.AioRpcError as exc:
            return from_rpc_error(exc)
        return _END if message is grpc.aio.EOF else message

    async def respond(self, open_wait_s: float) -> Response:
        """The HTTP response: an error, 204, or the event stream."""
        first = await self._wait(open_wait_s)
        if isinstance(first, BridgeError):
            await self.close()
            return JSONResponse(first.body(), status_code=first.http_status, headers=first.headers())
        if first is _END:
            await self.close()
            return Response(status_code=204, headers=STREAM_HEADERS)
        return StreamingResponse(self._frames(first), media_type="text/event-stream", headers=STREAM_HEADERS)

    async def _frames(self, first: Item | None) -> AsyncIterator[bytes]:
        try:
            yield PREAMBLE
            item = first
            while True:
                if item is None:
                    yield KEEPALIVE
                elif item is _END:
                    return
                elif isinstance(item, BridgeError):
                    yield error_frame(item.body())
                    return
                else:
                    yield event_frame(item.event)
                item = await self._wait(self._keepalive_s)
        finally:
            await self.close()

    async def close(self) -> None:
        """Cancel the call and its pending read. Idempotent."""
        self._call.cancel()
        read, self._read = self._read, None
        if read is not None:
            # Not awaited: this may run while the response's task is itself being cancelled, and awaiting here
            # could swallow that. The read's outcome is retrieved when it settles, so nothing is left unread.
            read.add_done_callback(_retrieve)
            read.cancel()


def _retrieve(read: asyncio.Future[Any]) -> None:
    if not read.cancelled():
        read.exception()
