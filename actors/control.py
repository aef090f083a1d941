"""Control messages: what the gateway asks of the host that owns a session (today: cancel a turn), and the
host's answer. Both travel as small JSON objects on the shard's control subject (NATS request/reply).

The shapes are fixed here, on both sides: a request that is not valid JSON, misses a field, has a field of the
wrong type or names an unknown action is answered with a clear error (a result, a stable reason and a
message that never echoes the input), never with a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from storage.reasons import Reason

MAX_FIELD_CHARS = 1024
"""Longest string a control field may hold (ids are far shorter; a reason is a sentence)."""

ControlResult = Literal["cancelled", "finished", "pending", "unknown_session", "unsupported", "error"]
"""``cancelled``, ``finished``, ``pending``: what :meth:`~actors.session.SessionActor.cancel` did;
``unknown_session``: the session does not exist; ``unsupported``: an action this host does not know;
``error``: the request was malformed or the host failed."""

_RESULTS = frozenset({"cancelled", "finished", "pending", "unknown_session", "unsupported", "error"})


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


def _string(data: dict[str, Any], name: str, *, required: bool) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise ControlError(f"the control message's {name} is not a string")
    if required and not value:
        raise ControlError(f"the control message has no {name}")
    if len(value) > MAX_FIELD_CHARS:
        raise ControlError(f"the control message's {name} is too long")
    return value


@dataclass(frozen=True, slots=True)
class CancelTurn:
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

    def to_bytes(self) -> bytes:
        """The message's bytes."""
        return json.dumps(self.to_dict()).encode()

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


ControlRequest = CancelTurn
"""Every request the host answers (one kind so far)."""

_ACTIONS: dict[str, type[CancelTurn]] = {CancelTurn.ACTION: CancelTurn}


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
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> ControlReply:
        """Read a reply's bytes (raises :class:`ControlError`)."""
        return cls.from_dict(_object(data))
