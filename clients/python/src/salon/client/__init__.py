"""The async Python client of Salon.

``SalonClient`` holds the channel; ``Session`` objects start turns; a :class:`Turn` is an async iterator of
typed events (:class:`Accepted`, :class:`Delta`, … :class:`Completed`) that resumes by itself after a dropped
stream. ``Session.send`` gives the raw ``salon.v1.TurnEvent`` messages instead. Failed calls raise
:class:`SalonError` carrying the gRPC status and Salon's reason. ``salon.client.sync`` wraps it all for
blocking code. ``SalonClient.ingest``, ``delete_documents`` and ``search`` reach the knowledge base.
"""

from salon.client.client import SalonClient, Session
from salon.client.errors import SalonError
from salon.client.events import (
    Accepted,
    BaseEvent,
    Cancelled,
    Citation,
    Citations,
    Completed,
    Delta,
    Event,
    Failed,
    TerminalEvent,
    Usage,
    event_from_proto,
)
from salon.client.knowledge import Document, IngestProgress
from salon.client.policies import Disconnect, DoubleTexting
from salon.client.reply import Reply
from salon.client.retry import NO_RETRY, RetryPolicy
from salon.client.turn import Turn

__all__ = [
    "NO_RETRY",
    "Accepted",
    "BaseEvent",
    "Cancelled",
    "Citation",
    "Citations",
    "Completed",
    "Delta",
    "Disconnect",
    "Document",
    "DoubleTexting",
    "Event",
    "Failed",
    "IngestProgress",
    "Reply",
    "RetryPolicy",
    "SalonClient",
    "SalonError",
    "Session",
    "TerminalEvent",
    "Turn",
    "Usage",
    "event_from_proto",
]
