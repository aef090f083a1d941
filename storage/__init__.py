"""Storage: the contracts of the turn bus, the ledger, session definitions, token counters and retrieval, the
records they carry, ids and the error root.

This face loads no NATS, LanceDB or Arrow: the adapters are imported from their own modules by the
composition roots (``engine.app``, ``actors.ray_host``) and by tests: ``storage.jetstream`` (NATS JetStream),
``storage.lance`` and ``storage.tables`` (LanceDB), ``storage.writer`` (ledger to tables). In-memory
references of the contracts are in ``storage.inmemory``. Knows nothing of gRPC or Ray.
"""

from salon.storage.bus import TurnEnvelope
from salon.storage.chunking import Chunk, chunk_text, estimate_tokens
from salon.storage.embedding import (
    Embedder,
    EmbeddingUnavailable,
    HashEmbedder,
    OnnxEmbedder,
    build_embedder,
    default_embedder,
)
from salon.storage.errors import (
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
from salon.storage.ids import is_valid_id, require_id, uuid7
from salon.storage.knowledge import Document, IngestResult
from salon.storage.leases import Lease, LeaseStore
from salon.storage.ledger import Fenced, Journal, LoadedSession, SessionLog
from salon.storage.reasons import Reason
from salon.storage.records import (
    GuardrailDecision,
    ProgressRecord,
    SnapshotRecord,
    ToolApproval,
    ToolCallEntry,
    ToolSource,
    TurnRecord,
    TurnStatus,
    turn_key,
)
from salon.storage.retrieval import Passage, RetrievalQuery, Retriever
from salon.storage.sessions import SessionRegistry, incarnation_of
from salon.storage.subjects import Names
from salon.storage.tool_answers import AnswerKind, AnswerStore, StoredAnswer
from salon.storage.urls import redact_url
from salon.storage.usage import TokenCounters, TurnCounters

__all__ = [
    "AlreadyExists",
    "AnswerKind",
    "AnswerStore",
    "Chunk",
    "DeadlineExceeded",
    "Document",
    "Embedder",
    "EmbeddingUnavailable",
    "FailedPrecondition",
    "Fenced",
    "GuardrailDecision",
    "HashEmbedder",
    "IngestResult",
    "Internal",
    "InvalidArgument",
    "Journal",
    "Lease",
    "LeaseStore",
    "LoadedSession",
    "Names",
    "NotFound",
    "OnnxEmbedder",
    "Passage",
    "PermissionDenied",
    "ProgressRecord",
    "Reason",
    "ResourceExhausted",
    "RetrievalQuery",
    "Retriever",
    "SalonError",
    "SessionLog",
    "SessionRegistry",
    "SnapshotRecord",
    "StoredAnswer",
    "TokenCounters",
    "ToolApproval",
    "ToolCallEntry",
    "ToolSource",
    "TurnCounters",
    "TurnEnvelope",
    "TurnRecord",
    "TurnStatus",
    "Unauthenticated",
    "Unavailable",
    "build_embedder",
    "chunk_text",
    "default_embedder",
    "estimate_tokens",
    "incarnation_of",
    "is_valid_id",
    "redact_url",
    "require_id",
    "turn_key",
    "uuid7",
]
