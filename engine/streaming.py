"""Writing a call's stream to a client that may stop reading or go away.

grpc.aio has no slow-client detection: a client that stops reading holds its stream, and whatever feeds it,
forever. :class:`StreamWriter` gives each write a timeout; past it the call's relay stops (its subscription and
buffer are freed) with :class:`SlowConsumer`, and the call ends with RESOURCE_EXHAUSTED once the one write
already handed to gRPC has drained (a status cannot be sent before it).
"""

from __future__ import annotations

import asyncio
import contextlib
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

    def __init__(self, pending: asyncio.Future[None], timeout_s: float) -> None:
        super().__init__(
            "the client stopped reading; the stream was cut off (the turn goes on and is recorded; ResumeTurn "
            "gets the rest)"
        )
        self.pending = pending
        self.timeout_s = timeout_s

    async def drained(self) -> None:
        """Wait until the pending write finished (or the client left): the call's status may follow then."""
        log.warning("a client stopped reading for %.0f s; its stream is cut off", self.timeout_s)
        with contextlib.suppress(Exception):
            await self.pending


def _retrieve(write: asyncio.Future[None]) -> None:
    if not write.cancelled():
        write.exception()


class StreamWriter:
    """Writes the messages of one call's stream, each within ``timeout_s``."""

    def __init__(self, context: Any, timeout_s: float) -> None:
        self._context = context
        self._timeout_s = timeout_s

    async def write(self, message: Any) -> None:
        """Write ``message``: :class:`SlowConsumer` when the client does not take it in time,
        :class:`ClientGone` when the call ended under it."""
        context = self._context
        write = asyncio.ensure_future(context.write(message))
        # If the call ends while this write is pending, its failure is expected: retrieve it, quietly.
        write.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({write}, timeout=self._timeout_s)
        if not done:
            raise SlowConsumer(write, self._timeout_s)
        if write.exception() is not None:
            if context.done() or context.cancelled():
                raise ClientGone from None
            write.result()

    async def relay(self, events: AsyncIterator[Any], wrap: Callable[..., Any]) -> None:
        """Write each event wrapped in its response message. A slow reader stops the relay (``events`` is
        closed at once) and then gets :class:`SlowConsumer` once its pending write drained."""
        try:
            async with contextlib.aclosing(events):  # type: ignore[type-var]
                async for event in events:
                    await self.write(wrap(event=event))
        except SlowConsumer as slow:
            await slow.drained()
            raise
