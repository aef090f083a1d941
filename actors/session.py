"""The session actor: one conversation's state and its turns, one at a time, in arrival order.

Plain asyncio: no Ray, NATS or gRPC here. The host feeds it turns, a sink for their events and the
session's ledger handle. A turn ends in this order: its answer is streamed, its outcome is appended to the
ledger (retried while the ledger is unreachable), applied to the state, the terminal event is sent, and only
then is the turn acknowledged. So a client that saw a turn complete can read it back, and an acknowledged
turn is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

import otel
from actors.events import EventSink, TurnEmitter, ending_steps, record_steps
from actors.guardrails import BLOCK_REASONS, Guardrails, GuardrailSettings, OutputGuard, new_canary, with_canary
from actors.memory import fit_window
from actors.model import Message, ModelChunk, ModelError, ModelProvider, ModelRequest, ModelResult, TextDelta
from salon.v1 import turn_pb2
from storage import Fenced, GuardrailDecision, LoadedSession, SalonError, SessionLog, SnapshotRecord, TurnRecord

log = logging.getLogger(__name__)

RECENT_TURNS_KEPT = 16
"""How many finished turns a session remembers by id, to answer a redelivered turn without the model.
Retries of older turns within the dedupe window never reach the session (JetStream drops them); each entry
costs memory in every live session (bench/RESULTS.md: memory per session)."""


@dataclass(frozen=True, slots=True)
class SessionKey:
    """A session's identity: sessions are always scoped to a tenant."""

    tenant_id: str
    session_id: str

    def __str__(self) -> str:
        return f"{self.tenant_id}/{self.session_id}"


@dataclass(frozen=True, slots=True)
class SessionSettings:
    """What the session was created with (read from the session registry at activation)."""

    system_prompt: str = ""
    window_max_messages: int = 40
    window_token_budget: int = 8000
    model: str = ""
    max_tokens: int = 1024
    temperature: float | None = None
    stop_sequences: tuple[str, ...] = ()
    snapshot_every_turns: int = 20
    provider: str = ""
    fallback_providers: tuple[str, ...] = ()
    double_texting: str = "enqueue"
    """What a turn arriving while another runs does: enqueue, reject, interrupt or rollback."""


