"""Session and turn policies by name (``"enqueue"``, ``"cancel"`` …) or by their ``salon.v1`` enum value."""

from __future__ import annotations

from typing import Literal, TypeAlias

from salon.v1 import session_pb2

DoubleTextingName: TypeAlias = Literal["enqueue", "reject", "interrupt", "rollback"]
DisconnectName: TypeAlias = Literal["continue", "cancel"]

# Quoted: a protobuf enum is no class at run time, and Python 3.10's typing refuses it in a union.
DoubleTexting: TypeAlias = "DoubleTextingName | session_pb2.DoubleTextingPolicy"
"""What a session does with a turn that arrives while another runs:

``enqueue`` (run it after), ``reject`` (refuse it with FAILED_PRECONDITION), ``interrupt`` (cancel the running
turn, keeping its partial answer) or ``rollback`` (cancel the running turn and erase it)."""

Disconnect: TypeAlias = "DisconnectName | session_pb2.DisconnectPolicy"
"""What happens to a running turn when its client goes away: ``continue`` (it completes and stays resumable)
or ``cancel``."""

_DOUBLE_TEXTING: dict[str, session_pb2.DoubleTextingPolicy] = {
    "enqueue": session_pb2.DOUBLE_TEXTING_POLICY_ENQUEUE,
    "reject": session_pb2.DOUBLE_TEXTING_POLICY_REJECT,
    "interrupt": session_pb2.DOUBLE_TEXTING_POLICY_INTERRUPT,
    "rollback": session_pb2.DOUBLE_TEXTING_POLICY_ROLLBACK,
}
_DISCONNECT: dict[str, session_pb2.DisconnectPolicy] = {
    "continue": session_pb2.DISCONNECT_POLICY_CONTINUE,
    "cancel": session_pb2.DISCONNECT_POLICY_CANCEL,
}


def double_texting_value(policy: DoubleTexting | None) -> session_pb2.DoubleTextingPolicy:
    """The enum value of ``policy``; ``None`` means unspecified (the session's or the engine's default)."""
    if policy is None:
        return session_pb2.DOUBLE_TEXTING_POLICY_UNSPECIFIED
    if isinstance(policy, str):
        try:
            return _DOUBLE_TEXTING[policy]
        except KeyError:
            raise ValueError(f"unknown double-texting policy {policy!r}; one of {sorted(_DOUBLE_TEXTING)}") from None
    return policy


def disconnect_value(policy: Disconnect | None) -> session_pb2.DisconnectPolicy:
    """The enum value of ``policy``; ``None`` means unspecified (the session's or the engine's default)."""
    if policy is None:
        return session_pb2.DISCONNECT_POLICY_UNSPECIFIED
    if isinstance(policy, str):
        try:
            return _DISCONNECT[policy]
        except KeyError:
            raise ValueError(f"unknown disconnect policy {policy!r}; one of {sorted(_DISCONNECT)}") from None
    return policy
