"""Typed turn events: small frozen dataclasses instead of the ``salon.v1.TurnEvent`` oneof.

Every event carries ``session_id``, ``turn_id`` and ``seq`` (1, 2, 3 … per turn, no gaps) and the time the
engine emitted it. Exactly one terminal event (:class:`Completed`, :class:`Failed` or :class:`Cancelled`)
ends a turn. :func:`event_from_proto` converts one ``TurnEvent``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, TypeAlias, TypedDict

from salon.v1 import turn_pb2


@dataclass(frozen=True, kw_only=True)
class BaseEvent:
    """What every event of a turn carries."""

    kind: ClassVar[str] = ""
    """The ``TurnEvent.kind`` oneof field this event type comes from."""
    terminal: ClassVar[bool] = False
    """Whether this event ends the turn."""

    session_id: str
    turn_id: str
    seq: int
    time: datetime | None = None
    """When the engine emitted the event (UTC), if it said."""


@dataclass(frozen=True, kw_only=True)
class Accepted(BaseEvent):
    """The turn reached its session; always the first event (seq 1)."""

    kind: ClassVar[str] = "accepted"
    queue_position: int = 0
    """Turns of the same session ahead of this one (0: it runs now)."""
    trace_id: str = ""
    replayed: bool = False
    """True when the turn had already run and these events are replayed from its record."""


@dataclass(frozen=True, kw_only=True)
class Citation:
    """One retrieved passage."""

    source: str
    document_id: str
    chunk_id: str
    score: float
    table_version: int
    title: str


@dataclass(frozen=True, kw_only=True)
class Citations(BaseEvent):
    """Passages retrieved for the turn, sent before the first token."""

    kind: ClassVar[str] = "citations"
    citations: tuple[Citation, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Delta(BaseEvent):
    """A piece of the answer, in order."""

    kind: ClassVar[str] = "delta"
    text: str = ""


@dataclass(frozen=True, kw_only=True)
class Usage(BaseEvent):
    """What the turn consumed, and which provider and model answered."""

    kind: ClassVar[str] = "usage"
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    estimated_cost_usd: float = 0.0
    provider: str = ""
    model: str = ""
    model_rounds: int = 0
    """Model requests the turn made (one per round of tool calls, plus the answer); the counts add them up."""


@dataclass(frozen=True, kw_only=True)
class GuardrailDecision:
    """One decision of the engine's guardrails. Never carries the text that triggered it."""

    check: str
    """``injection``, ``redaction`` or ``canary``."""
    action: str
    """``flag`` (the turn went on), ``block`` (the turn, or a retrieved passage, was stopped) or ``redact``."""
    reason: str
    """``PROMPT_INJECTION``, ``SYSTEM_PROMPT_LEAK``, ``SECRET``, ``EMAIL``, ``CARD_NUMBER``, ``PHONE_NUMBER`` …"""
    source: str
    """``user``, ``passage``, ``output`` or ``tool`` (a tool result)."""
    count: int = 1
    score: float = 0.0
    rules: tuple[str, ...] = ()
    passage: int = -1
    call_id: str = ""
    """For a tool result (source ``tool``): the call it came from."""


@dataclass(frozen=True, kw_only=True)
class Guardrail(BaseEvent):
    """What the guardrails decided: about the input right after :class:`Accepted`, about the answer (its
    redactions, a canary leak) after the last :class:`Delta`."""

    kind: ClassVar[str] = "guardrail"
    decisions: tuple[GuardrailDecision, ...] = ()


def _arguments(arguments_json: str) -> dict[str, Any]:
    """The arguments of a call as a dict (the engine checked them against the tool's schema: a JSON object)."""
    try:
        value = json.loads(arguments_json) if arguments_json else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@dataclass(frozen=True, kw_only=True)
class ToolCall(BaseEvent):
    """The model called a tool. The client runs it when ``mcp_server`` is empty (after an approving
    :class:`ApprovalDecided` when ``requires_approval``) and answers with its result or an error."""

    kind: ClassVar[str] = "tool_call"
    call_id: str = ""
    """Unique within the turn; names the call when answering it."""
    tool: str = ""
    arguments_json: str = "{}"
    """The arguments, a JSON object as text (checked against the tool's schema)."""
    requires_approval: bool = False
    """A person must approve the call first (an :class:`ApprovalRequired` event follows)."""
    mcp_server: str = ""
    """The MCP server that runs the call; empty: the client runs it."""
    round: int = 0
    """The model round that made the call (1: the turn's first model request)."""
    wait_deadline: datetime | None = None
    """When the turn stops waiting for the call's answer (or approval) and fails with TOOL_WAIT_TIMEOUT."""

    @property
    def arguments(self) -> dict[str, Any]:
        """The arguments as a dict."""
        return _arguments(self.arguments_json)

    @property
    def runs_on_client(self) -> bool:
        """Whether the client runs this call (no MCP server does)."""
        return not self.mcp_server


