"""The session host: owns a set of shards, pulls their turns and runs them in session actors.

Virtual actors: a session is activated when its first turn arrives (its definition read from the registry,
its state from the ledger: latest snapshot plus the records after it, taking the session over from any
earlier activation) and passivated, leaving a snapshot, when idle or when the host holds too many. Plain
asyncio with its bus, stores and provider injected; the Ray actor in ``actors.ray_host`` is a thin shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from salon.actors.answer_watch import AnswerWatch
from salon.actors.control import CancelTurn, ControlError, ControlReply, ControlRequest, parse_request
from salon.actors.emitter import EventSink, TurnEmitter
from salon.actors.events import TurnEvent
from salon.actors.guardrails import GuardrailSettings
from salon.actors.host_turn import BusMessage, HostTurn, TurnKey
from salon.actors.model import ModelChunk, ModelProvider, ModelRequest
from salon.actors.running import CANCELLED
from salon.actors.session import SessionActor, SessionKey, SessionSettings, SessionState, Turn
from salon.actors.summary import summarizer_for
from salon.actors.tool_loop import ToolStats
from salon.actors.tool_servers import NoToolServers, ToolServers
from salon.actors.tools import ToolPolicy
from salon.actors.wire import event_from_proto, event_to_proto, policy_from_proto, selection_from_proto
from salon.otel import ConsumerSpan, attributes, consumer_span, stop_tasks
from salon.storage import AnswerStore, Journal, Retriever, SessionRegistry, TurnEnvelope, incarnation_of
from salon.storage.errors import InvalidArgument, NotFound, SalonError
from salon.storage.reasons import Reason
from salon.v1 import session_pb2, turn_pb2

log = logging.getLogger(__name__)


class ShardNotServed(Exception):
    """A session of a shard this host does not serve (any more) would be activated: its turns and control
    messages belong to the shard's next owner."""


class Puller(Protocol):
    """Fetches one shard's turn messages."""

    shard: int

    async def fetch(self, batch: int, timeout_s: float) -> list[Any]:
        """Up to ``batch`` messages, or none after ``timeout_s``."""
        ...

    async def close(self) -> None:
        """Stop fetching."""
        ...


class EventSender(Protocol):
    """Publishes a tenant's turn events, and reads back what was sent for a turn."""

    async def publish(self, tenant_id: str, event: turn_pb2.TurnEvent) -> None:
        """Send one event (it may be stored later: see :meth:`flush`)."""
        ...

    def join(self, tenant_id: str, session_id: str, turn_id: str, seq: int, text: str) -> bool:
        """Add ``text`` to the turn's delta ``seq`` if it is the last sent and not stored yet; else False."""
        ...

    async def flush(self, tenant_id: str, session_id: str, turn_id: str) -> None:
        """Wait until every event of the turn sent so far is stored; raise when it cannot be."""
        ...

    async def sent(self, tenant_id: str, session_id: str, turn_id: str) -> list[turn_pb2.TurnEvent]:
        """The events already sent for a turn (still retained), in order."""
        ...

    async def close(self) -> None:
        """Store what is still queued (within a grace period) and stop."""
        ...


@dataclass(frozen=True, slots=True)
class HostSettings:
    """Host behaviour (from the engine config)."""

    session_idle_s: float = 300.0
    max_sessions: int = 10000
    ack_wait_s: float = 30.0
    fetch_batch: int = 1
    """One message per pull: a pull for more waits to fill its batch (nats-py), holding back a lone turn on an
    idle shard for up to the fetch timeout."""
    fetch_timeout_s: float = 1.0
    window_max_messages: int = 40
    window_token_budget: int = 8000
    max_tokens: int = 1024
    snapshot_every_turns: int = 20
    max_inflight_turns: int = 1000
    """Turns running or queued on this host before new ones are refused (RESOURCE_EXHAUSTED)."""
    max_inflight_per_tenant: int = 200
    """The same, per tenant on this host."""
    retrieval_top_k: int = 25
    retrieval_min_score: float = 0.0
    retrieval_token_budget: int = 2000
    summary_max_tokens: int = 400
    summary_min_messages: int = 4
    tool_policy: ToolPolicy = field(default_factory=ToolPolicy)
    """The deployment's tool defaults (wait timeout, model rounds per turn); sessions and turns override them."""