@dataclass(slots=True)
class SessionState:
    """What a session remembers between turns. It is a pure function of its ledger records, so a snapshot is
    only a cache: activation applies the records after the latest snapshot."""

    incarnation: str = ""
    messages: list[Message] = field(default_factory=list)
    turn_count: int = 0
    ledger_seq: int = 0
    """Ledger sequence of the last turn applied."""
    recent: OrderedDict[str, int] = field(default_factory=OrderedDict)
    """Recently finished turns: turn id to ledger sequence."""

    def apply(self, record: TurnRecord, keep_messages: int) -> None:
        """Fold one recorded turn into the state."""
        self.turn_count = record.turn_index
        self.ledger_seq = record.ledger_seq
        # A turn a guardrail blocked stays out of memory: the next turns' prompts must not carry it again.
        if record.status != "rolled_back" and record.error_reason not in BLOCK_REASONS:
            self.messages.append(Message("user", record.user_text, record.turn_id))
            if record.reply_text:
                self.messages.append(Message("assistant", record.reply_text, record.turn_id))
        if len(self.messages) > keep_messages:
            del self.messages[: len(self.messages) - keep_messages]
        self.recent[record.turn_id] = record.ledger_seq
        while len(self.recent) > RECENT_TURNS_KEPT:
            self.recent.popitem(last=False)

    @classmethod
    def restore(cls, loaded: LoadedSession, incarnation: str, keep_messages: int) -> SessionState:
        """The state after the loaded snapshot and the records that follow it."""
        state = cls.from_dict(loaded.snapshot.state) if loaded.snapshot else cls(incarnation=incarnation)
        state.incarnation = incarnation
        for record in loaded.turns:
            if record.turn_index > state.turn_count:
                state.apply(record, keep_messages)
        return state

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        return {
            "version": 2,
            "incarnation": self.incarnation,
            "turn_count": self.turn_count,
            "ledger_seq": self.ledger_seq,
            "messages": [[m.role, m.text, m.turn_id] for m in self.messages],
            "recent": list(self.recent.items()),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        """Rebuild state from :meth:`to_dict` output."""
        state = cls(
            incarnation=str(data.get("incarnation", "")),
            turn_count=int(data.get("turn_count", 0)),
            ledger_seq=int(data.get("ledger_seq", 0)),
        )
        state.messages = [Message(role=r, text=t, turn_id=i) for r, t, i in data.get("messages", [])]
        state.recent = OrderedDict((str(t), int(s)) for t, s in data.get("recent", []))
        return state


@dataclass(slots=True)
class Turn:
    """One turn handed to a session."""

    turn_id: str
    text: str
    trace_id: str = ""
    trace_context: otel.TraceContext | None = None
    """The host's CONSUMER span of this turn: the session's spans are its children."""
    enqueued_at_ns: int = 0
    prior_events: Sequence[turn_pb2.TurnEvent] = ()
    """Events an earlier attempt at this turn already sent (its host died mid-turn): the answer continues
    after them instead of starting over."""
    on_done: Callable[[], Awaitable[None]] | None = None
    """Called once the turn is recorded and its terminal event sent (the host acks the bus message here)."""
    policy: str = ""
    """Double-texting policy for this turn; empty: the session's."""
    deadline_ns: int = 0
    """Wall-clock time (ns) after which the turn is cancelled; 0: none."""
    on_release: Callable[[], Awaitable[None]] | None = None
    """Called instead of ``on_done`` when this actor will not finish the turn (another host took the session
    over): the host hands the message back to the bus for prompt redelivery."""
    guardrails: GuardrailSettings = field(default_factory=GuardrailSettings)
    """The tenant's guardrails, as the gateway sent them with the turn."""


@dataclass(slots=True)
class _Queued:
    turn: Turn
    emitter: TurnEmitter
    cancel_reason: str = ""
    """Set when the turn is to stop: by CancelTurn, its deadline, or a newer turn's policy."""
    rollback: bool = False
    task: asyncio.Task[None] | None = None
    """The task streaming the answer, while it runs."""

    def stop(self, reason: str, *, rollback: bool = False) -> None:
        self.cancel_reason = self.cancel_reason or reason
        self.rollback = self.rollback or rollback
        if self.task is not None:
            self.task.cancel()


POLICIES = ("enqueue", "reject", "interrupt", "rollback")


class SessionActor:
    """Runs a session's turns one at a time, in the order they were submitted."""

    def __init__(
        self,
        key: SessionKey,
        settings: SessionSettings,
        state: SessionState,
        provider: ModelProvider,
        ledger: SessionLog,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_retry_delay_s: float = 2.0,
    ) -> None:
        self.key = key
        self.settings = settings
        self.state = state
        self._provider = provider
        self._ledger = ledger
        self._clock = clock
        self._max_retry_delay_s = max_retry_delay_s
        self._queue: deque[_Queued] = deque()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self.fenced = False
        """Set when another host took the session over; the host then drops this actor."""
        self._snapshot_turn = state.turn_count
        self._cancelled_early: set[str] = set()
        self.last_active = clock()
        self._canary = new_canary()
        """This activation's system-prompt canary: random, held only here (never stored or logged)."""

    @property
    def busy(self) -> bool:
        """Whether a turn is running or queued."""
        return bool(self._queue)

    @property
    def pending_turns(self) -> int:
        """Turns running or waiting."""
        return len(self._queue)

    async def wait_idle(self) -> None:
        """Return once no turn is running or queued."""
        while self._runner is not None:
            await asyncio.shield(self._runner)

    async def submit(self, turn: Turn, sink: EventSink) -> bool:
        """Queue ``turn``; its events (starting with ``accepted``) go to ``sink``, and ``turn.on_done`` is
        called once it has ended and been recorded.

        A turn this session already recorded is answered from its record without calling the model. One
        that is queued or running is a duplicate: it is not taken (returns False, ``on_done`` is never
        called); the copy already here will finish and be acknowledged.
        """
        if self._closed:
            raise RuntimeError("session actor is closed")
        self.last_active = self._clock()
        prior_seq = turn.prior_events[-1].seq if turn.prior_events else 0
        emitter = TurnEmitter(self.key.session_id, turn.turn_id, sink, start_seq=prior_seq)
        if turn.turn_id in self.state.recent:
            await self._replay(turn, emitter, self.state.recent[turn.turn_id])
            return True
        if any(q.turn.turn_id == turn.turn_id for q in self._queue):
            return False
        if turn.turn_id in self._cancelled_early:
            # Cancelled before it arrived: recorded as cancelled without running.
            self._cancelled_early.discard(turn.turn_id)
            queued = _Queued(turn, emitter, cancel_reason="the turn was cancelled")
        else:
            queued = _Queued(turn, emitter)
        policy = turn.policy or self.settings.double_texting
        if self._queue and policy == "reject" and not queued.cancel_reason:
            await emitter.error(
                "SESSION_BUSY", "the session is running another turn", retryable=True, partial=False, retry_after_s=1.0
            )
            if turn.on_done is not None:
                await turn.on_done()
            return True
        # Placing the turn before the first await fixes its place in line.
        if self._queue and policy in ("interrupt", "rollback") and not queued.cancel_reason:
            self._queue[0].stop("interrupted by a newer turn", rollback=policy == "rollback")
            self._queue.insert(1, queued)
            position = 1
        else:
            self._queue.append(queued)
            position = len(self._queue) - 1
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"session-{self.key}")
        if not prior_seq:
            await emitter.accepted(position, trace_id=turn.trace_id)
        return True

    def cancel(self, turn_id: str, reason: str = "the turn was cancelled") -> str:
        """Stop a turn: ``cancelled`` when it was queued or running here (it ends with a cancelled event and is
        recorded as such), ``finished`` when it had already ended, ``pending`` when it has not arrived yet
        (it will be cancelled on arrival)."""
        for queued in self._queue:
            if queued.turn.turn_id == turn_id:
                queued.stop(reason)
                return "cancelled"
        if turn_id in self.state.recent:
            return "finished"
        self._cancelled_early.add(turn_id)
        while len(self._cancelled_early) > RECENT_TURNS_KEPT:
            self._cancelled_early.pop()
        return "pending"

    async def _replay(self, turn: Turn, emitter: TurnEmitter, ledger_seq: int) -> None:
        record = await self._ledger.read_turn(ledger_seq)
        if record is None:
            if not emitter.last_seq:
                await emitter.accepted(0, trace_id=turn.trace_id, replayed=True)
            await emitter.error(
                "TURN_RECORD_EXPIRED",
                "the turn was recorded but its record is no longer kept",
                retryable=False,
                partial=False,
            )
        else:
            # The record's events, numbered as they were first sent; those the client has are skipped.
            for step in record_steps(emitter, record)[emitter.last_seq :]:
                await step()
        if turn.on_done is not None:
            await turn.on_done()

    async def _run(self) -> None:
        try:
            while self._queue and not self.fenced:
                queued = self._queue[0]
                try:
                    await self._execute(queued)
                finally:
                    if not self.fenced:
                        self._queue.popleft()
                        self.last_active = self._clock()
            if self.fenced:
                await self._release_all()
        finally:
            self._runner = None

    async def _release_all(self) -> None:
        while self._queue:
            turn = self._queue.popleft().turn
            if turn.on_release is not None:
                try:
                    await turn.on_release()
                except Exception:
                    log.exception("handing a turn back to the bus failed; it is redelivered after its ack wait")

    def _request(self, user_text: str, prefill: str, guard: Guardrails) -> tuple[ModelRequest, tuple[str, ...]]:
        s = self.settings
        history = fit_window(
            self.state.messages, max_messages=max(s.window_max_messages - 1, 0), token_budget=s.window_token_budget
        )
        system, canary_line = s.system_prompt, ""
        if guard.settings.canary:
            system, canary_line = with_canary(s.system_prompt, guard.canary)
        request = ModelRequest(
            system=system,
            canary_line=canary_line,
            messages=(*history, Message("user", user_text)),
            model=s.model,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            stop_sequences=s.stop_sequences,
            prefill=prefill,
            provider=s.provider,
            fallback_providers=s.fallback_providers,
        )
        return request, tuple(dict.fromkeys(m.turn_id for m in history if m.turn_id))

    async def _execute(self, queued: _Queued) -> None:
        turn = queued.turn
        ids = {otel.attributes.TURN_ID: turn.turn_id, otel.attributes.SESSION_ID: self.key.session_id}
        with otel.span(otel.attributes.SPAN_SESSION_TURN, parent=turn.trace_context, attributes=ids) as span:
            draft = await self._execute_turn(queued)
            if span.is_recording():
                span.set_attribute(otel.attributes.TURN_STATUS, draft.status)
                _trace_guardrails(span, draft.decisions())

    async def _execute_turn(self, queued: _Queued) -> _Draft:
        turn, emitter = queued.turn, queued.emitter
        deltas = [e.delta.text for e in turn.prior_events if e.HasField("delta")]
        guard = Guardrails(turn.guardrails, canary=self._canary)
        request, context_ids = self._request(turn.text, "".join(deltas), guard)
        draft = _Draft(turn, self.key, self.state, context_ids, self._clock_ns())
        if not queued.cancel_reason:
            decision = guard.check_user_text(turn.text)
            if decision is not None:
                draft.guardrails.append(decision)
                # A redelivered turn whose first attempt already sent the notice does not send it again.
                if not any(e.HasField("guardrail") for e in turn.prior_events):
                    await emitter.guardrail([decision])
            if decision is not None and decision.action == "block":
                log.warning(
                    "guardrail blocked a turn of session %s: prompt injection (score %.2f, rules %s)",
                    self.key,
                    decision.score,
                    ",".join(decision.rules),
                )
                draft.fail(
                    "PROMPT_INJECTION", "the message was refused by the prompt-injection guardrail", partial=False
                )
            else:
                draft.output = guard.output_guard()
                if deltas:
                    draft.output.note_released("".join(deltas))
                await self._answer(queued, request, draft, deltas)
        if queued.cancel_reason:
            draft.status = "rolled_back" if queued.rollback else "cancelled"
            draft.error_message = queued.cancel_reason
        try:
            await self._conclude(turn, emitter, draft.record(deltas), retry=True)
        except Fenced:
            # Another host owns the session now; it will run this (unacknowledged) turn again, continuing
            # after the events already sent.
            log.warning("session %s was taken over by another host; dropping it here", self.key)
            self.fenced = True
            draft.status = "fenced"
        return draft

    async def _answer(self, queued: _Queued, request: ModelRequest, draft: _Draft, deltas: list[str]) -> None:
        """The model call, in a GenAI CLIENT span (``chat <model>``): usage, finish reason, time to first token;
        message content only when the operator opted in."""
        request_attrs = otel.model_span_attributes(
            provider=request.provider or self._provider.name,
            request_model=request.model,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
        )
        name = f"chat {request.model}" if request.model else "chat"
        with otel.span(name, kind=otel.SpanKind.CLIENT, attributes=request_attrs) as span:
            started_ns = self._clock_ns()
            try:
                await self._answer_in_task(queued, request, draft, deltas)
            finally:
                if span.is_recording():
                    result = draft.result or ModelResult()
                    first = draft.first_token_at_ns
                    otel.set_model_response(
                        span,
                        provider=result.provider,
                        response_model=result.model,
                        finish_reason=result.stop_reason if draft.result is not None else "",
                        input_tokens=result.input_tokens,
                        output_tokens=result.output_tokens,
                        time_to_first_token_ms=(first - started_ns) / 1e6 if first else None,
                    )
                    otel.set_model_content(
                        span,
                        # Never the canary line: content capture must not export it.
                        system=self.settings.system_prompt,
                        messages=[(m.role, m.text) for m in request.messages],
                        answer="".join(deltas),
                    )

    async def _answer_in_task(self, queued: _Queued, request: ModelRequest, draft: _Draft, deltas: list[str]) -> None:
        """Stream the model's answer in a task of its own, so the turn alone can be stopped (cancel, deadline,
        a newer turn) while the session goes on."""
        stream = self._provider.stream(request)
        task = asyncio.create_task(self._stream_answer(stream, queued.emitter, draft, deltas))
        queued.task = task
        try:
            timeout = None
            if queued.turn.deadline_ns:
                timeout = max((queued.turn.deadline_ns - time.time_ns()) / 1e9, 0.0)
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                queued.stop("the turn's deadline passed")
                # wait() never raises the task's cancellation, only our own.
                await asyncio.wait({task})
        except asyncio.CancelledError:
            # close() after the drain grace period: the partial answer is recorded as cancelled, so the turn
            # is not run a second time.
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            draft.status, draft.error_message = "cancelled", "the engine stopped before the turn finished"
            with contextlib.suppress(Exception):
                await asyncio.shield(self._conclude(queued.turn, queued.emitter, draft.record(deltas), retry=False))
            raise
        finally:
            queued.task = None
            # Closing the generator closes the provider's upstream stream (its HTTP response) at once.
            await _aclose(stream)

    async def _stream_answer(
        self, stream: AsyncIterator[ModelChunk], emitter: TurnEmitter, draft: _Draft, deltas: list[str]
    ) -> None:
        guard = draft.output
        try:
            async for chunk in stream:
                if isinstance(chunk, TextDelta):
                    if chunk.text:
                        # Redaction holds back only a possibly unfinished secret or address at the end.
                        text = guard.feed(chunk.text) if guard is not None else chunk.text
                        await self._send_delta(text, emitter, draft, deltas)
                        if guard is not None and guard.leaked:
                            log.warning("guardrail stopped an answer of session %s: system-prompt canary", self.key)
                            draft.fail(
                                "SYSTEM_PROMPT_LEAK",
                                "the answer was stopped: it repeated the session's confidential instructions",
                                partial=bool(deltas),
                            )
                            return
                else:
                    draft.result = chunk
            if draft.result is None:
                raise ModelError("the model stream ended without a result", reason="MODEL_PROTOCOL_ERROR")
            if guard is not None:
                await self._send_delta(guard.finish(), emitter, draft, deltas)
            draft.status = "completed"
        except ModelError as exc:
            if guard is not None:
                # What was held back is part of the partial answer (redacted like the rest).
                await self._send_delta(guard.finish(), emitter, draft, deltas)
            draft.fail(
                exc.reason, exc.message, retryable=exc.retryable, retry_after_s=exc.retry_after_s, partial=bool(deltas)
            )
        except Exception:
            log.exception("turn failed inside the engine (session %s)", self.key)
            draft.fail("INTERNAL", "the engine failed while running this turn", partial=bool(deltas))

    async def _send_delta(self, text: str, emitter: TurnEmitter, draft: _Draft, deltas: list[str]) -> None:
        if not text:
            return
        if not draft.first_token_at_ns:
            draft.first_token_at_ns = self._clock_ns()
        deltas.append(text)
        await emitter.delta(text)

    async def _conclude(self, turn: Turn, emitter: TurnEmitter, record: TurnRecord, *, retry: bool) -> None:
        nats = {otel.attributes.MESSAGING_SYSTEM: "nats", otel.attributes.MESSAGING_OPERATION: "send"}
        with otel.span(otel.attributes.SPAN_LEDGER_APPEND, kind=otel.SpanKind.PRODUCER, attributes=nats):
            record = await self._append(record, retry=retry)
        self.state.apply(record, self.settings.window_max_messages)
        with otel.span(otel.attributes.SPAN_EVENTS_PUBLISH, kind=otel.SpanKind.PRODUCER, attributes=nats):
            for step in ending_steps(emitter, record):
                await step()
        if turn.on_done is not None:
            try:
                await turn.on_done()
            except Exception:
                log.exception("acknowledging a turn failed; its redelivery will be answered from its record")
        if self.state.turn_count - self._snapshot_turn >= self.settings.snapshot_every_turns:
            await self.save_snapshot()

    async def _append(self, record: TurnRecord, *, retry: bool) -> TurnRecord:
        delay = 0.05
        while True:
            try:
                return await self._ledger.append_turn(record)
            except Fenced:
                raise
            except SalonError as exc:
                if not retry or self._closed:
                    raise
                # The turn is not over until it is recorded: wait for the ledger rather than lose it.
                log.warning("recording a turn failed (%s); retrying in %.2f s", exc.reason, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_retry_delay_s)

    def _clock_ns(self) -> int:
        return time.time_ns()

    async def save_snapshot(self) -> None:
        """Append a snapshot of the state (best effort: it is a cache of the ledger)."""
        if self.state.turn_count == self._snapshot_turn or self.fenced:
            return
        snapshot = SnapshotRecord(
            tenant_id=self.key.tenant_id,
            session_id=self.key.session_id,
            incarnation=self.state.incarnation,
            turn_index=self.state.turn_count,
            ledger_seq=self.state.ledger_seq,
            state=self.state.to_dict(),
            created_at_ns=time.time_ns(),
        )
        try:
            await self._ledger.save_snapshot(snapshot)
            self._snapshot_turn = self.state.turn_count
        except Exception:
            log.warning("saving a snapshot of session %s failed; activation will replay more", self.key)

    async def close(self) -> None:
        """Stop the running turn (recorded and acknowledged as cancelled) and drop queued ones, which stay
        unacknowledged so the bus redelivers them to the session's next activation. Idempotent."""
        self._closed = True
        runner = self._runner
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._queue.clear()

    async def passivate(self) -> None:
        """Close and leave a snapshot, so the next activation replays nothing."""
        await self.close()
        await self.save_snapshot()