@dataclass(frozen=True, kw_only=True)
class ApprovalRequired(BaseEvent):
    """A tool call waits for a person to approve or reject it."""

    kind: ClassVar[str] = "approval_required"
    call_id: str = ""
    tool: str = ""
    arguments_json: str = "{}"
    """What the person approves: the arguments, a JSON object as text."""
    mcp_server: str = ""
    round: int = 0
    wait_deadline: datetime | None = None
    """When the turn stops waiting for the decision and fails with TOOL_WAIT_TIMEOUT."""

    @property
    def arguments(self) -> dict[str, Any]:
        """The arguments as a dict."""
        return _arguments(self.arguments_json)


@dataclass(frozen=True, kw_only=True)
class ApprovalDecided(BaseEvent):
    """A decision about a call that required approval was recorded (the first one counts)."""

    kind: ClassVar[str] = "approval_decided"
    call_id: str = ""
    approved: bool = False
    reason: str = ""
    approver: str = ""
    """Who decided, as the application named them."""


@dataclass(frozen=True, kw_only=True)
class ToolResult(BaseEvent):
    """A tool call has its result, which the model sees in its next round."""

    kind: ClassVar[str] = "tool_result"
    call_id: str = ""
    tool: str = ""
    is_error: bool = False
    source: str = ""
    """Where the result came from: ``client``, ``mcp``, ``rejected``, ``timeout``, ``invalid_call`` (the model's
    call did not match the tool) or ``cancelled``."""
    content_preview: str = ""
    """The start of the result (at most 1 KiB); the whole of it is in the turn's record (GetHistory)."""
    content_bytes: int = 0
    duration_s: float | None = None
    """From the call (or its approval) to its result."""


@dataclass(frozen=True, kw_only=True)
class Completed(BaseEvent):
    """The turn finished normally (terminal)."""

    kind: ClassVar[str] = "completed"
    terminal: ClassVar[bool] = True
    stop_reason: str = ""
    """Why the model stopped, lower case: ``end_turn``, ``max_tokens``, ``stop_sequence``, ``tool_use``,
    ``refusal`` (``unspecified`` when the engine did not say)."""
    stop_sequence: str = ""


@dataclass(frozen=True, kw_only=True)
class Failed(BaseEvent):
    """The turn failed (terminal). Text already streamed stays valid; ``partial`` says whether there was any."""

    kind: ClassVar[str] = "error"
    terminal: ClassVar[bool] = True
    reason: str = ""
    message: str = ""
    retryable: bool = False
    retry_after_s: float | None = None
    partial: bool = False


@dataclass(frozen=True, kw_only=True)
class Cancelled(BaseEvent):
    """The turn was cancelled (terminal); text already streamed is its partial answer."""

    kind: ClassVar[str] = "cancelled"
    terminal: ClassVar[bool] = True
    reason: str = ""


Event: TypeAlias = (
    Accepted
    | Citations
    | Delta
    | Usage
    | Guardrail
    | ToolCall
    | ApprovalRequired
    | ApprovalDecided
    | ToolResult
    | Completed
    | Failed
    | Cancelled
)
"""Any typed turn event."""

TerminalEvent: TypeAlias = Completed | Failed | Cancelled
"""The event that ends a turn."""

TERMINAL_KINDS = frozenset({"completed", "error", "cancelled"})
"""The ``TurnEvent.kind`` values that end a turn."""

_STOP_PREFIX = "STOP_REASON_"
_SOURCE_PREFIX = "TOOL_RESULT_SOURCE_"


def _enum_name(enum: Any, value: int, prefix: str) -> str:
    try:
        name: str = enum.Name(value)
    except ValueError:  # a value added to the API after this client was built
        return str(value)
    return name.removeprefix(prefix).lower()


