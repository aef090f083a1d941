"""The edge between session logic and the API: turn events to and from ``salon.v1.turn_pb2.TurnEvent``.

Session logic speaks :mod:`actors.events`; the host converts what it publishes with :func:`event_to_proto`
and what it reads back from the bus with :func:`event_from_proto`; the gateway turns records into events
with :func:`record_events`. The conversion is one to one: the events on the wire are exactly those the
engine sent before session logic had records of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp

from actors.emitter import recorded_events
from actors.events import (
    TERMINAL_KINDS,
    Accepted,
    Cancelled,
    Citation,
    Citations,
    Completed,
    Delta,
    EventBody,
    Failed,
    Guardrail,
    TurnEvent,
    Unrecognized,
    Usage,
)
from actors.model import ModelResult
from actors.usage import record_usage
from salon.v1 import turn_pb2
from storage import GuardrailDecision, TurnRecord

_STOP_REASONS = {
    "end_turn": turn_pb2.STOP_REASON_END_TURN,
    "max_tokens": turn_pb2.STOP_REASON_MAX_TOKENS,
    "stop_sequence": turn_pb2.STOP_REASON_STOP_SEQUENCE,
    "tool_use": turn_pb2.STOP_REASON_TOOL_USE,
    "refusal": turn_pb2.STOP_REASON_REFUSAL,
}
_STOP_REASON_NAMES = {value: name for name, value in _STOP_REASONS.items()}

_NS = 1_000_000_000


def is_terminal(event: turn_pb2.TurnEvent) -> bool:
    """Whether ``event`` ends its turn's stream."""
    return event.WhichOneof("kind") in TERMINAL_KINDS


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


def decision_from_proto(decision: turn_pb2.GuardrailDecision) -> GuardrailDecision:
    """The record of a guardrail decision read from the API."""
    return GuardrailDecision(
        check=decision.check,
        action=decision.action,
        reason=decision.reason,
        source=decision.source,
        count=decision.count,
        score=decision.score,
        rules=tuple(decision.rules),
        passage=decision.passage,
    )


def _accepted(body: Accepted) -> ProtoMessage:
    return turn_pb2.TurnAccepted(queue_position=body.queue_position, trace_id=body.trace_id, replayed=body.replayed)


def _citations(body: Citations) -> ProtoMessage:
    return turn_pb2.Citations(
        citations=[
            turn_pb2.Citation(
                source=c.source,
                document_id=c.document_id,
                chunk_id=c.chunk_id,
                score=c.score,
                table_version=c.table_version,
                title=c.title,
            )
            for c in body.citations
        ]
    )


def _delta(body: Delta) -> ProtoMessage:
    return turn_pb2.TokenDelta(text=body.text)


def _guardrail(body: Guardrail) -> ProtoMessage:
    return turn_pb2.GuardrailNotice(decisions=[decision_to_proto(d) for d in body.decisions])


def _usage(body: Usage) -> ProtoMessage:
    return turn_pb2.Usage(
        input_tokens=body.input_tokens,
        output_tokens=body.output_tokens,
        cache_read_input_tokens=body.cache_read_input_tokens,
        cache_creation_input_tokens=body.cache_creation_input_tokens,
        provider=body.provider,
        model=body.model,
        estimated_cost_usd=body.estimated_cost_usd,
    )


def _completed(body: Completed) -> ProtoMessage:
    return turn_pb2.TurnCompleted(
        stop_reason=_STOP_REASONS.get(body.stop_reason, turn_pb2.STOP_REASON_UNSPECIFIED),
        stop_sequence=body.stop_sequence,
    )


def _failed(body: Failed) -> ProtoMessage:
    err = turn_pb2.TurnError(reason=body.reason, message=body.message, retryable=body.retryable, partial=body.partial)
    if body.retry_after_s is not None:
        seconds = body.retry_after_s
        err.retry_after.CopyFrom(Duration(seconds=int(seconds), nanos=int((seconds % 1) * 1e9)))
    return err


def _cancelled(body: Cancelled) -> ProtoMessage:
    return turn_pb2.TurnCancelled(reason=body.reason)


_TO_PROTO: dict[type, Callable[[Any], ProtoMessage]] = {
    Accepted: _accepted,
    Citations: _citations,
    Delta: _delta,
    Guardrail: _guardrail,
    Usage: _usage,
    Completed: _completed,
    Failed: _failed,
    Cancelled: _cancelled,
}


def event_to_proto(event: TurnEvent) -> turn_pb2.TurnEvent:
    """The API's form of ``event`` (an :class:`~actors.events.Unrecognized` one keeps no kind)."""
    convert = _TO_PROTO.get(type(event.body))
    # Given to the constructor, the kind is set even when its message is empty (a delta of "").
    kind: dict[str, Any] = {event.kind: convert(event.body)} if convert is not None else {}
    return turn_pb2.TurnEvent(
        session_id=event.session_id,
        turn_id=event.turn_id,
        seq=event.seq,
        time=Timestamp(seconds=event.time_ns // _NS, nanos=event.time_ns % _NS),
        **kind,
    )


def _body_from_proto(event: turn_pb2.TurnEvent) -> EventBody:
    kind = event.WhichOneof("kind")
    if kind == "accepted":
        a = event.accepted
        return Accepted(a.queue_position, a.trace_id, a.replayed)
    if kind == "citations":
        return Citations(
            tuple(
                Citation(c.source, c.document_id, c.chunk_id, c.score, c.table_version, c.title)
                for c in event.citations.citations
            )
        )
    if kind == "delta":
        return Delta(event.delta.text)
    if kind == "guardrail":
        return Guardrail(tuple(decision_from_proto(d) for d in event.guardrail.decisions))
    if kind == "usage":
        u = event.usage
        return Usage(
            u.input_tokens,
            u.output_tokens,
            u.cache_read_input_tokens,
            u.cache_creation_input_tokens,
            u.provider,
            u.model,
            u.estimated_cost_usd,
        )
    return _ending_from_proto(event, kind or "")


def _ending_from_proto(event: turn_pb2.TurnEvent, kind: str) -> EventBody:
    if kind == "completed":
        c = event.completed
        return Completed(_STOP_REASON_NAMES.get(c.stop_reason, ""), c.stop_sequence)
    if kind == "error":
        e = event.error
        retry_after = e.retry_after.seconds + e.retry_after.nanos / 1e9 if e.HasField("retry_after") else None
        return Failed(e.reason, e.message, retryable=e.retryable, partial=e.partial, retry_after_s=retry_after)
    if kind == "cancelled":
        return Cancelled(event.cancelled.reason)
    return Unrecognized(kind)


def event_from_proto(event: turn_pb2.TurnEvent) -> TurnEvent:
    """Session logic's record of an event read from the bus (an earlier attempt at a turn sent it)."""
    time_ns = event.time.seconds * _NS + event.time.nanos
    return TurnEvent(event.session_id, event.turn_id, event.seq, time_ns, _body_from_proto(event))


async def record_events(record: TurnRecord, after_seq: int = 0) -> list[turn_pb2.TurnEvent]:
    """The API events of a recorded turn with a sequence number above ``after_seq`` (to resume from a record)."""
    return [event_to_proto(e) for e in await recorded_events(record, after_seq)]


def usage_to_proto(result: ModelResult) -> turn_pb2.Usage:
    """Result -> the API's ``Usage`` message."""
    return turn_pb2.Usage(**record_usage(result))
