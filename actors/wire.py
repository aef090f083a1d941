"""The edge between session logic and the API: turn events to and from ``salon.v1.turn_pb2.TurnEvent``, and the
tools a session or a turn offers to and from ``salon.v1.session_pb2.ToolSet`` / ``ToolSettings``.

Session logic speaks :mod:`salon.actors.events` and :mod:`salon.actors.tools`; the host converts what it publishes with
:func:`event_to_proto`, what it reads back from the bus with :func:`event_from_proto`, and a session's or a
turn's tools with :func:`selection_from_proto` and :func:`policy_from_proto`; the gateway turns records into
events with :func:`record_events` and checks tool definitions with the same conversions. The event conversion
is one to one: the events on the wire are exactly those the engine sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message as ProtoMessage
from google.protobuf.timestamp_pb2 import Timestamp

from salon.actors.emitter import recorded_events
from salon.actors.events import (
    KINDS,
    TERMINAL_KINDS,
    Accepted,
    ApprovalDecided,
    ApprovalRequired,
    Cancelled,
    Citation,
    Citations,
    Completed,
    Delta,
    EventBody,
    Failed,
    Guardrail,
    ToolCallEvent,
    ToolResultEvent,
    TurnEvent,
    Unrecognized,
    Usage,
)
from salon.actors.model import ModelResult, ToolSpec
from salon.actors.tools import (
    EMPTY_OBJECT_SCHEMA,
    INVALID_TOOL_SETTINGS,
    MAX_MODEL_ROUNDS,
    MAX_WAIT_TIMEOUT_S,
    UNKNOWN_MCP_SERVER,
    ToolPolicy,
    ToolSelection,
    check_tools,
    is_tool_name,
)
from salon.actors.usage import record_usage
from salon.storage import GuardrailDecision, InvalidArgument, TurnRecord
from salon.v1 import session_pb2, turn_pb2

_STOP_REASONS = {
    "end_turn": turn_pb2.STOP_REASON_END_TURN,
    "max_tokens": turn_pb2.STOP_REASON_MAX_TOKENS,
    "stop_sequence": turn_pb2.STOP_REASON_STOP_SEQUENCE,
    "tool_use": turn_pb2.STOP_REASON_TOOL_USE,
    "refusal": turn_pb2.STOP_REASON_REFUSAL,
}
_STOP_REASON_NAMES = {value: name for name, value in _STOP_REASONS.items()}
SOURCES = {
    "client": turn_pb2.TOOL_RESULT_SOURCE_CLIENT,
    "mcp": turn_pb2.TOOL_RESULT_SOURCE_MCP,
    "rejected": turn_pb2.TOOL_RESULT_SOURCE_REJECTED,
    "timeout": turn_pb2.TOOL_RESULT_SOURCE_TIMEOUT,
    "invalid_call": turn_pb2.TOOL_RESULT_SOURCE_INVALID_CALL,
    "cancelled": turn_pb2.TOOL_RESULT_SOURCE_CANCELLED,
}
"""Where a result came from, by the name records use, as the API's ``ToolResultSource``."""
_SOURCE_NAMES = {value: name for name, value in SOURCES.items()}

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
        call_id=decision.call_id,
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
        call_id=decision.call_id,
    )


def _stamp(time_ns: int) -> Timestamp | None:
    return Timestamp(seconds=time_ns // _NS, nanos=time_ns % _NS) if time_ns else None


def _ns(stamp: Timestamp) -> int:
    return stamp.seconds * _NS + stamp.nanos


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
        model_rounds=body.model_rounds,
    )


def _tool_call(body: ToolCallEvent) -> ProtoMessage:
    return turn_pb2.ToolCall(
        call_id=body.call_id,
        tool=body.tool,
        arguments_json=body.arguments_json,
        requires_approval=body.requires_approval,
        mcp_server=body.mcp_server,
        round=body.round,
        wait_deadline=_stamp(body.wait_deadline_ns),
    )


def _approval_required(body: ApprovalRequired) -> ProtoMessage:
    return turn_pb2.ApprovalRequired(
        call_id=body.call_id,
        tool=body.tool,
        arguments_json=body.arguments_json,
        mcp_server=body.mcp_server,
        round=body.round,
        wait_deadline=_stamp(body.wait_deadline_ns),
    )


def _approval_decided(body: ApprovalDecided) -> ProtoMessage:
    return turn_pb2.ApprovalDecided(
        call_id=body.call_id, approved=body.approved, reason=body.reason, approver=body.approver
    )


def _tool_result(body: ToolResultEvent) -> ProtoMessage:
    duration = Duration()
    duration.FromNanoseconds(int(max(body.duration_s, 0.0) * 1e9))
    return turn_pb2.ToolResult(
        call_id=body.call_id,
        tool=body.tool,
        is_error=body.is_error,
        source=SOURCES.get(body.source, turn_pb2.TOOL_RESULT_SOURCE_UNSPECIFIED),
        content_preview=body.content_preview,
        content_bytes=body.content_bytes,
        duration=duration,
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
    ToolCallEvent: _tool_call,
    ApprovalRequired: _approval_required,
    ApprovalDecided: _approval_decided,
    ToolResultEvent: _tool_result,
}


