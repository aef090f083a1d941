"""The host's side of a turn in flight: the bus messages that carry it, its span, and how it is settled.

A :class:`HostTurn` is the :class:`~salon.actors.turn.InFlight` the host hands a session. It owns the bus copies
of its turn (a redelivered copy joins the first while the turn runs) and settles them exactly once: all
acknowledged when the turn is done and its events are stored, all handed back when another host took the
session over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from salon.actors.emitter import EventSink
from salon.actors.events import TurnEvent
from salon.actors.turn import Turn
from salon.otel import ConsumerSpan


class BusMessage(Protocol):
    """What the host needs of a bus message (a JetStream ``Msg``)."""

    data: bytes
    headers: dict[str, str] | None

    async def ack(self) -> None:
        """Mark the message done."""
        ...

    async def in_progress(self) -> None:
        """Reset the redelivery timer."""
        ...

    async def term(self) -> None:
        """Never redeliver."""
        ...

    async def nak(self, delay: float | None = None) -> None:
        """Redeliver (after ``delay``)."""
        ...


TurnKey = tuple[str, str, str]
"""A turn in flight: (tenant, session, turn)."""


class HostTurn:
    """A turn in flight on this host, as its session sees it (:class:`~salon.actors.turn.InFlight`): events are
    published on the turn's subject; done acknowledges, release hands back, every bus copy of the turn."""

    def __init__(
        self,
        turn: Turn,
        key: TurnKey,
        *,
        publish: EventSink,
        join: Callable[[int, str], bool],
        stored: Callable[[], Awaitable[None]],
        span: ConsumerSpan,
        copies: list[BusMessage],
        registry: dict[TurnKey, HostTurn],
    ) -> None:
        self.turn = turn
        self.key = key
        self._publish = publish
        self._join = join
        self._stored = stored
        """Waits until the turn's events are stored (raises when they cannot be)."""
        self._span = span
        self.copies = copies
        """The bus messages of this turn: redelivered copies join the first."""
        self._registry = registry
        """The host's turns in flight; this one leaves it once settled."""
        self.waiting = False
        """The turn waits for tool results or approvals: not counted against the host's admission limits."""

    async def emit(self, event: TurnEvent) -> None:
        """Publish one of the turn's events."""
        await self._publish(event)

    def join_delta(self, seq: int, text: str) -> bool:
        """Add ``text`` to the turn's delta ``seq`` if it still waits for its store."""
        return self._join(seq, text)

    async def done(self) -> None:
        """The turn ended and is recorded: once its events are stored, acknowledge every copy. When they cannot
        be stored the turn stays unacknowledged (and raises): its redelivery sends what is missing."""
        try:
            await self._stored()
        except BaseException:
            self._settle()  # no longer renewed: redelivered after its ack wait
            raise
        for copy in self._settle():
            await copy.ack()

    async def release(self) -> None:
        """Another host runs the session now (or this one is closing while the turn waits): hand every copy
        back for prompt redelivery."""
        for copy in self._settle():
            await copy.nak()

    def set_waiting(self, waiting: bool) -> None:
        """Note whether the turn waits for its tools."""
        self.waiting = waiting

    def _settle(self) -> list[BusMessage]:
        self._span.end()
        if self._registry.get(self.key) is not self:
            return []
        del self._registry[self.key]
        return self.copies
