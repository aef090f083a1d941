"""Storage: the turn bus on JetStream, session definitions and snapshots, ids and the error root.

Knows nothing of gRPC or Ray.
"""

from storage.bus import BusSettings, EventPublisher, EventStream, ShardPuller, TurnEnvelope, TurnPublisher, ensure_bus
from storage.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    SalonError,
    Unauthenticated,
    Unavailable,
)
from storage.ids import is_valid_id, require_id, uuid7
from storage.ledger import (
    Fenced,
    InMemoryJournal,
    Journal,
    LedgerReader,
    LedgerSettings,
    LoadedSession,
    NatsJournal,
    SessionLog,
    ensure_ledger,
)
from storage.nats_client import close_connection, connect, redact_url, wait_for_port
from storage.records import GuardrailDecision, SnapshotRecord, TurnRecord, turn_key
from storage.sessions import (
    InMemorySessionRegistry,
    KvSessionRegistry,
    SessionRegistry,
    incarnation_of,
)
from storage.subjects import Names
from storage.tables import TranscriptStore
from storage.usage import InMemoryTokenCounters, KvTokenCounters, TokenCounters
from storage.writer import BatchWriter, WriterStatus

__all__ = [
    "AlreadyExists",
    "BatchWriter",
    "BusSettings",
    "DeadlineExceeded",
    "EventPublisher",
    "EventStream",
    "FailedPrecondition",
    "Fenced",
    "GuardrailDecision",
    "InMemoryJournal",
    "InMemorySessionRegistry",
    "InMemoryTokenCounters",
    "Internal",
    "InvalidArgument",
    "Journal",
    "KvSessionRegistry",
    "KvTokenCounters",
    "LedgerReader",
    "LedgerSettings",
    "LoadedSession",
    "Names",
    "NatsJournal",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SalonError",
    "SessionLog",
    "SessionRegistry",
    "ShardPuller",
    "SnapshotRecord",
    "TokenCounters",
    "TranscriptStore",
    "TurnEnvelope",
    "TurnPublisher",
    "TurnRecord",
    "Unauthenticated",
    "Unavailable",
    "WriterStatus",
    "close_connection",
    "connect",
    "ensure_bus",
    "ensure_ledger",
    "incarnation_of",
    "is_valid_id",
    "redact_url",
    "require_id",
    "turn_key",
    "uuid7",
    "wait_for_port",
]
