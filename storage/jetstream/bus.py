"""The turn bus on NATS JetStream.

Turns travel on a work-queue stream, one subject per shard, deduplicated by ``Nats-Msg-Id`` (tenant,
session and turn id, so two tenants' idempotency keys never collide). A turn's events go to a per-turn
subject captured by a stream on disk kept for the retention time (:mod:`salon.storage.jetstream.events`): a reader
starts from the turn's first event, so joining a running turn, replaying a finished one and resuming after a
drop all read the same way, and a turn redelivered after any failure continues after what was stored.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from salon.storage.bus import H_MSG_ID, TurnEnvelope
from salon.storage.errors import Unavailable
from salon.storage.jetstream.events import (
    EventPublisher,
    EventStream,
    LiveSubscription,
    forget_refusal,
    live_subject,
    live_wildcard,
)
from salon.storage.jetstream.read import EPHEMERAL_INACTIVE_S
from salon.storage.subjects import Names

__all__ = ["BusSettings", "EventPublisher", "EventStream", "ShardPuller", "TurnPublisher", "ensure_bus"]

log = logging.getLogger(__name__)

EVENTS_HEARTBEAT_S = 1.0
"""Idle heartbeat of a turn reader's consumer: a reader whose consumer is lost without its connection (the
node holding it died in a cluster) makes a new one after two missed heartbeats, not after nats-py's 10 s."""
EVENTS_DEDUPE_S = 120.0
"""How long the events stream remembers a stored message's id: a message retried after a reconnect is stored
once."""


@dataclass(frozen=True, slots=True)
class BusSettings:
    """Stream and consumer parameters (from the engine config)."""

    num_shards: int = 16
    dedupe_window_s: float = 600.0
    event_retention_s: float = 900.0
    ack_wait_s: float = 30.0
    max_deliver: int = 20
    replicas: int = 1
    """Replicas of the turn and event streams (3 on a cluster: see
    :func:`~salon.storage.jetstream.client.stream_replicas`); the shard consumers take the stream's."""


async def _ensure_stream(js: JetStreamContext, config: api.StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        # Exists with other settings (an upgrade changed them): bring it in line.
        await js.update_stream(config)


async def _ensure_events_stream(js: JetStreamContext, name: str, config: api.StreamConfig) -> None:
    try:
        await js.add_stream(config)
        return
    except nats.js.errors.BadRequestError:
        pass
    info = await js.stream_info(name)
    if info.config.storage != config.storage:
        # An events stream from before events were kept on disk (in memory): its storage cannot be changed in
        # place. Events are replaceable (a finished turn replays from its record), so it is made anew.
        log.warning("moving the events stream %s to %s storage", name, config.storage)
        await js.delete_stream(name)
        await js.add_stream(config)
        return
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
            num_replicas=settings.replicas,
        ),
    )
    await _ensure_events_stream(
        js,
        names.events_stream,
        api.StreamConfig(
            name=names.events_stream,
            subjects=[names.events_wildcard],
            retention=api.RetentionPolicy.LIMITS,
            # On disk: what a client saw survives nats-server and the machine (see storage.jetstream.events).
            # No byte cap: dropping a running turn's first events would make its continuation start over.
            storage=api.StorageType.FILE,
            max_age=settings.event_retention_s,
            duplicate_window=min(EVENTS_DEDUPE_S, settings.event_retention_s),
            allow_direct=True,
            num_replicas=settings.replicas,
            # Each message again, once stored, for the gateway's readers of new turns (no consumer per turn).
            republish=api.RePublish(src=names.events_wildcard, dest=live_wildcard(names)),
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

    async def send_refused_again(self, envelope: TurnEnvelope, shard: int, refusal_stream_seq: int) -> None:
        """Put a refused turn on the bus again: JetStream would drop it as a duplicate of the refused message for
        the dedupe window, so it goes under a message id derived from the refusal (retries of the same refusal
        agree on it), after the refusal is removed from the turn's events."""
        headers = envelope.headers()
        headers[H_MSG_ID] = f"{headers[H_MSG_ID]}.r{refusal_stream_seq}"
        try:
            await forget_refusal(self._js, self._names, refusal_stream_seq)
            await self._js.publish(
                self._names.turn_subject(shard),
                envelope.request.SerializeToString(),
                headers=headers,
                stream=self._names.turns_stream,
            )
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable(
                "the turn bus did not accept the turn", reason="NATS_UNAVAILABLE", retry_after_s=1.0
            ) from exc

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
                self._names.events_stream, self._names.event_subject(tenant_id, session_id, turn_id), direct=True
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
        sub = await self._consume_events(tenant_id, session_id, turn_id, buffer)
        return EventStream(self._js, sub, after_seq, connection=self._nc)

    async def open_live_events(
        self, tenant_id: str, session_id: str, turn_id: str, *, buffer: int = 4096
    ) -> EventStream:
        """Subscribe to the events of a turn about to be published, as the events stream stores them (no
        consumer; one is made only if some are missed: see :class:`EventStream`). Subscribed before this returns,
        so nothing the turn stores after is missed."""
        if not self._nc.is_connected:
            raise Unavailable("the event bus is not reachable", reason="NATS_UNAVAILABLE", retry_after_s=1.0)
        try:
            sub = await LiveSubscription.open(
                self._nc, live_subject(self._names, tenant_id, session_id, turn_id), buffer
            )
        except (TimeoutError, nats.errors.Error) as exc:
            raise Unavailable("the event bus is not reachable", reason="NATS_UNAVAILABLE", retry_after_s=1.0) from exc

        async def catch_up() -> Any:
            return await self._consume_events(tenant_id, session_id, turn_id, buffer)

        return EventStream(self._js, sub, 0, connection=self._nc, catch_up=catch_up)

    async def _consume_events(self, tenant_id: str, session_id: str, turn_id: str, buffer: int) -> Any:
        subject = self._names.event_subject(tenant_id, session_id, turn_id)
        try:
            sub = await self._js.subscribe(
                subject,
                stream=self._names.events_stream,
                ordered_consumer=True,
                deliver_policy=api.DeliverPolicy.ALL,
                inactive_threshold=EPHEMERAL_INACTIVE_S,
                idle_heartbeat=EVENTS_HEARTBEAT_S,
                # The stream's bounded buffer: a reader this far behind is the slow client's problem alone.
                pending_msgs_limit=buffer,
            )
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as exc:
            raise Unavailable("the event bus is not reachable", reason="NATS_UNAVAILABLE", retry_after_s=1.0) from exc
        return sub


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
