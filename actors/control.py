"""Control messages: what the gateway asks of the host that owns a session (cancel a turn, hand it a tool result
or an approval decision), and the host's answer. Both travel as small JSON objects on the shard's control
subject (NATS request/reply).

The shapes are fixed here, on both sides: a request that is not valid JSON, misses a field, has a field of the
wrong type or names an unknown action is answered with a clear error (a result, a stable reason and a
message that never echoes the input), never with a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from salon.storage.reasons import Reason

MAX_FIELD_CHARS = 1024
"""Longest string a control field may hold (ids are far shorter; a reason is a sentence)."""
MAX_CONTENT_CHARS = 4 * 1024 * 1024
"""Longest tool result a control message may carry (the gateway holds results to a far smaller limit)."""

ControlResult = Literal[
    "cancelled",
    "finished",
    "pending",
    "accepted",
    "duplicate",
    "not_found",
    "approval_pending",
    "resuming",
    "unavailable",
    "unknown_session",
    "unsupported",
    "error",
]
"""``cancelled``, ``finished``, ``pending``: what :meth:`~salon.actors.session.SessionActor.cancel` did; ``accepted``,
``duplicate``, ``not_found``, ``approval_pending``, ``resuming``, ``unavailable``: what
:meth:`~salon.actors.session.SessionActor.answer` did with a tool result or decision; ``unknown_session``: the session
does not exist; ``unsupported``: an action this host does not know; ``error``: the request was malformed or the
host failed."""

_RESULTS = frozenset(ControlResult.__args__)  # type: ignore[attr-defined]


class ControlError(ValueError):
    """A control message that cannot be read: its stable ``reason`` and a message naming no input."""

    def __init__(self, message: str, *, reason: str = Reason.CONTROL_MALFORMED) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ControlError("the control message is not JSON") from None
    if not isinstance(value, dict):
        raise ControlError("the control message is not a JSON object")
    return value


def _string(data: dict[str, Any], name: str, *, required: bool, limit: int = MAX_FIELD_CHARS) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise ControlError(f"the control message's {name} is not a string")
    if required and not value:
        raise ControlError(f"the control message has no {name}")
    if len(value) > limit:
        raise ControlError(f"the control message's {name} is too long")
    return value


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, "false")
    if value not in ("true", "false"):
        raise ControlError(f"the control message's {name} is not true or false")
    return bool(value == "true")


def _text(value: bool) -> str:
    return "true" if value else "false"


class _Message:
    """Encoding shared by the requests: bytes are the JSON of :meth:`to_dict`."""

    ACTION: ClassVar[str]

    def to_dict(self) -> dict[str, str]:
        """The JSON object sent on the control subject."""
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The message's bytes."""
        return json.dumps(self.to_dict()).encode()


@dataclass(frozen=True, slots=True)
class CancelTurn(_Message):
    """Stop a turn of a session, queued, running or not arrived yet."""

    tenant_id: str
    session_id: str
    turn_id: str
    incarnation: str = ""
    """The session's incarnation as the gateway knows it (empty: whichever is live)."""
    reason: str = ""
    """Why, as the turn's cancelled event will say (empty: a generic reason)."""

    ACTION: ClassVar[str] = "cancel"

    def to_dict(self) -> dict[str, str]:
        """The JSON object sent on the control subject."""
        return {
            "action": self.ACTION,
            "tenant_id": self.tenant_id,
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "incarnation": self.incarnation,
            "reason": self.reason,
        }

    @classmethod
    def from_bytes(cls, data: bytes) -> CancelTurn:
        """Read a cancel request's bytes (raises :class:`ControlError`)."""
        request = parse_request(data)
        if not isinstance(request, cls):
            raise ControlError("the control message is not a cancel request", reason=Reason.CONTROL_UNSUPPORTED)
        return request

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CancelTurn:
        """Read a cancel request (raises :class:`ControlError` when it is malformed; unknown fields are
        ignored, so a newer gateway may add some)."""
        return cls(
            tenant_id=_string(data, "tenant_id", required=True),
            session_id=_string(data, "session_id", required=True),
            turn_id=_string(data, "turn_id", required=True),
            incarnation=_string(data, "incarnation", required=False),
            reason=_string(data, "reason", required=False),
        )


