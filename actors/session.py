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
import dataclasses
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

import otel
from actors.context import PassageEntry, TurnContext, explain
from actors.events import EventSink, TurnEmitter, ending_steps, record_steps
from actors.guardrails import BLOCK_REASONS, Guardrails, GuardrailSettings, OutputGuard, new_canary, with_canary
from actors.memory import fit_window
from actors.model import Message, ModelChunk, ModelError, ModelProvider, ModelRequest, ModelResult, TextDelta
from actors.summary import ExtractiveSummarizer, Summarizer, Summary
from salon.v1 import turn_pb2
from storage import (
    Fenced,
    GuardrailDecision,
    LoadedSession,
    Passage,
    RetrievalQuery,
    Retriever,
    SalonError,
    SessionLog,
    SnapshotRecord,
    TurnRecord,
)

log = logging.getLogger(__name__)

RECENT_TURNS_KEPT = 16
"""How many finished turns a session remembers by id, to answer a redelivered turn without the model.
Retries of older turns within the dedupe window never reach the session (JetStream drops them); each entry
costs memory in every live session (bench/RESULTS.md: memory per session)."""

RETRIEVAL_TIMEOUT_S = 5.0
"""Longest a turn waits for retrieval before it goes on without passages."""


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
    retrieval_top_k: int = 4
    """Retrieved passages (knowledge and long-term memory) that may enter a prompt; 0 turns retrieval off."""
    retrieval_min_score: float = 0.0
    long_term_memory: bool = True
    """Whether this session's earlier turns are retrieved (the knowledge base is, either way)."""
    summary_max_tokens: int = 400
    """Size the rolling summary is kept under."""
    summary_min_messages: int = 4
    """Messages that must have left the window before the summary is rewritten (fewer, larger rewrites)."""


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
    summary: Summary = field(default_factory=Summary)
    """The rolling summary of the messages that left the window."""
    folding: list[Message] = field(default_factory=list)
    """Messages that left :attr:`messages` and are not in the summary yet."""

    def apply(self, record: TurnRecord, keep_messages: int) -> None:
        """Fold one recorded turn into the state.

        A record also carries the summary its prompt held: the newest one seen wins, so a session recovers
        its summary from the ledger (a summary written after turn N is recorded with turn N+1)."""
        self.turn_count = record.turn_index
        self.ledger_seq = record.ledger_seq
        if record.context_json:
            self.adopt_summary(TurnContext.from_json(record.context_json).summary, keep_messages)
        # A turn a guardrail blocked stays out of memory: the next turns' prompts must not carry it again.
        if record.status != "rolled_back" and record.error_reason not in BLOCK_REASONS:
            self.messages.append(Message("user", record.user_text, record.turn_id, record.turn_index))
            if record.reply_text:
                self.messages.append(Message("assistant", record.reply_text, record.turn_id, record.turn_index))
        self.trim(keep_messages)
        self.recent[record.turn_id] = record.ledger_seq
        while len(self.recent) > RECENT_TURNS_KEPT:
            self.recent.popitem(last=False)

    def adopt_summary(self, summary: Summary, keep_messages: int) -> None:
        """Take ``summary`` if it is newer than the one held."""
        if summary.version > self.summary.version:
            self.summary = summary
            self.trim(keep_messages)

    def trim(self, keep_messages: int) -> None:
        """Keep the last ``keep_messages`` messages (the window's reach); those that leave wait in
        :attr:`folding` until the summary covers them, up to a bound past which the oldest go anyway (they
        are still in long-term memory)."""
        overflow = len(self.messages) - keep_messages
        if overflow > 0:
            self.folding += self.messages[:overflow]
            del self.messages[:overflow]
        through = self.summary.through_turn_index
        if self.folding and self.folding[0].turn_index <= through:
            self.folding = [m for m in self.folding if m.turn_index > through]
        cap = keep_messages * 2 + 8
        if len(self.folding) > cap:
            del self.folding[: len(self.folding) - cap]

    def unsummarized(self, window: Sequence[Message]) -> list[Message]:
        """Messages that left ``window`` and are not in the summary yet, oldest first."""
        in_window = {id(m) for m in window}
        first = next((i for i, m in enumerate(self.messages) if id(m) in in_window), len(self.messages))
        through = self.summary.through_turn_index
        return [m for m in (*self.folding, *self.messages[:first]) if m.turn_index > through]

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
            "version": 3,
            "incarnation": self.incarnation,
            "turn_count": self.turn_count,
            "ledger_seq": self.ledger_seq,
            "messages": [[m.role, m.text, m.turn_id, m.turn_index] for m in self.messages],
            "recent": list(self.recent.items()),
            "summary": self.summary.to_dict(),
            "folding": [[m.role, m.text, m.turn_id, m.turn_index] for m in self.folding],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        """Rebuild state from :meth:`to_dict` output."""
        state = cls(
            incarnation=str(data.get("incarnation", "")),
            turn_count=int(data.get("turn_count", 0)),
            ledger_seq=int(data.get("ledger_seq", 0)),
        )
        # Version 2 snapshots hold [role, text, turn_id]; version 3 adds the turn index.
        state.messages = [
            Message(role=m[0], text=m[1], turn_id=m[2], turn_index=int(m[3]) if len(m) > 3 else 0)
            for m in data.get("messages", [])
        ]
        state.folding = [
            Message(role=r, text=t, turn_id=i, turn_index=int(n)) for r, t, i, n in data.get("folding", [])
        ]
        state.recent = OrderedDict((str(t), int(s)) for t, s in data.get("recent", []))
        state.summary = Summary.from_dict(data.get("summary"))
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
        retriever: Retriever | None = None,
        summarizer: Summarizer | None = None,
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
        self._retriever = retriever
        self._summarizer = summarizer or ExtractiveSummarizer()
        self._summary_task: asyncio.Task[None] | None = None
        """Rewrites the summary after a turn; owned here: cancelled and awaited by :meth:`close`."""
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

    def _window(self) -> list[Message]:
        s = self.settings
        # One message of the budget is the new one.
        return fit_window(
            self.state.messages, max_messages=max(s.window_max_messages - 1, 0), token_budget=s.window_token_budget
        )

    async def _prepare(
        self, user_text: str, prefill: str, guard: Guardrails, pinned: Sequence[turn_pb2.Citation] | None = None
    ) -> tuple[ModelRequest, TurnContext, list[GuardrailDecision]]:
        """The prompt (window, summary, retrieved passages, new message, the guardrail canary), the record of
        what entered it, and the injection guardrail's decisions about the passages (under ``block`` the
        passages it flags stay out of the prompt).

        ``pinned``: the citations an earlier attempt at the turn already sent (its host died mid-turn): the
        client has them, so the prompt keeps to those passages, in that order, and the record names exactly
        them (a replay then sends what the client saw first)."""
        s = self.settings
        with otel.span(otel.attributes.SPAN_CONTEXT) as span:
            window = self._window()
            passages: list[Passage] = []
            error_reason = ""
            if pinned is None or pinned:
                passages, error_reason = await self._retrieve(user_text, window)
            if pinned is not None:
                found = {(p.source, p.chunk_id): p for p in passages}
                passages = [found[(c.source, c.chunk_id)] for c in pinned if (c.source, c.chunk_id) in found]
            flagged = guard.check_passages([p.text for p in passages])
            blocked = {d.passage for d in flagged if d.action == "block"}
            passages = [p for i, p in enumerate(passages) if i not in blocked]
            system, context = explain(
                instructions=s.system_prompt,
                summary=self.state.summary,
                passages=passages,
                window=window,
                user_text=user_text,
                retrieval_error_reason=error_reason,
            )
            if pinned is not None:
                context = dataclasses.replace(context, passages=_pinned_entries(pinned, context.passages))
            if span.is_recording():
                span.set_attribute(otel.attributes.CONTEXT_WINDOW_MESSAGES, len(window))
                span.set_attribute(otel.attributes.CONTEXT_PROMPT_TOKENS, context.total_tokens)
        canary_line = ""
        if guard.settings.canary:
            system, canary_line = with_canary(system, guard.canary)
        request = ModelRequest(
            system=system,
            canary_line=canary_line,
            messages=(*window, Message("user", user_text)),
            model=s.model,
            max_tokens=s.max_tokens,
            temperature=s.temperature,
            stop_sequences=s.stop_sequences,
            prefill=prefill,
            provider=s.provider,
            fallback_providers=s.fallback_providers,
            instructions=s.system_prompt,
            summary=context.summary.text,
            passages=tuple(passages),
        )
        return request, context, flagged

    async def _retrieve(self, text: str, window: Sequence[Message]) -> tuple[list[Passage], str]:
        """Passages for ``text``: the tenant's knowledge and this session's memories outside ``window``. A
        failure degrades the turn (no passages, the reason recorded) instead of failing it."""
        s = self.settings
        if self._retriever is None or s.retrieval_top_k <= 0:
            return [], ""
        excluded = frozenset(m.turn_id for m in window if m.turn_id)
        # While every turn of the session is still in the window there is no memory to find: no search.
        past_window = self.state.turn_count > len(excluded)
        query = RetrievalQuery(
            tenant_id=self.key.tenant_id,
            session_id=self.key.session_id,
            text=text,
            top_k=s.retrieval_top_k,
            min_score=s.retrieval_min_score,
            exclude_turn_ids=excluded,
            include_memory=s.long_term_memory and past_window,
        )
        with otel.span(otel.attributes.SPAN_RETRIEVAL) as span:
            try:
                found = await asyncio.wait_for(self._retriever.retrieve(query), timeout=RETRIEVAL_TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if isinstance(exc, SalonError):
                    reason = exc.reason
                elif isinstance(exc, TimeoutError):
                    reason = "RETRIEVAL_TIMEOUT"
                else:
                    reason = "RETRIEVAL_FAILED"
                log.warning("retrieval failed for session %s (%s); the turn goes on without passages", self.key, reason)
                if span.is_recording():
                    span.set_attribute("error.type", reason)
                return [], reason
            # The retriever applies these already; checked again because they are this session's promises.
            passages = [
                p
                for p in found
                if p.score >= s.retrieval_min_score
                and (p.source == "knowledge" or (s.long_term_memory and p.chunk_id not in excluded))
            ][: s.retrieval_top_k]
            if span.is_recording():
                span.set_attribute(otel.attributes.RETRIEVAL_PASSAGES, len(passages))
                span.set_attribute(otel.attributes.RETRIEVAL_MEMORIES, sum(1 for p in passages if p.source == "memory"))
                span.set_attribute(
                    otel.attributes.RETRIEVAL_CHUNKS, sum(1 for p in passages if p.source == "knowledge")
                )
        return passages, ""

    async def _execute(self, queued: _Queued) -> None:
        turn = queued.turn
        ids = {
            otel.attributes.TURN_ID: turn.turn_id,
            otel.attributes.SESSION_ID: self.key.session_id,
            otel.attributes.TENANT_ID: self.key.tenant_id,  # also names the turn in the logs of its block
        }
        with otel.span(otel.attributes.SPAN_SESSION_TURN, parent=turn.trace_context, attributes=ids) as span:
            draft = await self._execute_turn(queued)
            if span.is_recording():
                span.set_attribute(otel.attributes.TURN_STATUS, draft.status)
                _trace_guardrails(span, draft.decisions())

    async def _execute_turn(self, queued: _Queued) -> _Draft:
        turn, emitter = queued.turn, queued.emitter
        deltas = [e.delta.text for e in turn.prior_events if e.HasField("delta")]
        draft = _Draft(turn, self.key, self.state, (), self._clock_ns())
        if not queued.cancel_reason:
            guard = Guardrails(turn.guardrails, canary=self._canary)
            decision = guard.check_user_text(turn.text)
            if decision is not None:
                draft.guardrails.append(decision)
            if decision is not None and decision.action == "block":
                await _notify(turn, emitter, draft.guardrails)
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
                # Citations come before the first token: once an earlier attempt at the turn got past that
                # point (it sent citations, or a token), the citations are the ones it sent, possibly none.
                cited = [e.citations.citations for e in turn.prior_events if e.HasField("citations")]
                pinned = list(cited[0]) if cited else ([] if deltas else None)
                request, context, flagged = await self._prepare(turn.text, "".join(deltas), guard, pinned)
                draft.guardrails.extend(flagged)
                # One notice about the input (the message and the passages), before the citations, as a
                # replay of the record sends it.
                await _notify(turn, emitter, draft.guardrails)
                draft.context_turn_ids = tuple(dict.fromkeys(w.turn_id for w in context.window if w.turn_id))
                draft.context_json = context.to_json()
                if context.passages and pinned is None:
                    await emitter.citations(context.passages)
                draft.output = guard.output_guard()
                if deltas:
                    draft.output.note_released("".join(deltas))
                if not queued.cancel_reason:
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
                elif isinstance(chunk, ModelResult):
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
        self._schedule_summary()

    def _schedule_summary(self) -> None:
        """Start rewriting the summary when enough messages left the window (never while one rewrite runs:
        the next turn's end picks up what this one leaves)."""
        if self._closed or self.fenced or (self._summary_task is not None and not self._summary_task.done()):
            return
        folded = self.state.unsummarized(self._window())
        if len(folded) < max(self.settings.summary_min_messages, 1):
            return
        self._summary_task = asyncio.create_task(self._summarize(folded), name=f"summary-{self.key}")

    async def _summarize(self, folded: list[Message]) -> None:
        previous = self.state.summary
        try:
            text = await self._summarizer.summarize(
                previous.text,
                folded,
                max_tokens=self.settings.summary_max_tokens,
                provider=self.settings.provider,
                model=self.settings.model,
            )
        except Exception:
            log.exception("rewriting the summary of session %s failed; the next turn tries again", self.key)
            return
        summary = Summary(text, previous.version + 1, max(m.turn_index for m in folded))
        if self.state.summary.version == previous.version:
            self.state.adopt_summary(summary, self.settings.window_max_messages)

    async def wait_summary(self) -> None:
        """Wait for a summary rewrite in progress (tests and orderly passivation)."""
        task = self._summary_task
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)

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
        summary, self._summary_task = self._summary_task, None
        if summary is not None:
            # A rewrite cut short is not lost: the messages stay in the state and the next activation redoes it.
            summary.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await summary

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
    context_json: str = ""
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
            context_json=self.context_json,
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


async def _notify(turn: Turn, emitter: TurnEmitter, decisions: Sequence[GuardrailDecision]) -> None:
    """The guardrail notice about a turn's input, once per turn: an earlier attempt at a redelivered turn
    may have sent it already."""
    if decisions and not any(e.HasField("guardrail") for e in turn.prior_events):
        await emitter.guardrail(list(decisions))


def _pinned_entries(pinned: Sequence[turn_pb2.Citation], in_prompt: Sequence[PassageEntry]) -> tuple[PassageEntry, ...]:
    """The record's passages for citations already sent: exactly those, with the token counts of the ones
    the prompt holds (0 for one no longer found)."""
    tokens = {(p.source, p.chunk_id): p for p in in_prompt}
    entries = []
    for c in pinned:
        match = tokens.get((c.source, c.chunk_id))
        entries.append(
            PassageEntry(
                source=c.source,
                document_id=c.document_id,
                chunk_id=c.chunk_id,
                score=c.score,
                table_version=c.table_version,
                title=c.title,
                turn_index=match.turn_index if match else 0,
                tokens=match.tokens if match else 0,
            )
        )
    return tuple(entries)


async def _aclose(stream: object) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
