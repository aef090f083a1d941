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
from collections.abc import AsyncIterator, Callable, Mapping

from google.protobuf.timestamp_pb2 import Timestamp

import otel
from actors import GuardrailSettings, SessionState, is_terminal, record_events, shard_for
from engine.config import Config
from engine.validation import check_create_session, check_send_turn, page_size
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import session_pb2, turn_pb2
from storage import (
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
from storage.jetstream.bus import TurnPublisher
from storage.jetstream.events import is_refusal
from storage.tables import TranscriptStore

_DEFAULT_GUARDRAILS = GuardrailSettings()


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        last_id = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN") from None
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
        guardrails_for: Callable[[str], GuardrailSettings] | None = None,
    ) -> None:
        self._config = config
        self._publisher = publisher
        self._registry = registry
        self._journal = journal
        self._store = store
        self._store_healthy = store_healthy
        self._guardrails_for = guardrails_for
        self.names = Names(config.namespace)

    def guardrails(self, tenant_id: str) -> GuardrailSettings:
        """The tenant's guardrail settings (the defaults when none are configured)."""
        return self._guardrails_for(tenant_id) if self._guardrails_for is not None else _DEFAULT_GUARDRAILS

    @property
    def bus_connected(self) -> bool:
        """Whether the turn bus is reachable now."""
        return self._publisher.connected

    async def create_session(self, tenant_id: str, request: cs_pb2.CreateSessionRequest) -> session_pb2.Session:
        """Store a new session (named by the caller or with a new UUIDv7)."""
        check_create_session(request, self.guardrails(tenant_id))
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
        await self._registry.delete(tenant_id, session_id)
        # Registry first: the writer then drops ledger entries of this session still in flight.
        await self._journal.purge(tenant_id, session_id)
        await self._store.delete_session(tenant_id, session_id)

    async def history(
        self, tenant_id: str, session_id: str, *, page_size: int, after_turn_index: int
    ) -> tuple[list[TurnRecord], int]:
        """One page of the transcript, oldest first, and the turn index to continue after (0: no more).

        Rows come from LanceDB; turns the batch writer has not flushed yet come from the ledger."""
        require_id(session_id, "session_id")
        session = await self._registry.get(tenant_id, session_id)
        incarnation = incarnation_of(session)
        rows = await self._store.history(tenant_id, session_id, after_turn_index=after_turn_index, limit=page_size + 1)
        rows = [r for r in rows if r.incarnation == incarnation]
        if len(rows) <= page_size:
            last_seq = max((r.ledger_seq for r in rows), default=0)
            tail = await self._journal.turns_after(tenant_id, session_id, incarnation, last_seq)
            known = {r.turn_index for r in rows}
            rows += [r for r in tail if r.turn_index > after_turn_index and r.turn_index not in known]
            rows.sort(key=lambda r: r.turn_index)
        page = rows[:page_size]
        more = len(rows) > page_size
        cursor = page[-1].turn_index if more and page else 0
        # Rolled-back turns are erased from history (their records only answer retries of the same turn).
        return [r for r in page if r.status != "rolled_back"], cursor

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
        started = time.monotonic()
        if not self._store_healthy():
            raise Unavailable(
                "the transcript store is failing; new turns are refused until it recovers",
                reason="STORE_UNAVAILABLE",
                retry_after_s=5.0,
            )
        session = await self._registry.get(tenant_id, request.session_id)
        turn_id = request.idempotency_key or uuid7()
        envelope = TurnEnvelope(
            tenant_id=tenant_id,
            turn_id=turn_id,
            request=request,
            trace_headers=trace_headers,
            enqueued_at_ns=time.time_ns(),
            incarnation=incarnation_of(session),
            guardrails=guardrails.to_header(),
        )
        if timeout_s is not None:
            envelope = dataclasses.replace(envelope, deadline_ns=time.time_ns() + int(timeout_s * 1e9))
        shard = shard_for(tenant_id, request.session_id, self._config.num_shards)
        # The events stream keeps the turn's events from the first, so subscribing can overlap the publish.
        opening = asyncio.ensure_future(self._publisher.open_events(tenant_id, request.session_id, turn_id))
        try:
            # PRODUCER span: the host's CONSUMER span continues the trace from the headers it puts on the message.
            with otel.producer_span(
                otel.attributes.SPAN_TURN_PUBLISH,
                trace_headers,
                {
                    otel.attributes.MESSAGING_SYSTEM: "nats",
                    otel.attributes.MESSAGING_OPERATION: "send",
                    otel.attributes.MESSAGING_MESSAGE_ID: turn_id,
                    otel.attributes.TURN_ID: turn_id,
                    otel.attributes.SESSION_ID: request.session_id,
                    otel.attributes.TENANT_ID: tenant_id,
                    otel.attributes.SHARD: shard,
                },
            ) as producer:
                envelope = dataclasses.replace(envelope, trace_headers=producer.headers())
                duplicate = await self._publisher.publish(envelope, shard)
        except BaseException:
            opening.cancel()
            with contextlib.suppress(BaseException):
                await (await opening).close()
            raise
        stream = await opening
        wait = self._config.turn_timeout_s if timeout_s is None else min(timeout_s, self._config.turn_timeout_s)
        policy = request.disconnect_policy or session.disconnect_policy
        ended = False
        metrics = otel.metrics()
        try:
            first = True
            first_token = True
            replayed = False
            async for event in stream.iterate(wait):
                if first and duplicate and is_refusal(event):
                    # The same key was refused before: that message is gone, and JetStream dropped this one as its
                    # duplicate. Sent again, it runs (or is refused anew, which is then this request's answer).
                    await self._publisher.send_refused_again(envelope, shard, stream.stream_seq)
                    stream.rewind(0)
                    duplicate = False
                    continue
                if first and event.HasField("error"):
                    _raise_refusal(event.error)
                first = False
                ended = is_terminal(event)
                if metrics is not None:
                    replayed = replayed or (event.HasField("accepted") and event.accepted.replayed)
                    if first_token and event.HasField("delta"):
                        first_token = False
                        metrics.first_token(time.monotonic() - started)
                    if event.HasField("usage") and not replayed:
                        u = event.usage
                        metrics.tokens_used(
                            {
                                "input": u.input_tokens,
                                "output": u.output_tokens,
                                "cache_read": u.cache_read_input_tokens,
                                "cache_write": u.cache_creation_input_tokens,
                            }
                        )
                    if ended:
                        metrics.turn_ended(event.WhichOneof("kind") or "", time.monotonic() - started)
                yield event
        finally:
            if not ended and policy == session_pb2.DISCONNECT_POLICY_CANCEL:
                # The client went away (or its deadline passed) mid-turn and asked for its turns to stop.
                with contextlib.suppress(Exception):
                    await asyncio.shield(
                        self.cancel_turn(tenant_id, request.session_id, turn_id, reason="the client went away")
                    )

    async def cancel_turn(
        self, tenant_id: str, session_id: str, turn_id: str, *, reason: str = "cancelled by the client"
    ) -> str:
        """Stop a running or queued turn (or one not arrived yet); returns what the host did."""
        require_id(session_id, "session_id")
        require_id(turn_id, "turn_id")
        session = await self._registry.get(tenant_id, session_id)
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
            raise NotFound("session not found", reason="SESSION_NOT_FOUND")
        if result == "error":
            raise Unavailable("the session's host failed to cancel the turn", reason="CANCEL_FAILED", retry_after_s=1.0)
        return result

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
                raise NotFound("turn not found", reason="TURN_NOT_FOUND")
            for event in await record_events(record, after_seq):
                yield event
            return
        stream = await self._publisher.open_events(tenant_id, session_id, turn_id, after_seq=after_seq)
        wait = self._config.turn_timeout_s if timeout_s is None else min(timeout_s, self._config.turn_timeout_s)
        async for event in stream.iterate(wait):
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


_REFUSALS: dict[str, type[SalonError]] = {
    "SESSION_BUSY": FailedPrecondition,
    "TOO_MANY_TURNS": ResourceExhausted,
    "SESSION_NOT_FOUND": NotFound,
}


def _raise_refusal(error: turn_pb2.TurnError) -> None:
    """A turn refused before it started ends the call with the matching status, not a stream of one error."""
    refusal = _REFUSALS.get(error.reason)
    if refusal is not None:
        retry = error.retry_after.ToNanoseconds() / 1e9 if error.HasField("retry_after") else None
        raise refusal(error.message, reason=error.reason, retry_after_s=retry)
