"""Building a turn's events: protobuf ``TurnEvent``s with gap-free per-turn sequence numbers."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from actors.context import PassageEntry, TurnContext
from actors.model import ModelResult
from salon.v1 import turn_pb2
from storage import GuardrailDecision, TurnRecord

EventSink = Callable[[turn_pb2.TurnEvent], Awaitable[None]]
"""Where a turn's events go (the host publishes them on the turn's event subject)."""

TERMINAL_KINDS = frozenset({"completed", "error", "cancelled"})

_STOP_REASONS = {
    "end_turn": turn_pb2.STOP_REASON_END_TURN,
    "max_tokens": turn_pb2.STOP_REASON_MAX_TOKENS,
    "stop_sequence": turn_pb2.STOP_REASON_STOP_SEQUENCE,
    "tool_use": turn_pb2.STOP_REASON_TOOL_USE,
    "refusal": turn_pb2.STOP_REASON_REFUSAL,
}


def is_terminal(event: turn_pb2.TurnEvent) -> bool:
    """Whether ``event`` ends its turn's stream."""
    return event.WhichOneof("kind") in TERMINAL_KINDS


class TurnEmitter:
    """Numbers and sends one turn's events.

    Sequence numbers are assigned and events handed to the sink under one lock, so events reach the sink
    in sequence order even when different tasks emit for the same turn (the accepted event is sent by the
    submitter while the session's runner may already be streaming).
    """

    def __init__(self, session_id: str, turn_id: str, sink: EventSink, *, start_seq: int = 0) -> None:
        self.session_id = session_id
        self.turn_id = turn_id
        self._sink = sink
        self._seq = start_seq
        """Events up to ``start_seq`` were sent by an earlier attempt at the turn; numbering continues."""
        self._lock = asyncio.Lock()
        self.finished = False

    @property
    def last_seq(self) -> int:
        """Sequence number of the last event emitted (0 before the first)."""
        return self._seq

    async def _emit(self, **kind: object) -> None:
        async with self._lock:
            if self.finished:
                return
            self._seq += 1
            now = time.time_ns()
            event = turn_pb2.TurnEvent(
                session_id=self.session_id,
                turn_id=self.turn_id,
                seq=self._seq,
                time=Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000),
                **kind,  # type: ignore[arg-type]
            )
            if event.WhichOneof("kind") in TERMINAL_KINDS:
                self.finished = True
            await self._sink(event)

    async def accepted(self, queue_position: int, trace_id: str = "", replayed: bool = False) -> None:
        """Emit the first event: the turn reached its session."""
        await self._emit(
            accepted=turn_pb2.TurnAccepted(queue_position=queue_position, trace_id=trace_id, replayed=replayed)
        )

    async def citations(self, passages: Sequence[PassageEntry]) -> None:
        """Emit the passages the prompt holds, before the first token."""
        await self._emit(
            citations=turn_pb2.Citations(
                citations=[
                    turn_pb2.Citation(
                        source=p.source,
                        document_id=p.document_id,
                        chunk_id=p.chunk_id,
                        score=p.score,
                        table_version=p.table_version,
                        title=p.title,
                    )
                    for p in passages
                ]
            )
        )

    async def delta(self, text: str) -> None:
        """Emit a piece of the answer."""
        await self._emit(delta=turn_pb2.TokenDelta(text=text))

    async def usage(self, result: ModelResult) -> None:
        """Emit what the turn consumed."""
        await self._emit(
            usage=turn_pb2.Usage(
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                cache_read_input_tokens=result.cache_read_input_tokens,
                cache_creation_input_tokens=result.cache_creation_input_tokens,
                provider=result.provider,
                model=result.model,
                estimated_cost_usd=result.estimated_cost_usd,
            )
        )

    async def completed(self, stop_reason: str, stop_sequence: str = "") -> None:
        """Emit the terminal event of a turn that finished normally."""
        await self._emit(
            completed=turn_pb2.TurnCompleted(
                stop_reason=_STOP_REASONS.get(stop_reason, turn_pb2.STOP_REASON_UNSPECIFIED),
                stop_sequence=stop_sequence,
            )
        )

    async def error(
        self, reason: str, message: str, *, retryable: bool, partial: bool, retry_after_s: float | None = None
    ) -> None:
        """Emit the terminal event of a turn that failed."""
        err = turn_pb2.TurnError(reason=reason, message=message, retryable=retryable, partial=partial)
        if retry_after_s is not None:
            err.retry_after.CopyFrom(Duration(seconds=int(retry_after_s), nanos=int((retry_after_s % 1) * 1e9)))
        await self._emit(error=err)

    async def guardrail(self, decisions: Sequence[GuardrailDecision]) -> None:
        """Emit what the guardrails decided (names checks and counts, never the matched text)."""
        await self._emit(guardrail=turn_pb2.GuardrailNotice(decisions=[decision_to_proto(d) for d in decisions]))

    async def cancelled(self, reason: str) -> None:
        """Emit the terminal event of a cancelled turn."""
        await self._emit(cancelled=turn_pb2.TurnCancelled(reason=reason))