@dataclass(frozen=True, slots=True)
class SubmitToolResult(_Message):
    """The result (or error) of a tool call the client ran, for the turn waiting on it."""

    tenant_id: str
    session_id: str
    turn_id: str
    call_id: str
    incarnation: str = ""
    content: str = ""
    is_error: bool = False

    ACTION: ClassVar[str] = "submit_tool_result"

    def to_dict(self) -> dict[str, str]:
        """The JSON object sent on the control subject."""
        return {
            "action": self.ACTION,
            "tenant_id": self.tenant_id,
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "call_id": self.call_id,
            "incarnation": self.incarnation,
            "content": self.content,
            "is_error": _text(self.is_error),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubmitToolResult:
        """Read a result (raises :class:`ControlError` when it is malformed)."""
        return cls(
            tenant_id=_string(data, "tenant_id", required=True),
            session_id=_string(data, "session_id", required=True),
            turn_id=_string(data, "turn_id", required=True),
            call_id=_string(data, "call_id", required=True),
            incarnation=_string(data, "incarnation", required=False),
            content=_string(data, "content", required=False, limit=MAX_CONTENT_CHARS),
            is_error=_flag(data, "is_error"),
        )


@dataclass(frozen=True, slots=True)
class DecideApproval(_Message):
    """A person's decision about a tool call waiting for approval."""

    tenant_id: str
    session_id: str
    turn_id: str
    call_id: str
    incarnation: str = ""
    approve: bool = False
    reason: str = ""
    approver: str = ""
    """Who decided, as the application named them."""
    decided_by: str = ""
    """The caller's credentials (a key id or certificate name), as the gateway established them."""

    ACTION: ClassVar[str] = "decide_approval"

    def to_dict(self) -> dict[str, str]:
        """The JSON object sent on the control subject."""
        return {
            "action": self.ACTION,
            "tenant_id": self.tenant_id,
            "session_id": self.session_id,
            "turn_id": self.turn_id,
            "call_id": self.call_id,
            "incarnation": self.incarnation,
            "approve": _text(self.approve),
            "reason": self.reason,
            "approver": self.approver,
            "decided_by": self.decided_by,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DecideApproval:
        """Read a decision (raises :class:`ControlError` when it is malformed)."""
        return cls(
            tenant_id=_string(data, "tenant_id", required=True),
            session_id=_string(data, "session_id", required=True),
            turn_id=_string(data, "turn_id", required=True),
            call_id=_string(data, "call_id", required=True),
            incarnation=_string(data, "incarnation", required=False),
            approve=_flag(data, "approve"),
            reason=_string(data, "reason", required=False, limit=MAX_CONTENT_CHARS),
            approver=_string(data, "approver", required=False),
            decided_by=_string(data, "decided_by", required=False),
        )


ControlRequest = CancelTurn | SubmitToolResult | DecideApproval
"""Every request the host answers."""

_ACTIONS: dict[str, type[CancelTurn] | type[SubmitToolResult] | type[DecideApproval]] = {
    CancelTurn.ACTION: CancelTurn,
    SubmitToolResult.ACTION: SubmitToolResult,
    DecideApproval.ACTION: DecideApproval,
}


def parse_request(data: bytes) -> ControlRequest:
    """The request in ``data``; raises :class:`ControlError` (reason ``CONTROL_MALFORMED``, or
    ``CONTROL_UNSUPPORTED`` for an action this host does not know)."""
    message = _object(data)
    action = message.get("action")
    kind = _ACTIONS.get(action) if isinstance(action, str) else None
    if kind is None:
        raise ControlError("the control message's action is not supported", reason=Reason.CONTROL_UNSUPPORTED)
    return kind.from_dict(message)


@dataclass(frozen=True, slots=True)
class ControlReply:
    """The host's answer to a control request."""

    result: ControlResult
    reason: str = ""
    """Stable UPPER_SNAKE_CASE reason, for ``error`` and ``unsupported``."""
    message: str = ""
    """Human-readable explanation (never the request's content)."""
    verdict: str = ""
    """For an approval decision: the one that holds (``approve`` or ``reject``), this one or an earlier one."""

    @classmethod
    def refusal(cls, error: ControlError) -> ControlReply:
        """The answer to a request that could not be read."""
        result: ControlResult = "unsupported" if error.reason == Reason.CONTROL_UNSUPPORTED else "error"
        return cls(result, error.reason, error.message)

    def to_dict(self) -> dict[str, str]:
        """The JSON object of the reply (``reason`` and ``message`` only when set)."""
        reply: dict[str, str] = {"result": self.result}
        if self.reason:
            reply["reason"] = self.reason
        if self.message:
            reply["message"] = self.message
        if self.verdict:
            reply["verdict"] = self.verdict
        return reply

    def to_bytes(self) -> bytes:
        """The reply's bytes."""
        return json.dumps(self.to_dict()).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ControlReply:
        """Read a reply (raises :class:`ControlError` when it is malformed or its result unknown)."""
        result = data.get("result")
        if not isinstance(result, str) or result not in _RESULTS:
            raise ControlError("the control reply's result is not known")
        return cls(
            result,  # type: ignore[arg-type]
            reason=_string(data, "reason", required=False),
            message=_string(data, "message", required=False),
            verdict=_string(data, "verdict", required=False),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ControlReply:
        """Read a reply's bytes (raises :class:`ControlError`)."""
        return cls.from_dict(_object(data))
