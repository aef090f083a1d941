"""Typed turn events: small frozen dataclasses instead of the ``salon.v1.TurnEvent`` oneof.

Every event carries ``session_id``, ``turn_id`` and ``seq`` (1, 2, 3 … per turn, no gaps) and the time the
engine emitted it. Exactly one terminal event (:class:`Completed`, :class:`Failed` or :class:`Cancelled`)
ends a turn. :func:`event_from_proto` converts one ``TurnEvent``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import ClassVar, TypeAlias, TypedDict

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
    """``user``, ``passage`` or ``output``."""
    count: int = 1
    score: float = 0.0
    rules: tuple[str, ...] = ()
    passage: int = -1


@dataclass(frozen=True, kw_only=True)
class Guardrail(BaseEvent):
    """What the guardrails decided: about the input right after :class:`Accepted`, about the answer (its
    redactions, a canary leak) after the last :class:`Delta`."""

    kind: ClassVar[str] = "guardrail"
    decisions: tuple[GuardrailDecision, ...] = ()


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


Event: TypeAlias = Accepted | Citations | Delta | Usage | Guardrail | Completed | Failed | Cancelled
"""Any typed turn event."""

TerminalEvent: TypeAlias = Completed | Failed | Cancelled
"""The event that ends a turn."""

TERMINAL_KINDS = frozenset({"completed", "error", "cancelled"})
"""The ``TurnEvent.kind`` values that end a turn."""

_STOP_PREFIX = "STOP_REASON_"


def _stop_reason(value: int) -> str:
    try:
        name = turn_pb2.StopReason.Name(value)
    except ValueError:  # a reason added to the API after this client was built
        return str(value)
    return name.removeprefix(_STOP_PREFIX).lower()


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
        time=event.time.ToDatetime(tzinfo=timezone.utc) if event.HasField("time") else None,  # noqa: UP017
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
            )
            for d in event.guardrail.decisions
        )
        return Guardrail(**common, decisions=decisions)
    return None