Step = Callable[[], Awaitable[None]]

INPUT_SOURCES = frozenset({"user", "passage"})
"""Decisions about what went into the prompt: sent right after ``accepted``. The others (about the output)
are sent after the last delta."""


def decision_to_proto(decision: GuardrailDecision) -> turn_pb2.GuardrailDecision:
    """A guardrail decision as the API shows it (in events and transcript records)."""
    return turn_pb2.GuardrailDecision(
        check=decision.check,
        action=decision.action,
        reason=decision.reason,
        source=decision.source,
        count=decision.count,
        score=decision.score,
        rules=list(decision.rules),
        passage=decision.passage,
    )


def input_steps(emitter: TurnEmitter, record: TurnRecord) -> list[Step]:
    """The guardrail notice about the turn's input (if any), sent before the answer."""
    decisions = [d for d in record.guardrails if d.source in INPUT_SOURCES]
    return [functools.partial(emitter.guardrail, decisions)] if decisions else []


def ending_steps(emitter: TurnEmitter, record: TurnRecord) -> list[Step]:
    """The events after a turn's deltas, from its record: the same for a first run and for a replay."""
    output = [d for d in record.guardrails if d.source not in INPUT_SOURCES]
    notice: list[Step] = [functools.partial(emitter.guardrail, output)] if output else []
    return notice + _terminal_steps(emitter, record)


def _terminal_steps(emitter: TurnEmitter, record: TurnRecord) -> list[Step]:
    if record.status == "completed":
        usage = ModelResult(
            input_tokens=record.input_tokens,
            output_tokens=record.output_tokens,
            cache_read_input_tokens=record.cache_read_input_tokens,
            cache_creation_input_tokens=record.cache_creation_input_tokens,
            provider=record.provider,
            model=record.model,
            estimated_cost_usd=record.estimated_cost_usd,
        )
        return [
            functools.partial(emitter.usage, usage),
            functools.partial(emitter.completed, record.stop_reason or "end_turn"),
        ]
    if record.status in ("cancelled", "rolled_back"):
        return [functools.partial(emitter.cancelled, record.error_message or "the turn was cancelled")]
    return [
        functools.partial(
            emitter.error,
            record.error_reason or "INTERNAL",
            record.error_message or "the turn failed",
            retryable=record.retryable,
            partial=record.status == "partial",
            retry_after_s=record.retry_after_s or None,
        )
    ]


def record_steps(emitter: TurnEmitter, record: TurnRecord) -> list[Step]:
    """Every event a recorded turn stands for, numbered as first sent: accepted, the input guardrail notice,
    citations, deltas, the output guardrail notice, ending."""
    steps: list[Step] = [functools.partial(emitter.accepted, 0, trace_id=record.trace_id, replayed=True)]
    steps += input_steps(emitter, record)
    passages = TurnContext.from_json(record.context_json).passages
    if passages:
        steps.append(functools.partial(emitter.citations, passages))
    steps += [functools.partial(emitter.delta, text) for text in record.deltas]
    return steps + ending_steps(emitter, record)


async def record_events(record: TurnRecord, after_seq: int = 0) -> list[turn_pb2.TurnEvent]:
    """The events of a recorded turn with a sequence number above ``after_seq`` (to resume from a record)."""
    events: list[turn_pb2.TurnEvent] = []

    async def collect(event: turn_pb2.TurnEvent) -> None:
        events.append(event)

    emitter = TurnEmitter(record.session_id, record.turn_id, collect)
    for step in record_steps(emitter, record):
        await step()
    return [e for e in events if e.seq > after_seq]
