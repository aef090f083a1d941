"""The async Python client of Salon.

``SalonClient`` holds the channel; ``Session`` objects start turns; a :class:`Turn` is an async iterator of
typed events (:class:`Accepted`, :class:`Delta`, … :class:`Completed`) that resumes by itself after a dropped
stream. ``Session.send`` gives the raw ``salon.v1.TurnEvent`` messages instead. Failed calls raise
:class:`SalonError` carrying the gRPC status and Salon's reason. ``salon.client.sync`` wraps it all for
blocking code. ``SalonClient.ingest``, ``delete_documents`` and ``search`` reach the knowledge base.

Tools: register plain functions (:func:`tool`, or the functions themselves) on a session or a turn; the turn
runs them when the model calls them and submits what they return, and an approval callback (returning
:func:`approve` or :func:`reject`) decides the calls that wait for a person. ``SalonClient.converse`` carries
many turns, their tool results and approvals on one ``Converse`` stream (:class:`Conversation`).
"""

from salon.client.approvals import ApprovalHandler, Decision, approve, reject
from salon.client.client import SalonClient, Session
from salon.client.converse import Conversation, ConverseTurn
from salon.client.errors import SalonError
from salon.client.events import (
    Accepted,
    ApprovalDecided,
    ApprovalRequired,
    BaseEvent,
    Cancelled,
    Citation,
    Citations,
    Completed,
    Delta,
    Event,
    Failed,
    Guardrail,
    GuardrailDecision,
    TerminalEvent,
    ToolCall,
    ToolResult,
    Usage,
    event_from_proto,
)
from salon.client.knowledge import Document, IngestProgress
from salon.client.policies import Disconnect, DoubleTexting
from salon.client.reply import Reply
from salon.client.retry import NO_RETRY, RetryPolicy
from salon.client.tools import Tool, Toolbox, ToolError, mcp_tool, tool
from salon.client.turn import BaseTurn, Turn

__all__ = [
    "NO_RETRY",
    "Accepted",
    "ApprovalDecided",
    "ApprovalHandler",
    "ApprovalRequired",
    "BaseEvent",
    "BaseTurn",
    "Cancelled",
    "Citation",
    "Citations",
    "Completed",
    "Conversation",
    "ConverseTurn",
    "Decision",
    "Delta",
    "Disconnect",
    "Document",
    "DoubleTexting",
    "Event",
    "Failed",
    "Guardrail",
    "GuardrailDecision",
    "IngestProgress",
    "Reply",
    "RetryPolicy",
    "SalonClient",
    "SalonError",
    "Session",
    "TerminalEvent",
    "Tool",
    "ToolCall",
    "ToolError",
    "ToolResult",
    "Toolbox",
    "Turn",
    "Usage",
    "approve",
    "event_from_proto",
    "mcp_tool",
    "reject",
    "tool",
]
