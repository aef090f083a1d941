"""Session actors and the hosts that run them.

``SessionActor`` is plain asyncio (no Ray, NATS or gRPC); ``SessionHost`` runs many of them for a set of
shards; ``HostActor`` (in :mod:`actors.ray_host`, imported on demand) is the only Ray code.
"""

from actors.events import EventSink, TurnEmitter, is_terminal, record_events
from actors.guardrails import GuardrailDecision, GuardrailSettings
from actors.host import HostSettings, SessionHost, session_settings
from actors.memory import estimate_tokens, fit_window
from actors.model import (
    Message,
    ModelChunk,
    ModelError,
    ModelProvider,
    ModelRequest,
    ModelResult,
    TextDelta,
)
from actors.placement import host_of_shard, shard_for, shards_of_host
from actors.session import SessionActor, SessionKey, SessionSettings, SessionState, Turn

__all__ = [
    "EventSink",
    "GuardrailDecision",
    "GuardrailSettings",
    "HostSettings",
    "Message",
    "ModelChunk",
    "ModelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResult",
    "SessionActor",
    "SessionHost",
    "SessionKey",
    "SessionSettings",
    "SessionState",
    "TextDelta",
    "Turn",
    "TurnEmitter",
    "estimate_tokens",
    "fit_window",
    "host_of_shard",
    "is_terminal",
    "record_events",
    "session_settings",
    "shard_for",
    "shards_of_host",
]
