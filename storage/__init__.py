"""Storage: the turn bus on JetStream, session definitions and snapshots, transcripts, embeddings, the
knowledge base and retrieval, ids and the error root.

Knows nothing of gRPC or Ray.
"""

from storage.bus import BusSettings, EventPublisher, EventStream, ShardPuller, TurnEnvelope, TurnPublisher, ensure_bus
from storage.chunking import Chunk, chunk_text, estimate_tokens
from storage.embedding import Embedder, EmbeddingUnavailable, HashEmbedder, OnnxEmbedder, default_embedder
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
from storage.knowledge import Document, IngestResult, KnowledgeBase
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
from storage.retrieval import InMemoryRetriever, LanceRetriever, Passage, RetrievalQuery, Retriever
from storage.sessions import (
    InMemorySessionRegistry,
    KvSessionRegistry,
    SessionRegistry,
    incarnation_of,
)
from storage.subjects import Names
from storage.tables import MemoryIndexer, TranscriptStore
from storage.usage import InMemoryTokenCounters, KvTokenCounters, TokenCounters
from storage.writer import BatchWriter, WriterStatus

__all__ = [
    "AlreadyExists",
    "BatchWriter",
    "BusSettings",
    "Chunk",
    "DeadlineExceeded",
    "Document",
    "Embedder",
    "EmbeddingUnavailable",
    "EventPublisher",
    "EventStream",
    "FailedPrecondition",
    "Fenced",
    "GuardrailDecision",
    "HashEmbedder",
    "InMemoryJournal",
    "InMemoryRetriever",
    "InMemorySessionRegistry",
    "InMemoryTokenCounters",
    "IngestResult",
    "Internal",
    "InvalidArgument",
    "Journal",
    "KnowledgeBase",
    "KvSessionRegistry",
    "KvTokenCounters",
    "LanceRetriever",
    "LedgerReader",
    "LedgerSettings",
    "LoadedSession",
    "MemoryIndexer",
    "Names",
    "NatsJournal",
    "NotFound",
    "OnnxEmbedder",
    "Passage",
    "PermissionDenied",
    "ResourceExhausted",
    "RetrievalQuery",
    "Retriever",
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
    "chunk_text",
    "close_connection",
    "connect",
    "default_embedder",
    "ensure_bus",
    "ensure_ledger",
    "estimate_tokens",
    "incarnation_of",
    "is_valid_id",
    "redact_url",
    "require_id",
    "turn_key",
    "uuid7",
    "wait_for_port",
]