def event_to_proto(event: TurnEvent) -> turn_pb2.TurnEvent:
    """The API's form of ``event`` (an :class:`~salon.actors.events.Unrecognized` one keeps no kind)."""
    # Filled in place (a host converts every token): building the time and the kind as messages of their own
    # and handing them to the constructor copied each, four times the cost.
    message = turn_pb2.TurnEvent(session_id=event.session_id, turn_id=event.turn_id, seq=event.seq)
    stamp = message.time
    stamp.SetInParent()
    stamp.seconds, stamp.nanos = divmod(event.time_ns, _NS)
    body = event.body
    convert = _TO_PROTO.get(type(body))
    if convert is not None:
        # CopyFrom sets the kind even when its message is empty (a delta of "").
        getattr(message, KINDS[type(body)]).CopyFrom(convert(body))
    return message


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
            u.model_rounds,
        )
    if kind in _TOOL_KINDS:
        return _tool_from_proto(event, kind)
    return _ending_from_proto(event, kind or "")


_TOOL_KINDS = frozenset({"tool_call", "approval_required", "approval_decided", "tool_result"})


def _tool_from_proto(event: turn_pb2.TurnEvent, kind: str) -> EventBody:
    if kind == "tool_call":
        c = event.tool_call
        deadline = _ns(c.wait_deadline) if c.HasField("wait_deadline") else 0
        return ToolCallEvent(c.call_id, c.tool, c.arguments_json, c.requires_approval, c.mcp_server, c.round, deadline)
    if kind == "approval_required":
        a = event.approval_required
        deadline = _ns(a.wait_deadline) if a.HasField("wait_deadline") else 0
        return ApprovalRequired(a.call_id, a.tool, a.arguments_json, a.mcp_server, a.round, deadline)
    if kind == "approval_decided":
        d = event.approval_decided
        return ApprovalDecided(d.call_id, d.approved, d.reason, d.approver)
    r = event.tool_result
    return ToolResultEvent(
        r.call_id,
        r.tool,
        r.is_error,
        _SOURCE_NAMES.get(r.source, ""),
        r.content_preview,
        r.content_bytes,
        r.duration.ToNanoseconds() / 1e9,
    )


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


def selection_from_proto(tool_set: session_pb2.ToolSet, *, check: bool = True) -> ToolSelection:
    """A ``ToolSet`` as the tools a session or turn offers. With ``check`` (the gateway, on what callers send):
    the definitions are checked (:func:`salon.actors.tools.check_tools`, raising ``INVALID_TOOL`` naming the tool) and
    the MCP server names for form (:func:`salon.actors.tools.check_servers` checks they exist). Without (the host, on
    what the gateway already checked) they are taken as they are."""
    specs = tuple(
        ToolSpec(
            name=tool.name,
            description=tool.description,
            input_schema_json=tool.input_schema_json or ("" if tool.mcp_server else EMPTY_OBJECT_SCHEMA),
            requires_approval=tool.requires_approval,
            server=tool.mcp_server,
        )
        for tool in tool_set.tools
    )
    servers = tuple(dict.fromkeys(tool_set.mcp_servers))
    if check:
        check_tools(specs)
        for index, server in enumerate(servers):
            if not is_tool_name(server):
                raise InvalidArgument(f"mcp_servers #{index + 1} is not a valid server name", reason=UNKNOWN_MCP_SERVER)
    return ToolSelection(tools=specs, mcp_servers=servers)


def selection_to_proto(selection: ToolSelection) -> session_pb2.ToolSet:
    """The API form of ``selection`` (for GetSession)."""
    return session_pb2.ToolSet(
        tools=[
            session_pb2.Tool(
                name=spec.name,
                description=spec.description,
                input_schema_json=spec.input_schema_json,
                requires_approval=spec.requires_approval,
                mcp_server=spec.server,
            )
            for spec in selection.tools
        ],
        mcp_servers=list(selection.mcp_servers),
    )


def policy_from_proto(base: ToolPolicy, settings: session_pb2.ToolSettings | None) -> ToolPolicy:
    """``base`` with the fields ``settings`` sets (a session's or a turn's); ``INVALID_TOOL_SETTINGS`` when one is
    out of range."""
    if settings is None:
        return base
    wait: float | None = None
    if settings.HasField("wait_timeout"):
        wait = settings.wait_timeout.ToNanoseconds() / 1e9
        if not 0 <= wait <= MAX_WAIT_TIMEOUT_S:
            raise InvalidArgument(
                f"tool_settings.wait_timeout must be between 0 and {MAX_WAIT_TIMEOUT_S:g} s",
                reason=INVALID_TOOL_SETTINGS,
            )
    if settings.max_model_rounds > MAX_MODEL_ROUNDS:
        raise InvalidArgument(
            f"tool_settings.max_model_rounds must be at most {MAX_MODEL_ROUNDS}", reason=INVALID_TOOL_SETTINGS
        )
    return base.overridden(wait_timeout_s=wait or None, max_model_rounds=settings.max_model_rounds or None)


def usage_to_proto(result: ModelResult, model_rounds: int = 0) -> turn_pb2.Usage:
    """Result -> the API's ``Usage`` message (``model_rounds``: the model requests the turn made)."""
    return turn_pb2.Usage(**record_usage(result), model_rounds=model_rounds)
