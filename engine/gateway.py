"""The gateway's logic: sessions in the registry, turns onto the bus, events back.

It holds no session state, so any number of gateways can serve the same deployment. The gRPC servicer
(``engine.servicer``) is a thin adapter over this class.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Collection, Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from salon import otel
from salon.actors import GuardrailSettings, SessionState, is_terminal, record_events, shard_for
from salon.actors.usage import token_counts
from salon.engine.config import Config
from salon.engine.kept_answers import AnswerKeeper
from salon.engine.session_cache import SessionCache
from salon.engine.tools_api import ToolAnswers, check_decide, check_submit, check_tool_set, check_tool_settings
from salon.engine.validation import check_create_session, check_send_turn, page_size
from salon.storage import (
    AnswerStore,
    FailedPrecondition,
    InvalidArgument,
    Journal,
    Names,
    NotFound,
    ResourceExhausted,
    SalonError,
    SessionRegistry,
    TurnEnvelope,
    TurnRecord,
    Unavailable,
    incarnation_of,
    require_id,
    uuid7,
)
from salon.storage.bus import EventsLost
from salon.storage.history import StoredFloor, TranscriptReader, no_floor
from salon.storage.jetstream.bus import EventStream, TurnPublisher
from salon.storage.jetstream.events import is_refusal
from salon.storage.reasons import Reason
from salon.storage.tables import TranscriptStore
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import session_pb2, turn_pb2

_DEFAULT_GUARDRAILS = GuardrailSettings()
CANCEL_ON_DISCONNECT = session_pb2.DISCONNECT_POLICY_CANCEL


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        last_id = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("page_token is not valid", reason=Reason.BAD_PAGE_TOKEN) from None
    require_id(last_id, "page_token")
    return last_id


class Gateway:
    """Session management and the turn path, for one tenant at a time (the caller's)."""

    def __init__(
        self,
        config: Config,
        publisher: TurnPublisher,
        registry: SessionRegistry,
        journal: Journal,
        store: TranscriptStore,
        *,
        store_healthy: Callable[[], bool] = lambda: True,
        halted: Callable[[], SalonError | None] = lambda: None,
        guardrails_for: Callable[[str], GuardrailSettings] | None = None,
        stored_floor: StoredFloor = no_floor,
        tool_servers_for: Callable[[str], Collection[str]] | None = None,
        tool_answers: AnswerStore | None = None,
    ) -> None:
        self._config = config
        self._publisher = publisher
        self._tool_servers_for = tool_servers_for
        keeper = AnswerKeeper(tool_answers, journal) if tool_answers is not None else None
        self._answers = ToolAnswers(
            publisher.control, config.num_shards, max_result_bytes=config.tool_max_result_bytes, keeper=keeper
        )
        self._registry = registry
        self.sessions = SessionCache(registry)
        """Definitions for the turn path (kept once the engine watches the registry's changes)."""
        self._journal = journal
        self._store = store
        self._store_healthy = store_healthy
        self._halted = halted
        self._guardrails_for = guardrails_for
        self._transcript = TranscriptReader(store, journal, stored_floor)
        self.names = Names(config.namespace)

    def guardrails(self, tenant_id: str) -> GuardrailSettings:
        """The tenant's guardrail settings (the defaults when none are configured)."""
        return self._guardrails_for(tenant_id) if self._guardrails_for is not None else _DEFAULT_GUARDRAILS

    def mcp_servers(self, tenant_id: str) -> Collection[str]:
        """The MCP servers the tenant's sessions may name (the deployment's and the tenant's own)."""
        return self._tool_servers_for(tenant_id) if self._tool_servers_for is not None else ()

    def _check_tools(self, tenant_id: str, request: cs_pb2.CreateSessionRequest | cs_pb2.SendTurnRequest) -> None:
        """A request's tools and tool settings, when it sets them (INVALID_ARGUMENT naming the tool)."""
        if request.HasField("tools"):
            check_tool_set(request.tools, self.mcp_servers(tenant_id))
        if request.HasField("tool_settings"):
            check_tool_settings(request.tool_settings)

    @property
    def registry(self) -> SessionRegistry:
        """The session definitions (memory search checks a session exists; erasure finds a user's sessions)."""
        return self._registry

    @property
    def store(self) -> TranscriptStore:
        """The transcript store (erasure removes a user's rows from it)."""
        return self._store

    @property
    def bus_connected(self) -> bool:
        """Whether the turn bus is reachable now."""
        return self._publisher.connected

    async def create_session(self, tenant_id: str, request: cs_pb2.CreateSessionRequest) -> session_pb2.Session:
        """Store a new session (named by the caller or with a new UUIDv7)."""
        check_create_session(request, self.guardrails(tenant_id))
        self._check_tools(tenant_id, request)
        now = time.time_ns()
        session = session_pb2.Session(
            session_id=request.session_id or uuid7(),
            metadata=dict(request.metadata),
            system_prompt=request.system_prompt,
            memory=request.memory,
            double_texting=request.double_texting or session_pb2.DOUBLE_TEXTING_POLICY_ENQUEUE,
            disconnect_policy=request.disconnect_policy or session_pb2.DISCONNECT_POLICY_CONTINUE,
            model=request.model,
            create_time=Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000),
            tools=request.tools if request.HasField("tools") else None,
            tool_settings=request.tool_settings if request.HasField("tool_settings") else None,
            user_id=request.user_id,
        )
        await self._registry.create(tenant_id, session)
        return session

    async def get_session(self, tenant_id: str, session_id: str) -> session_pb2.Session:
        """The session with its live counters; NOT_FOUND if the tenant has none by that id."""
        require_id(session_id, "session_id")
        session = await self._registry.get(tenant_id, session_id)
        incarnation = incarnation_of(session)
        loaded = await self._journal.peek(tenant_id, session_id, incarnation)
        indexes = [r.turn_index for r in loaded.turns] + ([loaded.snapshot.turn_index] if loaded.snapshot else [])
        session.turn_count = max(indexes, default=0)
        # The rolling summary as the session itself recovers it: from its latest snapshot and the records after
        # it (a summary rewritten after the last turn shows once the next turn or snapshot records it).
        summary = SessionState.restore(loaded, incarnation, self._config.window_max_messages).summary
        if summary.version:
            session.summary.CopyFrom(session_pb2.Summary(text=summary.text, version=summary.version))
        return session

    async def list_sessions(
        self, tenant_id: str, request: cs_pb2.ListSessionsRequest
    ) -> tuple[list[session_pb2.Session], str]:
        """One page of the tenant's sessions (ordered by id) matching the metadata filter."""
        size = page_size(request.page_size)
        after = _decode_token(request.page_token) if request.page_token else ""
        wanted = dict(request.metadata_filter)
        ids = [i for i in await self._registry.list_ids(tenant_id) if i > after]
        page: list[session_pb2.Session] = []
        for index, session_id in enumerate(ids):
            try:
                session = await self._registry.get(tenant_id, session_id)
            except NotFound:
                continue  # deleted while listing
            if all(session.metadata.get(k) == v for k, v in wanted.items()):
                page.append(session)
            if len(page) == size:
                more = index + 1 < len(ids)
                return page, _encode_token(session_id) if more else ""
        return page, ""

    async def delete_session(self, tenant_id: str, session_id: str) -> None:
        """Remove the session and its state."""
        require_id(session_id, "session_id")
        self.sessions.forget(tenant_id, session_id)
        await self._registry.delete(tenant_id, session_id)
        self.sessions.forget(tenant_id, session_id)
        # Registry first: the writer then drops ledger entries of this session still in flight.
        await self._journal.purge(tenant_id, session_id)
        await self._store.delete_session(tenant_id, session_id)

    async def history(
        self, tenant_id: str, session_id: str, *, page_size: int, after_turn_index: int
    ) -> tuple[list[TurnRecord], int]:
        """One page of the transcript, oldest first, and the turn index to continue after (0: no more).

        Rows come from LanceDB; turns the batch writer may not have stored yet come from the ledger."""
        require_id(session_id, "session_id")
        session = await self._registry.get(tenant_id, session_id)
        return await self._transcript.page(
            tenant_id, session_id, incarnation_of(session), after_turn_index=after_turn_index, page_size=page_size
        )

    async def send_turn(
        self,
        tenant_id: str,
        request: cs_pb2.SendTurnRequest,
        *,
        trace_headers: Mapping[str, str],
        timeout_s: float | None = None,
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """Validate, publish the turn, and yield its events until the terminal one.

        The turn is named by the idempotency key when given, so a retry finds the same turn: running, it is
        joined; finished within the event retention, its events are replayed.
        """
        guardrails = self.guardrails(tenant_id)
        check_send_turn(request, self._config.max_text_bytes, guardrails)
        self._check_tools(tenant_id, request)
        observer = _TurnObserver(otel.metrics(), time.monotonic())
        if not self._store_healthy():
            raise Unavailable(
                "the transcript store is failing; new turns are refused until it recovers",
                reason=Reason.STORE_UNAVAILABLE,
                retry_after_s=5.0,
            )
        session = await self.sessions.get(tenant_id, request.session_id)
        envelope = TurnEnvelope(
            tenant_id=tenant_id,
            turn_id=request.idempotency_key or uuid7(),
            request=request,
            trace_headers=trace_headers,
            enqueued_at_ns=time.time_ns(),
            incarnation=incarnation_of(session),
            guardrails=guardrails.to_header(),
            deadline_ns=0 if timeout_s is None else time.time_ns() + int(timeout_s * 1e9),
        )
        stream, duplicate = await self._publish(envelope)
        ended = False
        try:
            async for event in stream.iterate(
                self._wait_s(timeout_s), extend=self._tool_wait(timeout_s), halted=self._halted
            ):
                if observer.events == 0 and duplicate and is_refusal(event):
                    # The same key was refused before: that message is gone, and JetStream dropped this one as its
                    # duplicate. Sent again, it runs (or is refused anew, which is then this request's answer).
                    await self._publisher.send_refused_again(envelope, self._shard(envelope), stream.stream_seq)
                    stream.rewind(0)
                    duplicate = False
                    continue
                if observer.events == 0 and event.HasField("error"):
                    if event.error.reason == Reason.SESSION_NOT_FOUND:
                        self.sessions.forget(tenant_id, request.session_id)
                    _raise_refusal(event.error)
                ended = is_terminal(event)
                observer.saw(event)
                yield event
        finally:
            if not ended and (request.disconnect_policy or session.disconnect_policy) == CANCEL_ON_DISCONNECT:
                # The client went away (or its deadline passed) mid-turn and asked for its turns to stop.
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        self.cancel_turn(tenant_id, request.session_id, envelope.turn_id, reason="the client went away")
                    )

    def _tool_wait(self, timeout_s: float | None) -> Callable[[turn_pb2.TurnEvent], float | None] | None:
        """How much longer a stream waits after an event saying the turn waits for a tool result or an approval
        (until that wait's deadline, then the turn timeout): none when the caller set its own deadline."""
        if timeout_s is not None:
            return None
        turn_timeout_s = self._config.turn_timeout_s

        def extend(event: turn_pb2.TurnEvent) -> float | None:
            kind = event.WhichOneof("kind")
            if kind not in ("tool_call", "approval_required"):
                return None
            deadline_ns: int = getattr(event, kind).wait_deadline.ToNanoseconds()
            if not deadline_ns:
                return None
            return max(deadline_ns / 1e9 - time.time(), 0.0) + turn_timeout_s

        return extend

    def _wait_s(self, timeout_s: float | None) -> float:
        """How long a turn's events are waited for: the turn timeout, or less if the call has less time."""
        return self._config.turn_timeout_s if timeout_s is None else min(timeout_s, self._config.turn_timeout_s)

    def _shard(self, envelope: TurnEnvelope) -> int:
        return shard_for(envelope.tenant_id, envelope.request.session_id, self._config.num_shards)

    async def _publish(self, envelope: TurnEnvelope) -> tuple[EventStream, bool]:
        """Publish the turn on its shard; the stream of its events, subscribed while publishing, and whether
        JetStream already had the turn (a duplicate within its dedupe window)."""
        tenant_id, session_id, turn_id = envelope.tenant_id, envelope.request.session_id, envelope.turn_id
        shard = self._shard(envelope)
        # Subscribed before the turn is published (no round trip): the copies of its events the events stream
        # republishes as it stores them. A turn that stored events before (a duplicate, or a retry under the
        # client's key after the dedupe window) reads the stream instead. The lookup starts after the
        # subscription, so whatever it does not see arrives live.
        stream = await self._publisher.open_live_events(tenant_id, session_id, turn_id)
        earlier = (
            asyncio.ensure_future(self._publisher.has_events(tenant_id, session_id, turn_id))
            if envelope.request.idempotency_key
            else None
        )
        try:
            # PRODUCER span: the host's CONSUMER span continues the trace from the headers it puts on the message.
            with otel.producer_span(
                otel.attributes.SPAN_TURN_PUBLISH,
                envelope.trace_headers,
                {
                    otel.attributes.MESSAGING_SYSTEM: "nats",
                    otel.attributes.MESSAGING_OPERATION: "send",
                    otel.attributes.MESSAGING_MESSAGE_ID: turn_id,
                    otel.attributes.TURN_ID: turn_id,
                    otel.attributes.SESSION_ID: session_id,
                    otel.attributes.TENANT_ID: tenant_id,
                    otel.attributes.SHARD: shard,
                },
            ) as producer:
                published = dataclasses.replace(envelope, trace_headers=producer.headers())
                duplicate = await self._publisher.publish(published, shard)
            stored_before = duplicate or (earlier is not None and await earlier)
        except BaseException:
            if earlier is not None:
                earlier.cancel()
                with contextlib.suppress(BaseException):
                    await earlier
            await stream.close()
            raise
        if stored_before:
            await stream.close()
            return await self._publisher.open_events(tenant_id, session_id, turn_id), duplicate
        return stream, duplicate

    async def cancel_turn(
        self, tenant_id: str, session_id: str, turn_id: str, *, reason: str = "cancelled by the client"
    ) -> str:
        """Stop a running or queued turn (or one not arrived yet); returns what the host did."""
        require_id(session_id, "session_id")
        require_id(turn_id, "turn_id")
        session = await self.sessions.get(tenant_id, session_id)
        shard = shard_for(tenant_id, session_id, self._config.num_shards)
        request = {
            "action": "cancel",
            "tenant_id": tenant_id,
            "session_id": session_id,
            "turn_id": turn_id,
            "incarnation": incarnation_of(session),
            "reason": reason,
        }
        reply = await self._publisher.control(shard, request)
        result = reply.get("result", "")
        if result == "unknown_session":
            raise NotFound("session not found", reason=Reason.SESSION_NOT_FOUND)
        if result == "error":
            raise Unavailable(
                "the session's host failed to cancel the turn", reason=Reason.CANCEL_FAILED, retry_after_s=1.0
            )
        if result == "unavailable":
            # The session is moving between hosts: its next owner takes the cancel.
            raise Unavailable(
                "the session is moving to another host; retry shortly",
                reason=Reason.HOST_UNAVAILABLE,
                retry_after_s=1.0,
            )
        return result

    async def submit_tool_result(
        self, tenant_id: str, request: cs_pb2.SubmitToolResultRequest
    ) -> cs_pb2.SubmitToolResultResponse:
        """Hand a client's tool result to the turn waiting for it (on the host owning its session)."""
        check_submit(request, self._answers.max_result_bytes)
        incarnation = await self._incarnation(tenant_id, request.session_id)
        return await self._answers.submit(tenant_id, incarnation, request)

    async def decide_approval(
        self, tenant_id: str, decided_by: str, request: cs_pb2.DecideApprovalRequest
    ) -> cs_pb2.DecideApprovalResponse:
        """Hand a person's decision about a call to the turn waiting for it; ``decided_by``: the caller's
        credentials, recorded with the decision."""
        check_decide(request)
        incarnation = await self._incarnation(tenant_id, request.session_id)
        return await self._answers.decide(tenant_id, incarnation, decided_by, request)

    async def _incarnation(self, tenant_id: str, session_id: str) -> str:
        """The session's incarnation; a session the tenant cannot see is a call not found (one answer for an
        unknown call, a finished turn and another tenant's session)."""
        try:
            return incarnation_of(await self.sessions.get(tenant_id, session_id))
        except NotFound:
            raise NotFound("tool call not found", reason=Reason.TOOL_CALL_NOT_FOUND) from None

    async def resume_turn(
        self, tenant_id: str, session_id: str, turn_id: str, *, after_seq: int, timeout_s: float | None = None
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """The turn's events after ``after_seq``, each once, until its terminal event: from the events stream
        while they are retained (the turn may still be running), then from the turn's record."""
        require_id(session_id, "session_id")
        require_id(turn_id, "turn_id")
        session = await self._registry.get(tenant_id, session_id)
        if not await self._publisher.has_events(tenant_id, session_id, turn_id):
            record = await self._find_record(tenant_id, session_id, incarnation_of(session), turn_id)
            if record is None:
                raise NotFound("turn not found", reason=Reason.TURN_NOT_FOUND)
            for event in await record_events(record, after_seq):
                yield event
            return
        stream = await self._publisher.open_events(tenant_id, session_id, turn_id, after_seq=after_seq)
        try:
            async for event in stream.iterate(
                self._wait_s(timeout_s), extend=self._tool_wait(timeout_s), halted=self._halted
            ):
                after_seq = event.seq
                yield event
        except EventsLost:
            # The events stream lost some (a restarted NATS server starts it empty): the record has them all.
            record = await self._find_record(tenant_id, session_id, incarnation_of(session), turn_id)
            if record is None:
                raise  # still running: retry once it is recorded
            for event in await record_events(record, after_seq):
                yield event

    async def _find_record(self, tenant_id: str, session_id: str, incarnation: str, turn_id: str) -> TurnRecord | None:
        stored = [
            r for r in await self._store.turns_by_ids(tenant_id, session_id, [turn_id]) if r.incarnation == incarnation
        ]
        if stored:
            return stored[0]
        # Not flushed to the tables yet: the ledger has it.
        tail = await self._journal.turns_after(tenant_id, session_id, incarnation, 0)
        return next((r for r in tail if r.turn_id == turn_id), None)


class _TurnObserver:
    """The gateway's metrics of one turn it relays: time to its first token, its tokens (not again for a
    replayed turn, whose tokens were counted when it ran), and how it ended."""

    def __init__(self, metrics: otel.Metrics | None, started: float) -> None:
        self._metrics = metrics
        self._started = started
        self._replayed = False
        self._first_token = True
        self.events = 0

    def saw(self, event: turn_pb2.TurnEvent) -> None:
        """Count ``event`` (events arrive in order)."""
        self.events += 1
        metrics = self._metrics
        if metrics is None:
            return
        kind = event.WhichOneof("kind")
        self._replayed = self._replayed or (kind == "accepted" and event.accepted.replayed)
        if kind == "delta" and self._first_token:
            self._first_token = False
            metrics.first_token(time.monotonic() - self._started)
        elif kind == "usage" and not self._replayed:
            metrics.tokens_used(token_counts(event.usage))
        elif is_terminal(event):
            metrics.turn_ended(kind or "", time.monotonic() - self._started)


_REFUSALS: dict[Reason, type[SalonError]] = {
    Reason.SESSION_BUSY: FailedPrecondition,
    Reason.TOO_MANY_TURNS: ResourceExhausted,
    Reason.SESSION_NOT_FOUND: NotFound,
}
"""Turn errors that refuse a turn before it started: they end the call with their status instead of a
stream of one error event."""


def _raise_refusal(error: turn_pb2.TurnError) -> None:
    """Raise the refusal ``error`` stands for, if it is one (its reason string read back through the enum)."""
    reason = Reason.from_wire(error.reason)
    refusal = _REFUSALS.get(reason) if reason is not None else None
    if refusal is not None:
        retry = error.retry_after.ToNanoseconds() / 1e9 if error.HasField("retry_after") else None
        raise refusal(error.message, reason=reason, retry_after_s=retry)
