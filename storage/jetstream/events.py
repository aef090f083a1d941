"""A turn's events on the events stream: stored durably, several to a message, read back in order.

A client sees an event only once the events stream has stored it (every reader reads the stream), and the
stream is on disk: whatever fails (a host, a gateway, nats-server, the whole machine), a redelivered turn reads
back every event any client saw and continues after it instead of generating the answer again.

Storing each token as its own message would cost a disk write (an fsync, with ``sync_interval: always``) per
token. :class:`EventPublisher` stores each turn's events in order with one message in flight per turn: what the
session emits while a message is being stored goes into the next one. A fast stream packs many events into a
message, a slow one sends each event at once; ``linger_s`` (off by default) spaces a turn's messages further.
A piece of the answer emitted while the turn's previous delta still waits for its store can join that delta
(:meth:`EventPublisher.join`): it would go out with it anyway, and every hop after (the gateway, the client,
a browser) pays per event, not per character.
A message is retried, under the same ``Nats-Msg-Id``, until the stream has it, so a nats-server restart
delays events without losing or repeating one.

Wire format: a message of a turn's events ``a..b`` carries the header ``Salon-Events: a-b`` and, as its
payload, the protobuf encoding of ``repeated salon.v1.TurnEvent events = 1`` (per event: the tag byte 0x0A,
its length as a varint, its bytes). A message without the header is one serialized ``TurnEvent``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from salon.storage.bus import H_MSG_ID, REFUSALS, TERMINAL_KINDS, EventsLost
from salon.storage.errors import DeadlineExceeded, Unavailable
from salon.storage.jetstream.read import drop_consumer, read_subject
from salon.storage.reasons import Reason
from salon.storage.subjects import Names
from salon.v1 import turn_pb2

log = logging.getLogger(__name__)

H_EVENTS = "Salon-Events"
"""Header of a message of several events: the first and last sequence numbers it holds (``a-b``)."""
BATCH_EVENTS = 256
BATCH_BYTES = 256 * 1024
"""Most events and payload bytes in one stored message (well under NATS's payload limit)."""
ACCEPTED_WAIT_S = 0.003
"""How long a turn's ``accepted`` event waits for the events right behind it (citations, the first token) to go
into the same stored message: one disk write less before the first token, at most this much later for
``accepted`` (which no one waits on)."""
YIELD_EVERY = 8
"""Events a turn queues between two turns of the event loop when its producer never pauses: the store task
runs at once after an urgent event (the first token among them) or the start of a store task, and otherwise
at least this often (each turn of the loop polls the sockets: once per token was a tenth of a host's CPU)."""
MAX_PENDING_EVENTS = 4096
"""Events of one turn waiting to be stored before emitting more waits (while NATS is away)."""
MAX_JOINED_CHARS = 4096
"""Longest delta that pieces are joined into (a stalled store does not make one event of a whole answer)."""
_TAG = b"\x0a"
_NATS_ERRORS = (TimeoutError, nats.errors.Error, nats.js.errors.Error)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pack_events(events: Iterable[bytes]) -> bytes:
    """Serialized events as one payload (see the module's docstring)."""
    out = bytearray()
    for data in events:
        out += _TAG
        out += _varint(len(data))
        out += data
    return bytes(out)


def unpack_events(payload: bytes, headers: Mapping[str, str] | None) -> list[turn_pb2.TurnEvent]:
    """The events one stored message holds, in the order they were packed. Raises ``ValueError`` for a payload
    that is not a message of events."""
    if not headers or H_EVENTS not in headers:
        return [turn_pb2.TurnEvent.FromString(payload)]
    events: list[turn_pb2.TurnEvent] = []
    pos, end = 0, len(payload)
    while pos < end:
        if payload[pos : pos + 1] != _TAG:
            raise ValueError("not a message of turn events")
        pos += 1
        length = shift = 0
        while True:
            if pos >= end:
                raise ValueError("truncated message of turn events")
            byte = payload[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if pos + length > end:
            raise ValueError("truncated message of turn events")
        events.append(turn_pb2.TurnEvent.FromString(payload[pos : pos + length]))
        pos += length
    return events


def is_refusal(event: turn_pb2.TurnEvent) -> bool:
    """Whether ``event`` refused its turn before it ran (sending the turn again may run it)."""
    return event.WhichOneof("kind") == "error" and event.error.reason in REFUSALS and not event.error.partial


def in_order(events: Iterable[turn_pb2.TurnEvent]) -> list[turn_pb2.TurnEvent]:
    """The events from sequence number 1 on without a gap, each number once (the first copy kept)."""
    by_seq: dict[int, turn_pb2.TurnEvent] = {}
    for event in events:
        by_seq.setdefault(event.seq, event)
    ordered: list[turn_pb2.TurnEvent] = []
    while (following := by_seq.get(len(ordered) + 1)) is not None:
        ordered.append(following)
    return ordered


@dataclass(eq=False, slots=True)
class _TurnLog:
    """One turn's events on their way to the stream."""

    subject: str
    pending: list[turn_pb2.TurnEvent] = field(default_factory=list)
    """Events in emission order, not yet stored (serialized when taken into a message: the last may still grow)."""
    storing: int = 0
    """How many of ``pending``, from the first, are in the message being stored (fixed: none of them grows)."""
    joined: list[str] = field(default_factory=list)
    """Text joined to the last of ``pending`` (a delta) and not yet added to it: a protobuf string field copied
    and set once per piece was 5% of a host's CPU."""
    joined_chars: int = 0
    task: asyncio.Task[None] | None = None
    """Storing ``pending``, while there is any."""
    urgent_seq: int = 0
    """The last queued event that must not wait for the linger (the first delta, or any but a delta)."""
    stored_seq: int = 0
    """The last event stored."""
    deltas_seen: bool = False
    opening_until: float = 0.0
    """While ``accepted`` waits for the events behind it (see ``ACCEPTED_WAIT_S``)."""
    ended: bool = False
    """The terminal event is queued: nothing follows it."""
    last_store: float = 0.0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    room: asyncio.Event = field(default_factory=asyncio.Event)
    failing: bool = False
    unyielded: int = 0
    """Events queued since the publisher last let the event loop run (see ``YIELD_EVERY``)."""


class EventPublisher:
    """Stores turn events on their per-turn subjects (captured by the events stream), each turn's in order.

    Lifecycle: :meth:`close` (idempotent) stores what it can within a grace period and stops."""

    def __init__(self, nc: NatsClient, names: Names, *, linger_s: float = 0.0, publish_timeout_s: float = 2.0) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream(timeout=publish_timeout_s)
        self._names = names
        self._linger_s = linger_s
        self._timeout_s = publish_timeout_s
        self._logs: dict[str, _TurnLog] = {}
        self._closed = False
        self.stored_messages = 0
        """Messages stored so far (for benchmarks: events per stored message)."""

    async def publish(self, tenant_id: str, event: turn_pb2.TurnEvent) -> None:
        """Queue one event for storing; returns at once unless the turn has too many events waiting."""
        if self._closed:
            raise Unavailable("the event publisher is closed", reason="NATS_UNAVAILABLE", retry_after_s=1.0)
        subject = self._names.event_subject(tenant_id, event.session_id, event.turn_id)
        turn = self._logs.get(subject)
        if turn is None:
            turn = self._logs[subject] = _TurnLog(subject)
        _apply_joined(turn)
        turn.pending.append(event)
        kind = event.WhichOneof("kind")
        turn.unyielded += 1
        if kind == "accepted" and len(turn.pending) == 1 and turn.task is None:
            turn.opening_until = time.monotonic() + ACCEPTED_WAIT_S
        elif kind != "delta" or not turn.deltas_seen:
            turn.urgent_seq = event.seq
            turn.wake.set()
            turn.unyielded = YIELD_EVERY
        turn.deltas_seen = turn.deltas_seen or kind == "delta"
        turn.ended = turn.ended or kind in TERMINAL_KINDS
        if turn.task is None:
            turn.task = asyncio.create_task(self._drain(turn), name=f"salon-events-{event.turn_id}")
            turn.unyielded = YIELD_EVERY
        while len(turn.pending) > MAX_PENDING_EVENTS and turn.task is not None:
            turn.room.clear()
            await turn.room.wait()
        if turn.unyielded >= YIELD_EVERY or turn.ended:
            # Lets the store task send now, so a provider that never pauses (or a burst of deltas) does not
            # hold the first token back until the whole answer is queued, nor later ones for long.
            turn.unyielded = 0
            await asyncio.sleep(0)

    def join(self, tenant_id: str, session_id: str, turn_id: str, seq: int, text: str) -> bool:
        """Add ``text`` to the turn's delta numbered ``seq`` if that is the last event queued and still waits for
        its store (it is in no message yet); False: it is not, and ``text`` must go as an event of its own.
        Joined text goes out exactly when it would have as a later event: with the turn's next message."""
        turn = self._logs.get(self._names.event_subject(tenant_id, session_id, turn_id))
        if turn is None or turn.ended or len(turn.pending) <= turn.storing:
            return False
        last = turn.pending[-1]
        if last.seq != seq or last.WhichOneof("kind") != "delta":
            return False
        if not turn.joined:
            turn.joined_chars = len(last.delta.text)
        if turn.joined_chars + len(text) > MAX_JOINED_CHARS:
            return False
        turn.joined.append(text)
        turn.joined_chars += len(text)
        return True

    async def flush(self, tenant_id: str, session_id: str, turn_id: str) -> None:
        """Wait until every event of the turn queued so far is stored; :class:`Unavailable` when the publisher
        stopped first (the turn must then not be acknowledged: its redelivery sends what is missing)."""
        turn = self._logs.get(self._names.event_subject(tenant_id, session_id, turn_id))
        if turn is None:
            return
        while turn.task is not None:
            await asyncio.wait({turn.task})
        if turn.pending:
            raise Unavailable("the turn's events could not be stored", reason="NATS_UNAVAILABLE", retry_after_s=1.0)

    async def sent(self, tenant_id: str, session_id: str, turn_id: str) -> list[turn_pb2.TurnEvent]:
        """The turn's events stored so far, in order, each sequence number once (one cheap lookup when there
        are none). A lone refusal is no progress: the turn did not run. It is removed, so this attempt numbers
        its events from 1 and no reader mistakes the old refusal for this attempt's answer."""
        subject = self._names.event_subject(tenant_id, session_id, turn_id)
        turn = self._logs.get(subject)
        if turn is not None and turn.pending:
            # An earlier attempt here is still storing: read once it is done.
            raise Unavailable("the turn's earlier events are still being stored", reason="NATS_UNAVAILABLE")
        stream = self._names.events_stream
        try:
            try:
                await self._js.get_last_msg(stream, subject, direct=True)
            except nats.js.errors.NotFoundError:
                return []
            msgs = await read_subject(self._js, stream, subject)
            events = [e for msg in msgs for e in unpack_events(msg.data, msg.headers)]
            if len(events) == 1 and is_refusal(events[0]):
                await forget_refusal(self._js, self._names, msgs[-1].metadata.sequence.stream)
                return []
        except _NATS_ERRORS as exc:
            raise Unavailable("the event bus is not reachable", reason="NATS_UNAVAILABLE", retry_after_s=1.0) from exc
        return in_order(events)

    async def close(self, grace_s: float = 5.0) -> None:
        """Give the events still queued ``grace_s`` to be stored, then stop. Idempotent."""
        self._closed = True
        tasks = [t.task for t in self._logs.values() if t.task is not None]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=grace_s)
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if pending:
                log.warning("%d turns' last events were not stored before shutdown", len(pending))

    async def _drain(self, turn: _TurnLog) -> None:
        try:
            while True:
                await self._linger(turn)
                if not turn.pending:
                    return
                _apply_joined(turn)
                batch = _take_batch(turn.pending)
                first, last = turn.pending[0].seq, turn.pending[len(batch) - 1].seq
                turn.storing = len(batch)
                turn.last_store = time.monotonic()
                await self._store(turn, first, last, batch)
                del turn.pending[: len(batch)]
                turn.storing = 0
                turn.stored_seq = last
                turn.room.set()
        finally:
            turn.storing = 0
            turn.task = None
            turn.room.set()
            if not turn.pending and self._logs.get(turn.subject) is turn:
                del self._logs[turn.subject]

    async def _linger(self, turn: _TurnLog) -> None:
        """Let a lone ``accepted`` wait briefly for what follows it; with a linger, wait until it has passed
        since the turn's last store (for more events to pack), unless something urgent is queued or the turn has
        ended; otherwise return at once."""
        opening, turn.opening_until = turn.opening_until, 0.0
        if opening:
            turn.wake.clear()
            if turn.urgent_seq <= turn.stored_seq and (wait := opening - time.monotonic()) > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(turn.wake.wait(), wait)
            return
        if not self._linger_s or turn.ended:
            return
        while turn.urgent_seq <= turn.stored_seq:
            wait = turn.last_store + self._linger_s - time.monotonic()
            if wait <= 0:
                return
            turn.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(turn.wake.wait(), wait)

    async def _store(self, turn: _TurnLog, first: int, last: int, batch: Sequence[bytes]) -> None:
        """Store one message of events (``first`` to ``last``, serialized), trying again (same message id) until
        the stream has it."""
        payload = pack_events(batch)
        # The id names this very message (its retry is dropped as a duplicate), not just its numbers: another
        # attempt at the turn may store other events under the same numbers (after a refusal was removed).
        headers = {H_MSG_ID: f"{turn.subject}:{first}:{zlib.crc32(payload):08x}", H_EVENTS: f"{first}-{last}"}
        delay = 0.05
        while True:
            try:
                await self._js.publish(
                    turn.subject, payload, timeout=self._timeout_s, stream=self._names.events_stream, headers=headers
                )
            except _NATS_ERRORS as exc:
                if not turn.failing:
                    log.warning("storing turn events failed (%s); retrying", type(exc).__name__)
                turn.failing = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if turn.failing:
                log.info("turn events stored again")
                turn.failing = False
            self.stored_messages += 1
            return


async def forget_refusal(js: JetStreamContext, names: Names, stream_seq: int) -> None:
    """Remove a turn's stored refusal (the message at ``stream_seq``). Idempotent. (One message deleted: a
    filtered purge would also move the position of readers of the subject, past events stored after it.)"""
    with contextlib.suppress(nats.js.errors.NotFoundError):
        await js.delete_msg(names.events_stream, stream_seq)


def _apply_joined(turn: _TurnLog) -> None:
    """Add the text joined to the turn's last pending event to it (before it is stored, or followed)."""
    if turn.joined:
        turn.pending[-1].delta.text += "".join(turn.joined)
        turn.joined.clear()


def _take_batch(pending: Sequence[turn_pb2.TurnEvent]) -> list[bytes]:
    """The first events of ``pending`` that fit in one message (at least one), serialized."""
    batch: list[bytes] = []
    size = 0
    for event in pending[:BATCH_EVENTS]:
        data = event.SerializeToString()
        size += len(data) + 6
        if size > BATCH_BYTES and batch:
            break
        batch.append(data)
    return batch


CONNECTION_CHECK_S = 0.5
"""How often a waiting event stream checks that its NATS connection has not been lost in the meantime."""
H_STREAM_SEQ = "Nats-Sequence"
"""Header of a republished message: its sequence number in the stream."""


def live_wildcard(names: Names) -> str:
    """Where the events stream republishes each message once stored (see :class:`EventStream`)."""
    return f"{names.namespace}.live.>"


def live_subject(names: Names, tenant_id: str, session_id: str, turn_id: str) -> str:
    """The republished copies of one turn's stored events."""
    return f"{names.namespace}.live.{tenant_id}.{session_id}.{turn_id}"


CatchUp = Callable[[], Awaitable[Any]]
"""Opens a consumer of the turn's stored events from its first (for a live stream that missed some)."""


class LiveSubscription:
    """A plain subscription to one turn's republished events, read like a consumer's (``next_msg``).

    Messages wait in its own queue (nats-py's ``next_msg`` makes a task and a UUID per message); past ``buffer``
    messages it stops queueing and says so (:attr:`overflowed`), and the stream reads on from the stored events."""

    def __init__(self, buffer: int) -> None:
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._buffer = buffer
        self._sub: Any = None
        self.overflowed = False

    @classmethod
    async def open(cls, nc: NatsClient, subject: str, buffer: int) -> LiveSubscription:
        """Subscribe to ``subject`` (the subscription reaches the server before anything published after)."""
        live = cls(buffer)
        live._sub = await nc.subscribe(subject, cb=live._arrived)
        return live

    async def _arrived(self, msg: Any) -> None:
        if self.overflowed:
            return
        if self._queue.qsize() >= self._buffer:
            self.overflowed = True
            self._queue.put_nowait(None)  # wakes the reader
            return
        self._queue.put_nowait(msg)

    async def next_msg(self, timeout: float) -> Any:  # noqa: ASYNC109 - read like nats-py's subscriptions
        """The next message (None once it overflowed); :class:`nats.errors.TimeoutError` after ``timeout``."""
        if not self._queue.empty():
            return self._queue.get_nowait()
        try:
            # A timeout scope, not wait_for: no task per message.
            async with asyncio.timeout(timeout):
                return await self._queue.get()
        except TimeoutError:
            raise nats.errors.TimeoutError from None

    async def unsubscribe(self) -> None:
        """Stop receiving. Idempotent."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(nats.errors.Error):
                await sub.unsubscribe()


class EventStream:
    """One turn's events, in order and each once, until its terminal event. Close it when done.

    It reads either a consumer of the events stream, or, for a turn the caller is sending now (``catch_up``
    given), a plain subscription to the copies the stream republishes once it has stored each message: no
    consumer is made, and a client still sees only stored events. A live stream that misses a message (it
    started after the turn's first events were stored, or NATS dropped a message for a slow reader) reads on
    from a consumer of the stored events instead, so nothing is skipped.

    If the NATS connection is lost while it runs, it ends with :class:`Unavailable` (``NATS_UNAVAILABLE``):
    the subscription cannot survive a restarted server, and the caller resumes from the last event it got.
    A gap in the sequence read from the stream ends it with :class:`~salon.storage.bus.EventsLost`."""

    def __init__(
        self,
        js: JetStreamContext,
        sub: Any,
        after_seq: int,
        *,
        connection: NatsClient | None = None,
        catch_up: CatchUp | None = None,
    ) -> None:
        self._js = js
        self._sub = sub
        self._last = after_seq
        self._nc = connection
        self._catch_up = catch_up
        self._reconnects = connection.stats["reconnects"] if connection is not None else 0
        self.stream_seq = 0
        """Stream sequence of the message that held the last event yielded."""

    @property
    def live(self) -> bool:
        """Whether it reads republished copies (not a consumer)."""
        return self._catch_up is not None

    def rewind(self, after_seq: int) -> None:
        """Yield events from ``after_seq`` + 1 again (the turn was sent again after a refusal)."""
        self._last = after_seq

    def _check_connection(self) -> None:
        nc = self._nc
        if nc is not None and (not nc.is_connected or nc.stats["reconnects"] != self._reconnects):
            raise Unavailable(
                "the connection to the event bus was lost; resume the turn after the last event received",
                reason=Reason.NATS_UNAVAILABLE,
                retry_after_s=1.0,
            )

    async def close(self) -> None:
        """Drop the subscription and its consumer. Idempotent."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await drop_consumer(self._js, sub)

    async def _read_stored(self) -> None:
        """Go on from a consumer of the stored events (from the first: the ones already yielded are skipped)."""
        catch_up, self._catch_up = self._catch_up, None
        assert catch_up is not None
        await self.close()
        self._sub = await catch_up()

    def _stream_seq(self, msg: Any) -> int:
        if self._catch_up is not None:
            return int((msg.headers or {}).get(H_STREAM_SEQ, 0))
        return int(msg.metadata.sequence.stream)

    async def _next(self, remaining: float) -> tuple[Any, list[turn_pb2.TurnEvent]]:
        """The next message and its events (none if nothing came within the connection check's period)."""
        try:
            msg = await self._sub.next_msg(timeout=min(remaining, CONNECTION_CHECK_S))
        except nats.errors.TimeoutError:
            return None, []
        if msg is None:
            # The live subscription overflowed (a slow reader): read on from the stored events.
            await self._read_stored()
            return None, []
        events = unpack_events(msg.data, msg.headers)
        if self._catch_up is not None and events and events[0].seq > self._last + 1:
            # Stored before this stream subscribed, or lost on the way: read them from the stream.
            await self._read_stored()
            return None, []
        return msg, events

    async def iterate(
        self,
        timeout_s: float,
        *,
        extend: Callable[[turn_pb2.TurnEvent], float | None] | None = None,
        halted: Callable[[], Exception | None] | None = None,
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """Yield events until the terminal one; :class:`DeadlineExceeded` after ``timeout_s``. ``extend`` may give
        an event more time (seconds from its arrival): a turn that waits for a tool result waits that long.
        ``halted`` is asked as often as the connection is checked: an error it returns ends the stream."""
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded("the turn did not finish in time", reason="TURN_TIMEOUT")
                self._check_connection()
                error = halted() if halted is not None else None
                if error is not None:
                    raise error
                msg, events = await self._next(remaining)
                for event in events:
                    if event.seq <= self._last:
                        if event.WhichOneof("kind") in TERMINAL_KINDS:
                            return  # resumed after the turn's last event: nothing is left to send
                        # Already delivered: a redelivered turn answered again from its record.
                        continue
                    if event.seq > self._last + 1:
                        raise EventsLost("some of the turn's events are no longer retained", retry_after_s=1.0)
                    self._last = event.seq
                    self.stream_seq = self._stream_seq(msg)
                    more = extend(event) if extend is not None else None
                    if more is not None:
                        deadline = max(deadline, time.monotonic() + more)
                    yield event
                    if event.WhichOneof("kind") in TERMINAL_KINDS and self._last >= event.seq:
                        return  # (unless the reader rewound: the turn was sent again)
        finally:
            await self.close()
