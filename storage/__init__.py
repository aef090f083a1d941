"""Storage: the turn bus on JetStream, session definitions and snapshots, ids and the error root.

Knows nothing of gRPC or Ray.
"""

from storage.bus import BusSettings, EventPublisher, ShardPuller, TurnEnvelope, TurnPublisher, ensure_bus
from storage.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    SalonError,
    Unavailable,
)
from storage.ids import is_valid_id, require_id, uuid7
from storage.nats_client import connect, wait_for_port
from storage.sessions import (
    InMemorySessionRegistry,
    InMemorySnapshotStore,
    KvSessionRegistry,
    KvSnapshotStore,
    SessionRegistry,
    SnapshotStore,
)
from storage.subjects import Names

__all__ = [
    "AlreadyExists",
    "BusSettings",
    "DeadlineExceeded",
    "EventPublisher",
    "FailedPrecondition",
    "InMemorySessionRegistry",
    "InMemorySnapshotStore",
    "Internal",
    "InvalidArgument",
    "KvSessionRegistry",
    "KvSnapshotStore",
    "Names",
    "NotFound",
    "ResourceExhausted",
    "SalonError",
    "SessionRegistry",
    "ShardPuller",
    "SnapshotStore",
    "TurnEnvelope",
    "TurnPublisher",
    "Unavailable",
    "connect",
    "ensure_bus",
    "is_valid_id",
    "require_id",
    "uuid7",
    "wait_for_port",
]
