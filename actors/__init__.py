"""Session actors and the hosts that run them.

``SessionActor`` is plain asyncio (no Ray, NATS, gRPC or API types): its prompt is the sliding window
(``memory``), the rolling summary (``summary``) and retrieved passages (``context``); its turns' events are
records of its own (``events``). ``SessionHost`` runs many of them for a set of shards and converts their
events to the API's at its edge (``wire``); ``HostActor`` (in :mod:`salon.actors.ray_host`, imported on demand) is the
only Ray code.

The host and the API conversions are loaded on first use, so importing session logic loads no protobuf types.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from salon.actors.context import PassageEntry, TurnContext, WindowEntry, explain, render_system
from salon.actors.control import CancelTurn, ControlError, ControlReply, DecideApproval, SubmitToolResult
from salon.actors.emitter import EventSink, TurnEmitter
from salon.actors.events import TurnEvent
from salon.actors.guardrails import (
    Guardrails,
    GuardrailSettings,
    OutputGuard,
    StreamingRedactor,
    forbidden_character,
    injection_score,
)
from salon.actors.memory import estimate_tokens, fit_window, turn_groups
from salon.actors.model import (
    Message,
    ModelChunk,
    ModelError,
    ModelProvider,
    ModelRequest,
    ModelResult,
    TextDelta,
    ToolCall,
    ToolResult,
    ToolSpec,
)
from salon.actors.placement import host_of_shard, shard_for, shards_of_host
from salon.actors.session import SessionActor, SessionKey, SessionSettings, SessionState, Turn
from salon.actors.summary import (
    ExtractiveSummarizer,
    ModelSummarizer,
    Summarizer,
    Summary,
    extractive_summary,
    summarizer_for,
)
from salon.actors.tool_servers import NoToolServers, ToolServers
from salon.actors.tools import (
    InvalidTool,
    ToolPolicy,
    ToolSelection,
    check_servers,
    offered_tools,
    validate_call,
)
from salon.actors.turn import InFlight, LocalInFlight
from salon.storage import GuardrailDecision

if TYPE_CHECKING:
    from salon.actors.host import HostSettings, SessionHost, session_settings
    from salon.actors.wire import (
        decision_to_proto,
        event_from_proto,
        event_to_proto,
        is_terminal,
        policy_from_proto,
        record_events,
        selection_from_proto,
        selection_to_proto,
    )

_EDGE = {
    "HostSettings": "salon.actors.host",
    "SessionHost": "salon.actors.host",
    "session_settings": "salon.actors.host",
    "decision_to_proto": "salon.actors.wire",
    "event_from_proto": "salon.actors.wire",
    "event_to_proto": "salon.actors.wire",
    "is_terminal": "salon.actors.wire",
    "record_events": "salon.actors.wire",
    "policy_from_proto": "salon.actors.wire",
    "selection_from_proto": "salon.actors.wire",
    "selection_to_proto": "salon.actors.wire",
}
"""Names whose modules import the API's protobuf types: loaded when first asked for."""


def __getattr__(name: str) -> Any:
    module = _EDGE.get(name)
    if module is None:
        raise AttributeError(f"module 'actors' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "CancelTurn",
    "ControlError",
    "ControlReply",
    "DecideApproval",
    "EventSink",
    "ExtractiveSummarizer",
    "GuardrailDecision",
    "GuardrailSettings",
    "Guardrails",
    "HostSettings",
    "InFlight",
    "InvalidTool",
    "LocalInFlight",
    "Message",
    "ModelChunk",
    "ModelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResult",
    "ModelSummarizer",
    "NoToolServers",
    "OutputGuard",
    "PassageEntry",
    "SessionActor",
    "SessionHost",
    "SessionKey",
    "SessionSettings",
    "SessionState",
    "StreamingRedactor",
    "SubmitToolResult",
    "Summarizer",
    "Summary",
    "TextDelta",
    "ToolCall",
    "ToolPolicy",
    "ToolResult",
    "ToolSelection",
    "ToolServers",
    "ToolSpec",
    "Turn",
    "TurnContext",
    "TurnEmitter",
    "TurnEvent",
    "WindowEntry",
    "check_servers",
    "decision_to_proto",
    "estimate_tokens",
    "event_from_proto",
    "event_to_proto",
    "explain",
    "extractive_summary",
    "fit_window",
    "forbidden_character",
    "host_of_shard",
    "injection_score",
    "is_terminal",
    "offered_tools",
    "policy_from_proto",
    "record_events",
    "render_system",
    "selection_from_proto",
    "selection_to_proto",
    "session_settings",
    "shard_for",
    "shards_of_host",
    "summarizer_for",
    "turn_groups",
    "validate_call",
]
