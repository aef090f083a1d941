"""One turn's state from the moment its session takes it to its record.

A :class:`RunningTurn` holds what a turn was handed (the :class:`~salon.actors.turn.InFlight` and its emitter, the
progress an earlier attempt recorded), what it has sent (deltas, citations, guardrail notices, including an
earlier attempt's), its model rounds and tool calls, why it must stop (cancel, deadline, a newer turn), the
task streaming its answer or waiting for its tools, and how it is ending (:class:`TurnOutcome`). The parts of
the session pass this one object instead of its pieces.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry.trace import Span

from salon import otel
from salon.actors.emitter import TurnEmitter
from salon.actors.events import Citation, Citations, Delta, Guardrail
from salon.actors.guardrails import OutputGuard
from salon.actors.model import ModelResult, ToolCall, ToolSpec
from salon.actors.tool_calls import TurnCalls, total
from salon.actors.tools import ToolPolicy
from salon.actors.turn import InFlight, SessionKey, Turn
from salon.storage import GuardrailDecision, ProgressRecord, TurnRecord

CANCELLED = "the turn was cancelled"


@dataclass(slots=True)
class TurnOutcome:
    """How a turn is ending, while it is produced: ``failed`` until something better is known."""

    status: str = "failed"
    """``completed``, ``partial``, ``failed``, ``cancelled``, ``rolled_back`` or ``fenced``."""
    result: ModelResult | None = None
    """The model's report of the last round (its stop reason and usage): every round's are in
    :attr:`RunningTurn.results`."""
    error_reason: str = ""
    error_message: str = ""
    retryable: bool = False
    retry_after_s: float | None = None

    def fail(
        self, reason: str, message: str, *, partial: bool, retryable: bool = False, retry_after_s: float | None = None
    ) -> None:
        """End in failure (``partial`` when some of the answer was sent: then never retryable)."""
        self.status = "partial" if partial else "failed"
        self.error_reason, self.error_message = reason, message
        self.retryable = retryable and not partial
        self.retry_after_s = retry_after_s

    def cancel(self, status: str, message: str) -> None:
        """End as ``cancelled`` or ``rolled_back``, saying why."""
        self.status, self.error_message = status, message


@dataclass(eq=False, slots=True)
class RunningTurn:
    """A turn its session has taken: queued, running, or being recorded."""

    inflight: InFlight
    emitter: TurnEmitter
    cancel_reason: str = ""
    """Set when the turn is to stop: by CancelTurn, its deadline, or a newer turn's policy."""
    rollback: bool = False
    task: asyncio.Task[None] | None = None
    """The task streaming the answer, while it runs."""
    deltas: list[str] = field(default_factory=list)
    """The answer's pieces sent so far, an earlier attempt's first."""
    outcome: TurnOutcome = field(default_factory=TurnOutcome)
    started_at_ns: int = 0
    first_token_at_ns: int = 0
    context_turn_ids: tuple[str, ...] = ()
    context_json: str = ""
    guardrails: list[GuardrailDecision] = field(default_factory=list)
    """Input decisions (injection); the output guard's are added by :meth:`decisions`."""
    output: OutputGuard | None = None
    cut_short: bool = False
    """The session closed while the answer streamed: what was sent is recorded as cancelled."""
    progress: list[ProgressRecord] = field(default_factory=list)
    """What an earlier attempt at the turn recorded of its tool rounds (its host died while it ran or waited)."""
    calls: TurnCalls = field(default_factory=TurnCalls)
    round_calls: list[ToolCall] = field(default_factory=list)
    """The tool calls of the model round streaming now."""
    round_start: int = 0
    """Index in :attr:`deltas` of the current model round's first piece."""
    results: list[ModelResult] = field(default_factory=list)
    """Every model round's result (tokens add up over rounds)."""
    model_rounds: int = 0
    """Model requests the turn made."""
    offered: dict[str, ToolSpec] = field(default_factory=dict)
    """The tools the turn offers the model, by name."""
    policy: ToolPolicy = field(default_factory=ToolPolicy)
    waiting: bool = False
    """The turn waits for tool results or approvals: no model connection, not a busy slot of its host."""
    parked: bool = False
    """The session closed while the turn waited: it is left unfinished, for the session's next activation."""

    @classmethod
    def take(
        cls,
        inflight: InFlight,
        key: SessionKey,
        *,
        cancelled: bool = False,
        progress: list[ProgressRecord] | None = None,
    ) -> RunningTurn:
        """A turn as its session takes it; events are numbered after those an earlier attempt sent."""
        turn = inflight.turn
        emitter = TurnEmitter(
            key.session_id, turn.turn_id, inflight.emit, start_seq=turn.prior_seq, join=inflight.join_delta
        )
        running = cls(inflight, emitter, cancel_reason=CANCELLED if cancelled else "", progress=progress or [])
        running.deltas = [e.body.text for e in turn.prior_events if isinstance(e.body, Delta)]
        return running

    @property
    def turn(self) -> Turn:
        """The turn's data."""
        return self.inflight.turn

    @property
    def turn_id(self) -> str:
        """The turn's id."""
        return self.inflight.turn.turn_id

    def stop(self, reason: str, *, rollback: bool = False) -> None:
        """Ask the turn to stop (the first reason given is kept); stops its answer at once if it streams."""
        self.cancel_reason = self.cancel_reason or reason
        self.rollback = self.rollback or rollback
        if self.task is not None:
            self.task.cancel()

    def begin(self) -> None:
        """The turn starts running now (it leaves the queue)."""
        self.started_at_ns = time.time_ns()

    def seconds_left(self) -> float | None:
        """Time until the turn's deadline (never negative); None: no deadline."""
        deadline = self.turn.deadline_ns
        return max((deadline - time.time_ns()) / 1e9, 0.0) if deadline else None

    @property
    def prefill(self) -> str:
        """The current model round's answer an earlier attempt already sent."""
        return "".join(self.deltas[self.round_start :])

    def set_waiting(self, waiting: bool) -> None:
        """The turn starts or stops waiting for tool results or approvals (its host counts it apart)."""
        self.waiting = waiting
        self.inflight.set_waiting(waiting)

    def pinned_citations(self) -> list[Citation] | None:
        """The citations an earlier attempt sent, which the prompt must keep to: they come before the first
        token, so once an attempt got past that point (it sent citations, or a token) they are fixed, possibly
        none. None: nothing is fixed yet."""
        for event in self.turn.prior_events:
            if isinstance(event.body, Citations):
                return list(event.body.citations)
        return [] if self.deltas else None

    async def notify_input(self) -> None:
        """The guardrail notice about the turn's input, once per turn: an earlier attempt at a redelivered
        turn may have sent it already."""
        if self.guardrails and not any(isinstance(e.body, Guardrail) for e in self.turn.prior_events):
            await self.emitter.guardrail(list(self.guardrails))

    async def send(self, text: str) -> None:
        """Send a piece of the answer (nothing for empty text)."""
        if not text:
            return
        if not self.first_token_at_ns:
            self.first_token_at_ns = time.time_ns()
        # A piece joins the previous one only within the same model round: a round's pieces are recorded apart.
        await self.emitter.delta(text, self.deltas, join=len(self.deltas) > self.round_start)

    async def release_held(self) -> None:
        """Send what the output guard holds back (a possibly unfinished secret at the end), redacted."""
        if self.output is not None:
            await self.send(self.output.finish())

    def settle_stop(self) -> None:
        """A turn asked to stop ends as cancelled (or rolled back), whatever its answer reached."""
        if self.cancel_reason:
            self.outcome.cancel("rolled_back" if self.rollback else "cancelled", self.cancel_reason)

    def decisions(self) -> tuple[GuardrailDecision, ...]:
        """Every guardrail decision of the turn so far."""
        return (*self.guardrails, *(self.output.decisions() if self.output is not None else ()))

    def round_chars(self) -> tuple[int, ...]:
        """Characters of the answer each model round produced (empty for a turn that called no tool)."""
        if not self.calls:
            return ()
        tool_rounds = [len(r.text) for r in self.calls.rounds]
        return (*tool_rounds, len("".join(self.deltas)) - sum(tool_rounds))

    def record(self, key: SessionKey, incarnation: str, turn_index: int, user_id: str = "") -> TurnRecord:
        """The turn's ledger record, as it ends now."""
        outcome, turn = self.outcome, self.turn
        result = total(self.results)
        stop_reason = outcome.result.stop_reason if outcome.result is not None else ""
        return TurnRecord(
            tenant_id=key.tenant_id,
            session_id=key.session_id,
            turn_id=turn.turn_id,
            incarnation=incarnation,
            turn_index=turn_index,
            status=outcome.status,  # type: ignore[arg-type]
            user_text=turn.text,
            reply_text="".join(self.deltas),
            deltas=tuple(self.deltas),
            stop_reason=stop_reason if outcome.status == "completed" else "",
            error_reason=outcome.error_reason,
            error_message=outcome.error_message,
            retryable=outcome.retryable,
            retry_after_s=outcome.retry_after_s or 0.0,
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cache_read_input_tokens=result.cache_read_input_tokens,
            cache_creation_input_tokens=result.cache_creation_input_tokens,
            provider=result.provider,
            model=result.model,
            estimated_cost_usd=result.estimated_cost_usd,
            trace_id=turn.trace_id,
            enqueued_at_ns=turn.enqueued_at_ns,
            started_at_ns=self.started_at_ns,
            first_token_at_ns=self.first_token_at_ns,
            completed_at_ns=time.time_ns(),
            context_turn_ids=self.context_turn_ids,
            context_json=self.context_json,
            guardrails=self.decisions(),
            model_rounds=self.model_rounds,
            tool_calls=self.calls.ordered(),
            round_chars=self.round_chars(),
            user_id=user_id,
            do_not_remember=turn.do_not_remember,
        )


def trace_outcome(span: Span, running: RunningTurn) -> None:
    """The turn's status and guardrail decisions on the session's turn span: summary attributes and one event
    per decision (check, action, reason, counts; never the text)."""
    attrs = otel.attributes
    span.set_attribute(attrs.TURN_STATUS, running.outcome.status)
    decisions: Sequence[GuardrailDecision] = running.decisions()
    if not decisions:
        return
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