SHARED_SETTINGS_KEPT = 4096
"""Distinct session settings a host shares among its sessions (past this many it starts over)."""

DOUBLE_TEXTING = {
    session_pb2.DOUBLE_TEXTING_POLICY_ENQUEUE: "enqueue",
    session_pb2.DOUBLE_TEXTING_POLICY_REJECT: "reject",
    session_pb2.DOUBLE_TEXTING_POLICY_INTERRUPT: "interrupt",
    session_pb2.DOUBLE_TEXTING_POLICY_ROLLBACK: "rollback",
}


def session_settings(session: session_pb2.Session, defaults: HostSettings) -> SessionSettings:
    """A session's effective settings: its own where set, else the host defaults."""
    memory, model = session.memory, session.model
    return SessionSettings(
        system_prompt=session.system_prompt,
        window_max_messages=memory.window_max_messages or defaults.window_max_messages,
        window_token_budget=memory.window_token_budget or defaults.window_token_budget,
        model=model.model,
        max_tokens=model.max_tokens or defaults.max_tokens,
        temperature=model.temperature if model.HasField("temperature") else None,
        stop_sequences=tuple(model.stop_sequences),
        snapshot_every_turns=defaults.snapshot_every_turns,
        double_texting=DOUBLE_TEXTING.get(session.double_texting, "enqueue"),
        provider=model.provider,
        fallback_providers=tuple(model.fallback_providers),
        retrieval_top_k=memory.retrieval_top_k or defaults.retrieval_top_k,
        retrieval_min_score=min_score(memory, defaults.retrieval_min_score),
        retrieval_token_budget=memory.retrieval_token_budget or defaults.retrieval_token_budget,
        long_term_memory=not memory.long_term_memory_disabled,
        user_id=session.user_id,
        user_memory=bool(session.user_id) and memory.memory_scope == session_pb2.MEMORY_SCOPE_USER,
        knowledge_collections=frozenset(memory.knowledge_collections),
        summary_max_tokens=defaults.summary_max_tokens,
        summary_min_messages=defaults.summary_min_messages,
        # Checked by the gateway when the session was created: taken as stored.
        tools=selection_from_proto(session.tools, check=False),
        tool_policy=_policy(defaults.tool_policy, session.tool_settings if session.HasField("tool_settings") else None),
    )


def min_score(memory: session_pb2.MemorySettings, default: float) -> float:
    """A session's relevance cut-off: ``retrieval_score_cutoff`` when set (0 included), else
    ``retrieval_min_score`` unless it is 0 (proto3's unset), else the engine's ``default``."""
    if memory.HasField("retrieval_score_cutoff"):
        return memory.retrieval_score_cutoff
    return memory.retrieval_min_score or default


class SharedSettings:
    """One object per distinct session settings: sessions created alike (an application's sessions usually share
    a system prompt) share one settings object and its strings, instead of a copy each in every live session."""

    __slots__ = ("_kept", "_known")

    def __init__(self, kept: int = SHARED_SETTINGS_KEPT) -> None:
        self._known: dict[SessionSettings, SessionSettings] = {}
        self._kept = kept

    def share(self, settings: SessionSettings) -> SessionSettings:
        """The object already held for settings equal to ``settings``, else ``settings`` (now held)."""
        known = self._known.get(settings)
        if known is not None:
            return known
        if len(self._known) >= self._kept:
            self._known.clear()  # bounded; sessions keep the objects they have
        self._known[settings] = settings
        return settings


def _policy(base: ToolPolicy, settings: session_pb2.ToolSettings | None) -> ToolPolicy:
    """``base`` with ``settings`` (checked by the gateway; an out-of-range value from an older engine is ignored)."""
    try:
        return policy_from_proto(base, settings)
    except InvalidArgument:
        return base


