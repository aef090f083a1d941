"""Session actors and the hosts that run them.

``SessionActor`` is plain asyncio (no Ray, NATS or gRPC): its prompt is the sliding window (``memory``), the
rolling summary (``summary``) and retrieved passages (``context``). ``SessionHost`` runs many of them for a
set of shards; ``HostActor`` (in :mod:`actors.ray_host`, imported on demand) is the only Ray code.
"""

from actors.context import PassageEntry, TurnContext, WindowEntry, explain, render_system
from actors.events import EventSink, TurnEmitter, decision_to_proto, is_terminal, record_events
from actors.guardrails import (
    Guardrails,
    GuardrailSettings,
    OutputGuard,
    StreamingRedactor,
    forbidden_character,
    injection_score,
)
from actors.host import HostSettings, SessionHost, session_settings
from actors.memory import estimate_tokens, fit_window, turn_groups
from actors.model import (
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
from actors.placement import host_of_shard, shard_for, shards_of_host
from actors.session import SessionActor, SessionKey, SessionSettings, SessionState, Turn
from actors.summary import (
    ExtractiveSummarizer,
    ModelSummarizer,
    Summarizer,
    Summary,
    extractive_summary,
    summarizer_for,
)
from actors.tools import (
    InvalidTool,
    ToolPolicy,
    ToolSelection,
    check_decide,
    check_servers,
    check_submit,
    offered_tools,
    selection_from_proto,
    selection_to_proto,
    submitted_result,
    validate_call,
)
from storage import GuardrailDecision

__all__ = [
    "EventSink",
    "ExtractiveSummarizer",
    "GuardrailDecision",
    "GuardrailSettings",
    "Guardrails",
    "HostSettings",
    "InvalidTool",
    "Message",
    "ModelChunk",
    "ModelError",
    "ModelProvider",
    "ModelRequest",
    "ModelResult",
    "ModelSummarizer",
    "OutputGuard",
    "PassageEntry",
    "SessionActor",
    "SessionHost",
    "SessionKey",
    "SessionSettings",
    "SessionState",
    "StreamingRedactor",
    "Summarizer",
    "Summary",
    "TextDelta",
    "ToolCall",
    "ToolPolicy",
    "ToolResult",
    "ToolSelection",
    "ToolSpec",
    "Turn",
    "TurnContext",
    "TurnEmitter",
    "WindowEntry",
    "check_decide",
    "check_servers",
    "check_submit",
    "decision_to_proto",
    "estimate_tokens",
    "explain",
    "extractive_summary",
    "fit_window",
    "forbidden_character",
    "host_of_shard",
    "injection_score",
    "is_terminal",
    "offered_tools",
    "record_events",
    "render_system",
    "selection_from_proto",
    "selection_to_proto",
    "session_settings",
    "shard_for",
    "shards_of_host",
    "submitted_result",
    "summarizer_for",
    "turn_groups",
    "validate_call",
]
