"""The turn bus on NATS JetStream.

Turns travel on a work-queue stream, one subject per shard, deduplicated by ``Nats-Msg-Id`` (tenant,
session and turn id, so two tenants' idempotency keys never collide). A turn's events go to a per-turn
subject captured by an in-memory stream kept for the retention time: a reader starts from the turn's first
event, so joining a running turn, replaying a finished one and resuming after a drop all read the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from salon.v1 import turn_pb2
from storage.bus import TERMINAL_KINDS, EventsLost, TurnEnvelope
from storage.errors import DeadlineExceeded, Unavailable
from storage.jetstream.read import EPHEMERAL_INACTIVE_S, drop_consumer, read_subject
from storage.reasons import Reason
from storage.subjects import Names

log = logging.getLogger(__name__)

MAX_EVENTS_BYTES = 512 * 1024 * 1024
"""Memory cap of the events stream; the oldest events go first when it is reached."""


@dataclass(frozen=True, slots=True)
class BusSettings:
    """Stream and consumer parameters (from the engine config)."""

    num_shards: int = 16
    dedupe_window_s: float = 600.0
    event_retention_s: float = 900.0
    ack_wait_s: float = 30.0
    max_deliver: int = 20


async def _ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        # Exists with other settings (an upgrade changed them): bring it in line.
        await js.update_stream(config)


async def ensure_bus(js: JetStreamContext, names: Names, settings: BusSettings) -> None:
    """Create or update the turn and event streams and the per-shard consumers. Idempotent."""
    await _ensure_stream(
        js,
        api.StreamConfig(
            name=names.turns_stream,
            subjects=[names.turns_wildcard],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            duplicate_window=settings.dedupe_window_s,
        ),
    )
    await _ensure_stream(
        js,
        api.StreamConfig(
            name=names.events_stream,
            subjects=[names.events_wildcard],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.MEMORY,
            max_age=settings.event_retention_s,
            max_bytes=MAX_EVENTS_BYTES,
            discard=api.DiscardPolicy.OLD,
        ),
    )
    for shard in range(settings.num_shards):
        await js.add_consumer(
            names.turns_stream,
            api.ConsumerConfig(
                durable_name=names.shard_consumer(shard),
                filter_subject=names.turn_subject(shard),
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=settings.ack_wait_s,
                max_deliver=settings.max_deliver,
                max_ack_pending=10_000,
            ),
        )


class TurnPublisher:
    """The gateway's side of the bus: publish a turn, read its events."""

    def __init__(self, nc: NatsClient, names: Names, *, publish_timeout_s: float = 5.0) -> None:
        self._nc = nc
        self._js = nc.jetstream(timeout=publish_timeout_s)
        self._names = names

    @property
    def connected(self) -> bool:
        """Whether the NATS connection is up right now."""
        return self._nc.is_connected

    async def publish(self, envelope: TurnEnvelope, shard: int) -> bool:
        """Put a turn on its shard's subject. Returns True when JetStream already had this turn id (a
        duplicate within the dedupe window). Raises :class:`Unavailable` when NATS cannot take it."""
        if not self._nc.is_connected:
            raise Unavailable("the turn bus is not reachable", reason="NATS_UNAVAILABLE", retry_after_s=1.0)
        try:
            ack = await self._js.publish(
                self._names.turn_subject(shard),
                envelope.request.SerializeToString(),
                headers=envelope.headers(),
                stream=self._names.turns_stream,
            )
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable(
                "the turn bus did not accept the turn", reason="NATS_UNAVAILABLE", retry_after_s=1.0
            ) from exc
        return bool(ack.duplicate)

    async def control(self, shard: int, request: Mapping[str, str], timeout_s: float = 5.0) -> dict[str, str]:
        """Ask the host that owns ``shard`` to act on one of its sessions; its JSON reply."""
        try:
            msg = await self._nc.request(
                self._names.control_subject(shard), json.dumps(dict(request)).encode(), timeout=timeout_s
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable(
                "the session's host did not answer", reason="HOST_UNAVAILABLE", retry_after_s=1.0
            ) from exc
        reply: dict[str, str] = json.loads(msg.data)
        return reply

    async def has_events(self, tenant_id: str, session_id: str, turn_id: str) -> bool:
        """Whether the events stream still holds any event of the turn."""
        try:
            await self._js.get_last_msg(
                self._names.events_stream, self._names.event_subject(tenant_id, session_id, turn_id)
            )
        except nats.js.errors.NotFoundError:
            return False
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable("the event bus is not reachable", reason="NATS_UNAVAILABLE", retry_after_s=1.0) from exc
        return True

    async def open_events(
        self, tenant_id: str, session_id: str, turn_id: str, *, after_seq: int = 0, buffer: int = 4096
    ) -> EventStream:
        """Subscribe to a turn's events (from its first event, wherever the turn is)."""
        subject = self._names.event_subject(tenant_id, session_id, turn_id)
        try:
            sub = await self._js.subscribe(
                subject,
                stream=self._names.events_stream,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.ALL,
                inactive_threshold=EPHEMERAL_INACTIVE_S,
                # The stream's bounded buffer: a reader this far behind is the slow client's problem alone.
                pending_msgs_limit=buffer,
            )
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable("the event bus is not reachable", reason="NATS_UNAVAILABLE", retry_after_s=1.0) from exc
        return EventStream(self._js, sub, after_seq, connection=self._nc)


CONNECTION_CHECK_S = 0.5
"""How often a waiting event stream checks that its NATS connection has not been lost in the meantime."""


class EventStream:
    """One turn's events, in order and each once, until its terminal event. Close it when done.

    If the NATS connection is lost while it runs, it ends with :class:`Unavailable` (``NATS_UNAVAILABLE``):
    the subscription cannot survive a restarted server, and the caller resumes from the last event it got.
    A gap in the sequence ends it with :class:`~storage.bus.EventsLost`."""

    def __init__(self, js: JetStreamContext, sub: Any, after_seq: int, *, connection: NatsClient | None = None) -> None:
        self._js = js
        self._sub = sub
        self._last = after_seq
        self._nc = connection
        self._reconnects = connection.stats["reconnects"] if connection is not None else 0

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

    async def iterate(
        self, timeout_s: float, *, extend: Callable[[turn_pb2.TurnEvent], float | None] | None = None
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """Yield events until the terminal one; :class:`DeadlineExceeded` after ``timeout_s``. ``extend`` may give
        an event more time (seconds from its arrival): a turn that waits for a tool result waits that long."""
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DeadlineExceeded("the turn did not finish in time", reason="TURN_TIMEOUT")
                self._check_connection()
                try:
                    msg = await self._sub.next_msg(timeout=min(remaining, CONNECTION_CHECK_S))
                except nats.errors.TimeoutError:
                    continue
                event = turn_pb2.TurnEvent.FromString(msg.data)
                if event.seq <= self._last:
                    if event.WhichOneof("kind") in TERMINAL_KINDS:
                        return  # resumed after the turn's last event: nothing is left to send
                    # Already delivered: a redelivered turn answered again from its record.
                    continue
                if event.seq > self._last + 1:
                    raise EventsLost("some of the turn's events are no longer retained", retry_after_s=1.0)
                self._last = event.seq
                more = extend(event) if extend is not None else None
                if more is not None:
                    deadline = max(deadline, time.monotonic() + more)
                yield event
                if event.WhichOneof("kind") in TERMINAL_KINDS:
                    return
        finally:
            await self.close()


class ShardPuller:
    """The host's side of the bus for one shard: fetch turns, publish events."""

    def __init__(self, nc: NatsClient, names: Names, shard: int) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._names = names
        self.shard = shard
        self._sub: JetStreamContext.PullSubscription | None = None

    async def fetch(self, batch: int, timeout_s: float) -> list[Msg]:
        """Up to ``batch`` turn messages, waiting at most ``timeout_s`` for the first (empty if none)."""
        if self._sub is None:
            self._sub = await self._js.pull_subscribe_bind(
                durable=self._names.shard_consumer(self.shard), stream=self._names.turns_stream
            )
        try:
            return await self._sub.fetch(batch, timeout=timeout_s)
        except (TimeoutError, nats.errors.TimeoutError):
            return []  # nothing arrived in time: the normal idle case

    async def close(self) -> None:
        """Stop pulling. Idempotent."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


class EventPublisher:
    """Publishes turn events to their per-turn subjects (captured by the events stream)."""

    def __init__(self, nc: NatsClient, names: Names) -> None:
        self._nc = nc
        self._names = names

    async def publish(self, tenant_id: str, event: turn_pb2.TurnEvent) -> None:
        """Send one event. Order is kept per connection, and one host sends all of a turn's events."""
        subject = self._names.event_subject(tenant_id, event.session_id, event.turn_id)
        await self._nc.publish(subject, event.SerializeToString())
        # nats-py only buffers here; yielding lets its flusher write now, so a provider that never pauses
        # (or a burst of deltas) does not hold the first token back until the whole answer is buffered.
        await asyncio.sleep(0)

    async def sent(self, tenant_id: str, session_id: str, turn_id: str) -> list[turn_pb2.TurnEvent]:
        """The turn's events still retained, in order, each sequence number once."""
        subject = self._names.event_subject(tenant_id, session_id, turn_id)
        try:
            msgs = await read_subject(self._nc.jetstream(), self._names.events_stream, subject)
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable("the event bus is not reachable", reason="NATS_UNAVAILABLE", retry_after_s=1.0) from exc
        events: list[turn_pb2.TurnEvent] = []
        for msg in msgs:
            event = turn_pb2.TurnEvent.FromString(msg.data)
            if event.seq == len(events) + 1:
                events.append(event)
        return events
