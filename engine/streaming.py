"""Writing a call's stream to a client that may stop reading or go away.

grpc.aio has no slow-client detection: a client that stops reading holds its stream, and whatever feeds it,
forever. :class:`StreamWriter` gives each write a timeout; past it the call's relay stops (its subscription and
buffer are freed) with :class:`SlowConsumer`, and the call ends with RESOURCE_EXHAUSTED once the one write
already handed to gRPC has drained (a status cannot be sent before it).

The check costs one timer per stream, not one per write: a write is awaited directly and only notes when it
began; the stream's single timer, armed by the first write, looks at the write pending when it fires and sets
itself again for that write's deadline (a task and an ``asyncio.wait`` per event were a third of the gateway's
CPU per turn).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from salon.engine.status import ClientGone
from salon.storage.errors import ResourceExhausted
from salon.storage.reasons import Reason

log = logging.getLogger(__name__)


class SlowConsumer(ResourceExhausted):
    """The client stopped reading its stream for longer than the write timeout."""

    reason = Reason.SLOW_CONSUMER

    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            "the client stopped reading; the stream was cut off (the turn goes on and is recorded; ResumeTurn "
            "gets the rest)"
        )
        self.timeout_s = timeout_s


class StreamWriter:
    """Writes the messages of one call's stream, each within ``timeout_s``.

    When a write has been pending that long the stream is *stalled*: the callback given to :meth:`on_stall`
    runs at once (to stop what feeds the stream), and the pending write, once drained, raises
    :class:`SlowConsumer`, as does any later one. Lifecycle: :meth:`close` (idempotent) drops the timer."""

    def __init__(self, context: Any, timeout_s: float) -> None:
        self._context = context
        self._timeout_s = timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._since: float | None = None
        """When the pending write began (loop time); None between writes."""
        self._timer: asyncio.TimerHandle | None = None
        self._stall: Callable[[], None] | None = None
        self.stalled = False

    def on_stall(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` (from the event loop, not awaited) when the stream stalls."""
        self._stall = callback

    async def write(self, message: Any) -> None:
        """Write ``message``: :class:`SlowConsumer` when the client does not take it in time,
        :class:`ClientGone` when the call ended under it."""
        if self.stalled:
            raise SlowConsumer(self._timeout_s)
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        self._since = since = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(since + self._timeout_s, self._check)
        context = self._context
        try:
            await context.write(message)
        except Exception:
            if self.stalled:
                raise SlowConsumer(self._timeout_s) from None
            if context.done() or context.cancelled():
                raise ClientGone from None
            raise
        finally:
            self._since = None
        if self.stalled:
            raise SlowConsumer(self._timeout_s)

    def close(self) -> None:
        """Drop the stream's timer (the stream has ended). Idempotent."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def _check(self) -> None:
        """The timer fired: stall the stream if its pending write is past its deadline, else wait for that."""
        self._timer = None
        since, loop = self._since, self._loop
        if since is None or loop is None:
            return  # no write pending: the next write sets the timer again
        due = since + self._timeout_s
        if loop.time() < due:
            self._timer = loop.call_at(due, self._check)
            return
        # Decided one turn of the loop later: a write that completed while the loop was busy (its completion is
        # queued behind this callback) is not mistaken for a stalled one.
        loop.call_soon(self._expire, since)

    def _expire(self, since: float) -> None:
        if self._since != since:
            return  # it completed (a later write set the timer again)
        self.stalled = True
        log.warning("a client stopped reading for %.0f s; its stream is cut off", self._timeout_s)
        if self._stall is not None:
            self._stall()

    async def relay(self, events: AsyncIterator[Any], wrap: Callable[..., Any]) -> None:
        """Write each event wrapped in its response message. A slow reader stops the relay (``events`` is
        closed at once) and then gets :class:`SlowConsumer` once its pending write drained."""
        closing: list[asyncio.Future[None]] = []

        def stop_events() -> None:
            # The relay's own task is inside the pending write, so another closes the events (suspended at
            # their yield) now; the relay awaits that close before it ends.
            closing.append(asyncio.ensure_future(_close(events)))

        self.on_stall(stop_events)
        try:
            async for event in events:
                await self.write(wrap(event=event))
        finally:
            self.close()
            if closing:
                await closing[0]
            else:
                await _close(events)


async def _close(events: AsyncIterator[Any]) -> None:
    aclose = getattr(events, "aclose", None)
    if aclose is not None:
        await aclose()