class SessionHost:
    """Runs the turns of its shards. Lifecycle: :meth:`start`, :meth:`drain`, :meth:`close` (idempotent)."""

    def __init__(
        self,
        *,
        name: str,
        pullers: list[Puller],
        events: EventSender,
        registry: SessionRegistry,
        journal: Journal,
        provider: ModelProvider,
        settings: HostSettings,
        clock: Callable[[], float] = time.monotonic,
        retriever: Retriever | None = None,
        tool_servers: ToolServers | None = None,
        tool_answers: AnswerStore | None = None,
    ) -> None:
        self.name = name
        self._pullers: dict[int, Puller] = {p.shard: p for p in pullers}
        self._pull_tasks: dict[int, asyncio.Task[None]] = {}
        """Each served shard's pull loop: shards come and go while the host runs (see :meth:`add_shard`)."""
        self._session_shards: dict[SessionKey, int] = {}
        """The shard each live session's turns came from, so giving a shard up finds its sessions."""
        self._events = events
        self._registry = registry
        self._journal = journal
        self._provider = _CountingProvider(provider)
        # Summaries use the provider itself: they are not answers, so model_calls (answers asked of the model,
        # the figure that must not grow on redelivery) leaves them out.
        self._summarizer = summarizer_for(provider)
        self._retriever = retriever
        """Owned: closed by :meth:`close`."""
        self._tool_servers = tool_servers or NoToolServers()
        """Owned: started by :meth:`start`, closed by :meth:`close`."""
        self._tool_stats = ToolStats()
        self._tool_answers = tool_answers
        """Tool answers the gateway kept while no host served a session (read by waiting turns)."""
        self._settings = settings
        self._clock = clock
        self._sessions: dict[SessionKey, SessionActor] = {}
        self._shared_settings = SharedSettings()
        self._activating: dict[SessionKey, asyncio.Future[None]] = {}
        """Sessions being activated now, each awaited by whoever else needs the same session meanwhile."""
        self._inflight: dict[TurnKey, HostTurn] = {}
        """Turns in flight, per (tenant, session, turn), with their bus messages."""
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._closed = False
        self.activations = 0
        self.passivations = 0
        self.turns_started = 0
        self.duplicates = 0

    async def start(self) -> None:
        """Start pulling every owned shard, the passivation sweep and the in-progress heartbeat."""
        if self._tasks:
            return
        await self._tool_servers.start()
        for puller in self._pullers.values():
            self._start_pulling(puller)
        self._tasks.append(asyncio.create_task(self._sweep_loop(), name=f"{self.name}-sweep"))
        self._tasks.append(asyncio.create_task(self._heartbeat_loop(), name=f"{self.name}-heartbeat"))
        if self._tool_answers is not None:
            watch = AnswerWatch(self._tool_answers, self._sessions.get)
            self._tasks.append(asyncio.create_task(watch.run(), name=f"{self.name}-tool-answers"))

    def _start_pulling(self, puller: Puller) -> None:
        self._pull_tasks[puller.shard] = asyncio.create_task(
            self._pull_loop(puller), name=f"{self.name}-shard-{puller.shard}"
        )

    @property
    def shards(self) -> frozenset[int]:
        """The shards this host pulls now."""
        return frozenset(self._pullers)

    async def add_shard(self, puller: Puller) -> None:
        """Start pulling one more shard (its lease is held). A no-op when it is pulled already or the host is
        stopping."""
        if puller.shard in self._pullers or self._stopping.is_set():
            await puller.close()
            return
        self._pullers[puller.shard] = puller
        if self._tasks:
            self._start_pulling(puller)

    async def remove_shard(self, shard: int, grace_s: float) -> None:
        """Stop serving ``shard``: stop pulling it at once, give its running turns up to ``grace_s`` to finish,
        then passivate its sessions (leaving snapshots for the next owner) and hand the turns still queued back
        to the bus for prompt redelivery to the shard's next owner."""
        puller = self._pullers.pop(shard, None)
        task = self._pull_tasks.pop(shard, None)
        if task is not None:
            # The loop ends after its current fetch (a turn fetched meanwhile is dispatched, and moves with its
            # session below); cancelled only when that takes too long.
            await asyncio.wait({task}, timeout=self._settings.fetch_timeout_s + 1.0)
            await stop_tasks([task])
        keys = [key for key, s in self._session_shards.items() if s == shard]
        waits = [asyncio.ensure_future(self._sessions[k].wait_settled()) for k in keys if k in self._sessions]
        if waits and grace_s > 0:
            _, pending = await asyncio.wait(waits, timeout=grace_s)
            for wait in pending:
                wait.cancel()
        else:
            for wait in waits:
                wait.cancel()
        moved = set(keys)
        for key in keys:
            await self._passivate(key)
        for turn in [t for k, t in self._inflight.items() if SessionKey(k[0], k[1]) in moved]:
            with contextlib.suppress(Exception):
                await turn.release()
        if puller is not None:
            await puller.close()

    def warm(self) -> None:
        """Prepare in the background what the first turns will need (the retriever's tables), when the retriever
        can be prepared ahead; turns are taken meanwhile."""
        warm = getattr(self._retriever, "warm", None)
        if callable(warm):
            warm()

    def stats(self) -> dict[str, int]:
        """Live figures of the host."""
        return {
            "live_sessions": len(self._sessions),
            "busy_sessions": sum(1 for s in self._sessions.values() if s.busy),
            "inflight_turns": len(self._inflight),
            "activations": self.activations,
            "passivations": self.passivations,
            "turns_started": self.turns_started,
            "duplicates": self.duplicates,
            "model_calls": self._provider.calls,
            **self._provider.stats(),
            **self._tool_stats.figures(),
        }

    def model_health(self) -> dict[str, str]:
        """Circuit-breaker state of each model provider (closed, half_open, open), when it has breakers."""
        return self._provider.breaker_states()

    async def drain(self, grace_s: float) -> None:
        """Stop taking turns and wait up to ``grace_s`` for running ones to finish (or to wait for their tools: a
        waiting turn goes on from its records where its session is activated next)."""
        self._stopping.set()
        waits = [asyncio.ensure_future(s.wait_settled()) for s in self._sessions.values() if s.busy]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=grace_s)
            for wait in pending:
                wait.cancel()

    async def close(self) -> None:
        """Stop everything: turns still running are cancelled (and recorded as such). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        await stop_tasks([*self._tasks, *self._pull_tasks.values()])
        self._tasks.clear()
        self._pull_tasks.clear()
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.passivate()
        pullers, self._pullers = list(self._pullers.values()), {}
        for puller in pullers:
            await puller.close()
        await self._events.close()
        with contextlib.suppress(Exception):
            await self._provider.aclose()
        close = getattr(self._retriever, "close", None)
        if close is not None:
            with contextlib.suppress(Exception):
                await close()
        with contextlib.suppress(Exception):
            await self._tool_servers.close()

    async def _pull_loop(self, puller: Puller) -> None:
        while not self._stopping.is_set() and self._pullers.get(puller.shard) is puller:
            try:
                msgs = await puller.fetch(self._settings.fetch_batch, self._settings.fetch_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # NATS down or reconnecting: the consumer keeps our place; try again shortly.
                log.warning("fetching shard %d failed: %s", puller.shard, type(exc).__name__)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=0.5)
                continue
            for msg in msgs:
                try:
                    await self._dispatch(msg, puller.shard)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("dispatching a turn failed; it will be redelivered")

    async def _dispatch(self, msg: BusMessage, shard: int) -> None:
        """Hand one turn message to its session: activate the session, settle copies and refusals, read what
        an earlier attempt sent, submit."""
        envelope = await _envelope_of(msg)
        if envelope is None:
            return
        key = SessionKey(envelope.tenant_id, envelope.request.session_id)
        span = _turn_span(envelope, key)
        try:
            taken = await self._take(msg, envelope, key, span, shard)
        except BaseException:
            span.end()
            raise
        if taken is None:
            span.end()
            return
        session, inflight = taken
        # Tracked before submit: a fast turn can finish (and be done) before submit returns.
        self._inflight[inflight.key] = inflight
        try:
            await session.submit(inflight)
        except BaseException:
            self._inflight.pop(inflight.key, None)
            span.end()
            raise
        self.turns_started += 1

    async def _take(
        self, msg: BusMessage, envelope: TurnEnvelope, key: SessionKey, span: ConsumerSpan, shard: int
    ) -> tuple[SessionActor, HostTurn] | None:
        """The turn's session and the turn in flight for ``msg``, or None when the message is settled here:
        its session does not exist, it is a copy of a turn running here, or the host refuses it."""
        try:
            session = await self._activate(key, envelope.incarnation, shard)
        except NotFound:
            # Deleted between SendTurn and now: tell the waiting client, and drop the turn.
            await self._refuse(msg, envelope, "SESSION_NOT_FOUND", "session not found", retryable=False)
            return None
        except ShardNotServed:
            # Fetched just before the shard was given up: handed back at once, for the shard's next owner.
            await msg.nak()
            return None
        turn_key = (envelope.tenant_id, key.session_id, envelope.turn_id)
        running = self._inflight.get(turn_key)
        if running is not None:
            # A redelivered copy of a turn still running here: settle it with the running copy's ack.
            running.copies.append(msg)
            self.duplicates += 1
            return None
        refusal = self._admission(envelope.tenant_id)
        if refusal is not None:
            await self._refuse(msg, envelope, "TOO_MANY_TURNS", refusal, retryable=True, retry_after_s=1.0)
            return None
        turn = _turn_of(envelope, span, await self._prior_events(msg, envelope), session.settings)
        inflight = HostTurn(
            turn,
            turn_key,
            publish=self._publisher(envelope.tenant_id),
            join=functools.partial(self._events.join, *turn_key),
            stored=functools.partial(self._events.flush, *turn_key),
            span=span,
            copies=[msg],
            registry=self._inflight,
        )
        return session, inflight

    async def _refuse(
        self,
        msg: BusMessage,
        envelope: TurnEnvelope,
        reason: str,
        message: str,
        *,
        retryable: bool,
        retry_after_s: float | None = None,
    ) -> None:
        """End a turn this host will not run with an error event, and drop its message."""
        publish = self._publisher(envelope.tenant_id)
        emitter = TurnEmitter(envelope.request.session_id, envelope.turn_id, publish)
        await emitter.error(reason, message, retryable=retryable, partial=False, retry_after_s=retry_after_s)
        await self._events.flush(envelope.tenant_id, envelope.request.session_id, envelope.turn_id)
        await msg.ack()

    async def _prior_events(self, msg: BusMessage, envelope: TurnEnvelope) -> list[TurnEvent]:
        """What an earlier attempt at the turn sent (it may have streamed part of the answer before its host,
        nats-server or the machine died). Read for every delivery, not only redelivered ones: a nats-server
        killed right after handing a turn out can forget it did, and hand it out again as a first delivery
        (the read is one lookup when there is nothing). When it cannot be read, the message goes back to the
        bus for a later try."""
        try:
            sent = await self._events.sent(envelope.tenant_id, envelope.request.session_id, envelope.turn_id)
        except Exception:
            await msg.nak(delay=1.0)
            raise
        return [event_from_proto(e) for e in sent]

    def _publisher(self, tenant_id: str) -> EventSink:
        """Where a tenant's turn events go: converted to the API's form and published."""

        async def publish(event: TurnEvent) -> None:
            await self._events.publish(tenant_id, event_to_proto(event))

        return publish

    def _admission(self, tenant_id: str) -> str | None:
        """Why a new turn must be refused now, or None. Counts turns in flight on this host, except those waiting
        for their tools (they hold no model connection; a thousand may wait at once)."""
        busy = [key for key, turn in self._inflight.items() if not turn.waiting]
        if len(busy) >= self._settings.max_inflight_turns:
            return "this host has too many turns running or queued; retry shortly"
        mine = sum(1 for t, _, _ in busy if t == tenant_id)
        if mine >= self._settings.max_inflight_per_tenant:
            return "too many turns of this tenant are running or queued; retry shortly"
        return None

    async def control(self, request: ControlRequest, shard: int) -> ControlReply:
        """Act on a request about one of this host's sessions (from the gateway, on the control subject of the
        session's ``shard``): cancel a turn, or hand a turn waiting for its tools a result or an approval
        decision."""
        key = SessionKey(request.tenant_id, request.session_id)
        try:
            session = await self._activate(key, request.incarnation, shard)
        except NotFound:
            return ControlReply("unknown_session")
        except ShardNotServed:
            # The shard is being given up and the session is not live here: its next owner answers (an answer
            # to a tool call is kept by the gateway meanwhile; a cancel is asked again).
            return ControlReply(
                "unavailable", Reason.HOST_UNAVAILABLE, "the session is moving to another host; retry shortly"
            )
        if not isinstance(request, CancelTurn):
            return await session.answer(request)
        return ControlReply(session.cancel(request.turn_id, request.reason or CANCELLED))

    async def control_message(self, data: bytes, shard: int) -> bytes:
        """Answer a control message's bytes (from the control subject of ``shard``): a malformed or unknown
        request gets a clear error reply, and a failure while acting on it an ``error`` reply (logged), never an
        exception."""
        try:
            request = parse_request(data)
        except ControlError as exc:
            log.warning("refusing a control message: %s", exc.reason)
            return ControlReply.refusal(exc).to_bytes()
        try:
            reply = await self.control(request, shard)
        except Exception:
            log.exception("a control request failed")
            reply = ControlReply("error", "CONTROL_FAILED", "the host failed to act on the request")
        return reply.to_bytes()

    async def _activate(self, key: SessionKey, incarnation: str, shard: int) -> SessionActor:
        """The session's live actor, activated if need be: one activation at a time per session (a turn and a
        control message arriving together must not make two actors, the later fencing the earlier). A new actor
        only for a shard this host pulls (:class:`ShardNotServed`): one made for a shard being given up would
        outlive the give-up, and fence the shard's next owner turn after turn."""
        while (pending := self._activating.get(key)) is not None:
            await asyncio.wait({pending})
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._activating[key] = done
        try:
            return await self._activate_now(key, incarnation, shard)
        finally:
            del self._activating[key]
            done.set_result(None)

    async def _activate_now(self, key: SessionKey, incarnation: str, shard: int) -> SessionActor:
        session = self._sessions.get(key)
        if session is not None:
            if session.fenced:
                await self._passivate(key)
            elif not incarnation or session.state.incarnation == incarnation:
                return session
            else:
                # The session was deleted and created again under the same id: forget the old one.
                await self._passivate(key)
        self._check_served(shard)
        definition = await self._registry.get(key.tenant_id, key.session_id)
        current = incarnation_of(definition)
        settings = self._shared_settings.share(session_settings(definition, self._settings))
        self._check_served(shard)  # the shard may have been given up while the definition was read
        loaded, ledger = await self._journal.open(key.tenant_id, key.session_id, current, holder=self.name)
        # Given up while the ledger was opened: the marker already written fences the next owner's actor once
        # (it activates again); keeping this one would fence it at every turn.
        self._check_served(shard)
        state = SessionState.restore(loaded, current, settings.window_max_messages)
        if len(self._sessions) >= self._settings.max_sessions:
            # Make room before the newcomer joins, so it is never the one evicted. Busy sessions stay, so
            # the cap is soft when every live session is running a turn.
            await self._passivate_lru(len(self._sessions) - self._settings.max_sessions + 1)
        session = SessionActor(
            key,
            settings,
            state,
            self._provider,
            ledger,
            clock=self._clock,
            retriever=self._retriever,
            summarizer=self._summarizer,
            tool_servers=self._tool_servers,
            tool_stats=self._tool_stats,
            stored_answers=self._tool_answers,
        )
        # With the session, not after its first turn is taken: giving the shard up must find every session of it.
        self._sessions[key] = session
        self._session_shards[key] = shard
        self.activations += 1
        return session

    def _check_served(self, shard: int) -> None:
        if shard not in self._pullers:
            raise ShardNotServed(f"shard {shard} is not served here")

    async def _passivate(self, key: SessionKey) -> None:
        # Popped before any await, so a turn arriving meanwhile activates a fresh actor from the snapshot,
        # which is already current: it is saved after every turn.
        session = self._sessions.pop(key, None)
        self._session_shards.pop(key, None)
        if session is None:
            return
        self.passivations += 1
        await session.passivate()

    async def _passivate_lru(self, count: int) -> None:
        idle = sorted((k for k, s in self._sessions.items() if not s.busy), key=lambda k: self._sessions[k].last_active)
        for key in idle[:count]:
            await self._passivate(key)

    async def _sweep_loop(self) -> None:
        interval = max(min(self._settings.session_idle_s / 4, 30.0), 0.05)
        while True:
            await asyncio.sleep(interval)
            cutoff = self._clock() - self._settings.session_idle_s
            stale = [k for k, s in self._sessions.items() if s.fenced or (not s.busy and s.last_active < cutoff)]
            for key in stale:
                await self._passivate(key)

    async def _heartbeat_loop(self) -> None:
        # Long turns would outlive ack_wait and be redelivered to another host; renew them well before.
        interval = max(self._settings.ack_wait_s / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            for turn in list(self._inflight.values()):
                for msg in turn.copies:
                    with contextlib.suppress(Exception):
                        await msg.in_progress()


async def _envelope_of(msg: BusMessage) -> TurnEnvelope | None:
    """The turn a message carries; None (and the message dropped for good) when it is malformed."""
    try:
        return TurnEnvelope.from_msg(msg)
    except SalonError:
        log.error("dropping a malformed turn message")
        await msg.term()
        return None


def _turn_span(envelope: TurnEnvelope, key: SessionKey) -> ConsumerSpan:
    """The CONSUMER span of a turn on this host, a child of the gateway's (ended when the turn is settled)."""
    span = consumer_span("salon.host.turn", envelope.trace_headers, envelope.enqueued_at_ns)
    if span.span.is_recording():
        span.span.set_attributes(
            {
                attributes.TURN_ID: envelope.turn_id,
                attributes.SESSION_ID: key.session_id,
                attributes.TENANT_ID: key.tenant_id,
            }
        )
    return span


def _turn_of(envelope: TurnEnvelope, span: ConsumerSpan, prior: list[TurnEvent], settings: SessionSettings) -> Turn:
    """The turn a message carries, as its session (with ``settings``) is handed it."""
    request = envelope.request
    return Turn(
        envelope.turn_id,
        envelope.request.text,
        trace_id=span.trace_id_hex,
        trace_context=span.context(),
        enqueued_at_ns=envelope.enqueued_at_ns,
        prior_events=prior,
        policy=DOUBLE_TEXTING.get(envelope.request.double_texting, ""),
        deadline_ns=envelope.deadline_ns,
        guardrails=GuardrailSettings.from_header(envelope.guardrails),
        tools=selection_from_proto(request.tools, check=False) if request.HasField("tools") else None,
        tool_policy=_policy(settings.tool_policy, request.tool_settings) if request.HasField("tool_settings") else None,
        do_not_remember=request.do_not_remember,
    )


class _CountingProvider:
    """Counts the answers asked of the model: the figure that must not grow on redelivery or replay."""

    def __init__(self, inner: ModelProvider) -> None:
        self._inner = inner
        self.calls = 0

    @property
    def name(self) -> str:
        return self._inner.name

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.calls += 1
        return self._inner.stream(request)

    def stats(self) -> dict[str, int]:
        # A provider chain counts failures, fallbacks and breaker states; plain providers have nothing more.
        inner = getattr(self._inner, "stats", None)
        return {f"model_{key}": int(value) for key, value in inner().items()} if callable(inner) else {}

    def breaker_states(self) -> dict[str, str]:
        inner = getattr(self._inner, "breaker_states", None)
        return dict(inner()) if callable(inner) else {}

    async def aclose(self) -> None:
        await self._inner.aclose()
