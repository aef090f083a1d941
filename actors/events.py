"""A turn's events as session logic produces and reads them: plain records, numbered per turn.

Each kind mirrors one case of the API's ``TurnEvent`` (same name, same fields), so :mod:`salon.actors.wire`, the
only place that knows the protobuf types, converts them one to one where the host publishes events and where
it reads back what an earlier attempt at a turn sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from salon.actors.model import ModelResult
from salon.storage import GuardrailDecision


@dataclass(frozen=True, slots=True)
class Accepted:
    """The turn reached its session (always the first event)."""

    queue_position: int = 0
    trace_id: str = ""
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class Citation:
    """A retrieved passage the prompt holds, as the client sees it."""

    source: str
    document_id: str
    chunk_id: str
    score: float
    table_version: int
    title: str = ""


@dataclass(frozen=True, slots=True)
class Citations:
    """The passages of the prompt, sent before the first token."""

    citations: tuple[Citation, ...] = ()


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the answer."""

    text: str


@dataclass(frozen=True, slots=True)
class Guardrail:
    """What the guardrails decided (checks and counts, never the matched text)."""

    decisions: tuple[GuardrailDecision, ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """What the turn consumed."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    provider: str = ""
    model: str = ""
    estimated_cost_usd: float = 0.0
    model_rounds: int = 0
    """Model requests the turn made; the counts above add up every round."""

    @classmethod
    def of(cls, result: ModelResult, model_rounds: int = 0) -> Usage:
        """The usage a model result reports (the sum of a turn's rounds)."""
        return cls(
            input_tokens=result.input_tokens,
            output_tokens=result.output_tokens,
            cache_read_input_tokens=result.cache_read_input_tokens,
            cache_creation_input_tokens=result.cache_creation_input_tokens,
            provider=result.provider,
            model=result.model,
            estimated_cost_usd=result.estimated_cost_usd,
            model_rounds=model_rounds,
        )


@dataclass(frozen=True, slots=True)
class ToolCallEvent:
    """The model called a tool (the API's ``tool_call``): sent for each valid call of a round, in the model's
    order."""

    call_id: str
    tool: str
    arguments_json: str = "{}"
    requires_approval: bool = False
    mcp_server: str = ""
    round: int = 0
    wait_deadline_ns: int = 0
    """When the turn stops waiting for the call (0: it does not wait: an MCP call without approval)."""


@dataclass(frozen=True, slots=True)
class ApprovalRequired:
    """A call waits for a person's decision (the API's ``approval_required``)."""

    call_id: str
    tool: str
    arguments_json: str = "{}"
    mcp_server: str = ""
    round: int = 0
    wait_deadline_ns: int = 0


@dataclass(frozen=True, slots=True)
class ApprovalDecided:
    """A decision about a call that required approval was recorded (the API's ``approval_decided``)."""

    call_id: str
    approved: bool
    reason: str = ""
    approver: str = ""


@dataclass(frozen=True, slots=True)
class ToolResultEvent:
    """A call has its result, which the model sees in its next round (the API's ``tool_result``)."""

    call_id: str
    tool: str
    is_error: bool = False
    source: str = ""
    """``client``, ``mcp``, ``rejected``, ``timeout``, ``invalid_call`` or ``cancelled``."""
    content_preview: str = ""
    content_bytes: int = 0
    duration_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Completed:
    """The turn finished normally (terminal)."""

    stop_reason: str = "end_turn"
    """``end_turn``, ``max_tokens``, ``stop_sequence``, ``tool_use`` or ``refusal`` (anything else: unspecified)."""
    stop_sequence: str = ""


@dataclass(frozen=True, slots=True)
class Failed:
    """The turn failed (terminal): the API's ``error`` event."""

    reason: str
    message: str
    retryable: bool = False
    partial: bool = False
    retry_after_s: float | None = None
    """Suggested wait before retrying; None: no suggestion (0.0 is a suggestion: retry at once)."""


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The turn was cancelled (terminal)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Unrecognized:
    """An event read back from the bus whose kind this engine does not know (a newer engine sent it). Only its
    place in the sequence matters to the session."""

    kind: str = ""


EventBody = (
    Accepted
    | Citations
    | Delta
    | Guardrail
    | Usage
    | Completed
    | Failed
    | Cancelled
    | ToolCallEvent
    | ApprovalRequired
    | ApprovalDecided
    | ToolResultEvent
    | Unrecognized
)

KINDS: dict[type, str] = {
    Accepted: "accepted",
    Citations: "citations",
    Delta: "delta",
    Guardrail: "guardrail",
    Usage: "usage",
    Completed: "completed",
    Failed: "error",
    Cancelled: "cancelled",
    ToolCallEvent: "tool_call",
    ApprovalRequired: "approval_required",
    ApprovalDecided: "approval_decided",
    ToolResultEvent: "tool_result",
}
"""Each record's kind, named as the API's ``TurnEvent.kind`` case."""

TERMINAL_KINDS = frozenset({"completed", "error", "cancelled"})


@dataclass(frozen=True, slots=True)
class TurnEvent:
    """One event of a turn: its place in the turn's gap-free sequence (from 1), when it was emitted, and what
    it says."""

    session_id: str
    turn_id: str
    seq: int
    time_ns: int
    body: EventBody

    @property
    def kind(self) -> str:
        """The API's name of the event's kind (``accepted``, ``delta``, ``error`` …)."""
        if isinstance(self.body, Unrecognized):
            return self.body.kind
        return KINDS[type(self.body)]

    @property
    def terminal(self) -> bool:
        """Whether the event ends its turn's stream."""
        return self.kind in TERMINAL_KINDS
