"""Long-term memory: each completed turn of a session, embedded, in the LanceDB table ``memories``.

The rows are written by the persistence path (:meth:`salon.storage.tables.TranscriptStore.write`, called by the
batch writer), one embedding batch per flush, never on the way to a turn's first token; they are read by
:class:`salon.storage.lance.retrieval.LanceRetriever`, always prefiltered to one tenant and one session.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
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


def memory_text(turn: TurnRecord, *, speaker: str = "user") -> str:
    """What is remembered of a turn, and embedded: when it was said and by whom, then both sides, so a
    retrieved memory reads as a dated exchange in a prompt and a question naming a person or a date can find
    it (measured with ``python -m bench.memory_eval``):

        [2026-05-14] user: I adopted a dog.
        assistant: Congratulations!

    The date is the turn's (UTC), from when it completed (else started, else was enqueued); a side left
    empty is left out.
    """
    lines = []
    if turn.user_text.strip():
        lines.append(f"{speaker}: {turn.user_text}")
    if turn.reply_text.strip():
        lines.append(f"assistant: {turn.reply_text}")
    text = "\n".join(lines)
    at_ns = turn.completed_at_ns or turn.started_at_ns or turn.enqueued_at_ns
    if at_ns > 0:
        text = f"{DATE_PREFIX.format(datetime.fromtimestamp(at_ns / 1e9, UTC))}{text}"
    return text


def memory_words(turn: TurnRecord) -> str:
    """What is embedded of a turn: its words alone. The speaker and the date of :func:`memory_text` are left
    out of the vector: written into it, they pulled every turn of a speaker towards each other and cost a
    third of the recall of questions asked in other words (bench.memory_eval); they stay in the indexed text,
    where the full-text side of the search and the period filter use them."""
    return "\n".join(side for side in (turn.user_text, turn.reply_text) if side.strip())


DATE_PREFIX: Final = "[{:%Y-%m-%d}] "
"""How a memory's text starts: its date, so the date is read by the model and can be searched by prefix."""


def memories_to_batch(
    turns: Sequence[TurnRecord],
    vectors: Sequence[Sequence[float]],
    *,
    dim: int,
    model_id: str,
    texts: Sequence[str] | None = None,
) -> pa.RecordBatch:
    """The memory rows of ``turns`` (one vector each, in order) as a batch of :func:`memories_schema`;
    ``texts``: the rows' texts when already made (the ones embedded), else :func:`memory_text` of each."""
    if len(turns) != len(vectors) or (texts is not None and len(texts) != len(turns)):
        raise ValueError("one vector and one text per turn")
    now = time.time_ns()
    return rows_to_batch(
        memories_schema(dim),
        {
            MEMORY_KEY: [t.key for t in turns],
            "tenant_id": [t.tenant_id for t in turns],
            "session_id": [t.session_id for t in turns],
            "turn_id": [t.turn_id for t in turns],
            "turn_index": [t.turn_index for t in turns],
            "text": list(texts) if texts is not None else [memory_text(t) for t in turns],
            "vector": [list(v) for v in vectors],
            "model_id": [model_id] * len(turns),
            "created_at_ns": [now] * len(turns),
            "user_id": [t.user_id for t in turns],
            "completed_at_ns": [t.completed_at_ns for t in turns],
        },
    )
