"""Long-term memory: each completed turn of a session, embedded, in the LanceDB table ``memories``.

The rows are written by the persistence path (:meth:`salon.storage.tables.TranscriptStore.write`, called by the
batch writer), one embedding batch per flush, never on the way to a turn's first token; they are read by
:class:`salon.storage.lance.retrieval.LanceRetriever`, always prefiltered to one tenant and one session.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Final

import pyarrow as pa

from salon.storage.lance.schemas import MEMORY_KEY, memories_schema, rows_to_batch
from salon.storage.records import TurnRecord

MEMORIES: Final = "memories"
REMEMBERED_STATUSES: Final = frozenset({"completed"})
"""Only answers that were given in full are remembered: a failed, cancelled or rolled-back turn was either
not answered or taken back by the user."""


def remembers(turn: TurnRecord) -> bool:
    """Whether ``turn`` belongs in long-term memory."""
    return (
        turn.status in REMEMBERED_STATUSES
        and not turn.do_not_remember
        and bool(turn.user_text.strip() or turn.reply_text.strip())
    )


def memory_text(turn: TurnRecord) -> str:
    """What is remembered of a turn, and embedded: both sides, labelled, so a retrieved memory reads as an
    exchange in a prompt."""
    return f"User: {turn.user_text}\nAssistant: {turn.reply_text}"


def memories_to_batch(
    turns: Sequence[TurnRecord], vectors: Sequence[Sequence[float]], *, dim: int, model_id: str
) -> pa.RecordBatch:
    """The memory rows of ``turns`` (one vector each, in order) as a batch of :func:`memories_schema`."""
    if len(turns) != len(vectors):
        raise ValueError("one vector per turn")
    now = time.time_ns()
    return rows_to_batch(
        memories_schema(dim),
        {
            MEMORY_KEY: [t.key for t in turns],
            "tenant_id": [t.tenant_id for t in turns],
            "session_id": [t.session_id for t in turns],
            "turn_id": [t.turn_id for t in turns],
            "turn_index": [t.turn_index for t in turns],
            "text": [memory_text(t) for t in turns],
            "vector": [list(v) for v in vectors],
            "model_id": [model_id] * len(turns),
            "created_at_ns": [now] * len(turns),
            "user_id": [t.user_id for t in turns],
            "completed_at_ns": [t.completed_at_ns for t in turns],
        },
    )