@dataclass(slots=True)
class _Draft:
    """A turn's outcome while it is being produced."""

    turn: Turn
    key: SessionKey
    state: SessionState
    context_turn_ids: tuple[str, ...]
    started_at_ns: int
    first_token_at_ns: int = 0
    status: str = "failed"
    result: ModelResult | None = None
    error_reason: str = ""
    error_message: str = ""
    retryable: bool = False
    retry_after_s: float | None = None
    guardrails: list[GuardrailDecision] = field(default_factory=list)
    """Input decisions (injection); the output guard's are added by :meth:`decisions`."""
    output: OutputGuard | None = None

    def decisions(self) -> tuple[GuardrailDecision, ...]:
        """Every guardrail decision of the turn so far."""
        return (*self.guardrails, *(self.output.decisions() if self.output is not None else ()))

    def fail(
        self, reason: str, message: str, *, partial: bool, retryable: bool = False, retry_after_s: float | None = None
    ) -> None:
        self.status = "partial" if partial else "failed"
        self.error_reason, self.error_message = reason, message
        self.retryable = retryable and not partial
        self.retry_after_s = retry_after_s

    def record(self, deltas: list[str]) -> TurnRecord:
        result = self.result or ModelResult()
        return TurnRecord(
            tenant_id=self.key.tenant_id,
            session_id=self.key.session_id,
            turn_id=self.turn.turn_id,
            incarnation=self.state.incarnation,
            turn_index=self.state.turn_count + 1,
            status=self.status,  # type: ignore[arg-type]
            user_text=self.turn.text,
            reply_text="".join(deltas),
            deltas=tuple(deltas),
            stop_reason=result.stop_reason if self.status == "completed" else "",
            error_reason=self.error_reason,
            error_message=self.error_message,
            retryable=self.retryable,
            retry_after_s=self.retry_after_s or 0.0,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cache_read_input_tokens=result.cache_read_input_tokens,
            cache_creation_input_tokens=result.cache_creation_input_tokens,
            provider=result.provider,
            model=result.model,
            estimated_cost_usd=result.estimated_cost_usd,
            trace_id=self.turn.trace_id,
            enqueued_at_ns=self.turn.enqueued_at_ns,
            started_at_ns=self.started_at_ns,
            first_token_at_ns=self.first_token_at_ns,
            completed_at_ns=time.time_ns(),
            context_turn_ids=self.context_turn_ids,
            guardrails=self.decisions(),
        )


def _trace_guardrails(span: Span, decisions: Sequence[GuardrailDecision]) -> None:
    """Guardrail decisions on the session's turn span: summary attributes and one event per decision (check,
    action, reason, counts; never the text)."""
    if not decisions:
        return
    attrs = otel.attributes
    blocked = [d.reason for d in decisions if d.action == "block"]
    span.set_attribute(attrs.GUARDRAIL_DECISIONS, len(decisions))
    span.set_attribute(attrs.GUARDRAIL_REDACTIONS, sum(d.count for d in decisions if d.action == "redact"))
    if blocked:
        span.set_attribute(attrs.GUARDRAIL_BLOCKED, blocked[0])
    for d in decisions:
        span.add_event(
            attrs.EVENT_GUARDRAIL,
            {
                attrs.GUARDRAIL_CHECK: d.check,
                attrs.GUARDRAIL_ACTION: d.action,
                attrs.GUARDRAIL_REASON: d.reason,
                attrs.GUARDRAIL_SOURCE: d.source,
                attrs.GUARDRAIL_COUNT: d.count,
                attrs.GUARDRAIL_SCORE: d.score,
                attrs.GUARDRAIL_RULES: list(d.rules),
            },
        )


async def _aclose(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