def _stop_reason(value: int) -> str:
    return _enum_name(turn_pb2.StopReason, value, _STOP_PREFIX)


def _time(message: Any, field: str) -> datetime | None:
    # timezone.utc, not datetime.UTC: the client package supports Python 3.10.
    return getattr(message, field).ToDatetime(tzinfo=timezone.utc) if message.HasField(field) else None  # noqa: UP017


class _Common(TypedDict):
    session_id: str
    turn_id: str
    seq: int
    time: datetime | None


def event_from_proto(event: turn_pb2.TurnEvent) -> Event | None:
    """The typed form of ``event``; ``None`` for a kind this client does not know (a newer server's)."""
    common = _Common(
        session_id=event.session_id,
        turn_id=event.turn_id,
        seq=event.seq,
        # timezone.utc, not datetime.UTC: the client package supports Python 3.10.
        time=_time(event, "time"),
    )
    kind = event.WhichOneof("kind")
    if kind == "accepted":
        a = event.accepted
        return Accepted(**common, queue_position=a.queue_position, trace_id=a.trace_id, replayed=a.replayed)
    if kind == "citations":
        items = tuple(
            Citation(
                source=c.source,
                document_id=c.document_id,
                chunk_id=c.chunk_id,
                score=c.score,
                table_version=c.table_version,
                title=c.title,
            )
            for c in event.citations.citations
        )
        return Citations(**common, citations=items)
    if kind == "delta":
        return Delta(**common, text=event.delta.text)
    if kind == "usage":
        u = event.usage
        return Usage(
            **common,
            input_tokens=u.input_tokens,
            output_tokens=u.output_tokens,
            cache_read_input_tokens=u.cache_read_input_tokens,
            cache_creation_input_tokens=u.cache_creation_input_tokens,
            estimated_cost_usd=u.estimated_cost_usd,
            provider=u.provider,
            model=u.model,
            model_rounds=u.model_rounds,
        )
    if kind == "completed":
        c = event.completed
        return Completed(**common, stop_reason=_stop_reason(c.stop_reason), stop_sequence=c.stop_sequence)
    if kind == "error":
        e = event.error
        retry_after = e.retry_after.ToTimedelta().total_seconds() if e.HasField("retry_after") else None
        return Failed(
            **common,
            reason=e.reason,
            message=e.message,
            retryable=e.retryable,
            retry_after_s=retry_after,
            partial=e.partial,
        )
    if kind == "cancelled":
        return Cancelled(**common, reason=event.cancelled.reason)
    if kind == "guardrail":
        decisions = tuple(
            GuardrailDecision(
                check=d.check,
                action=d.action,
                reason=d.reason,
                source=d.source,
                count=d.count,
                score=d.score,
                rules=tuple(d.rules),
                passage=d.passage,
                call_id=d.call_id,
            )
            for d in event.guardrail.decisions
        )
        return Guardrail(**common, decisions=decisions)
    return _tool_event(event, kind, common)


def _tool_event(event: turn_pb2.TurnEvent, kind: str | None, common: _Common) -> Event | None:
    if kind == "tool_call":
        c = event.tool_call
        return ToolCall(
            **common,
            call_id=c.call_id,
            tool=c.tool,
            arguments_json=c.arguments_json or "{}",
            requires_approval=c.requires_approval,
            mcp_server=c.mcp_server,
            round=c.round,
            wait_deadline=_time(c, "wait_deadline"),
        )
    if kind == "approval_required":
        a = event.approval_required
        return ApprovalRequired(
            **common,
            call_id=a.call_id,
            tool=a.tool,
            arguments_json=a.arguments_json or "{}",
            mcp_server=a.mcp_server,
            round=a.round,
            wait_deadline=_time(a, "wait_deadline"),
        )
    if kind == "approval_decided":
        d = event.approval_decided
        return ApprovalDecided(**common, call_id=d.call_id, approved=d.approved, reason=d.reason, approver=d.approver)
    if kind == "tool_result":
        r = event.tool_result
        return ToolResult(
            **common,
            call_id=r.call_id,
            tool=r.tool,
            is_error=r.is_error,
            source=_enum_name(turn_pb2.ToolResultSource, r.source, _SOURCE_PREFIX),
            content_preview=r.content_preview,
            content_bytes=r.content_bytes,
            duration_s=r.duration.ToTimedelta().total_seconds() if r.HasField("duration") else None,
        )
    return None
