"""Which embedding model made the vectors of ``memories`` and ``knowledge``, and re-embedding them with
another (``salon reembed``).

Every row carries the id of the model that embedded it (``model_id``). Vectors of two models are not
comparable, so a process that would search or write a table embedded by another model refuses to start
(:func:`check_model`, reason ``EMBEDDING_MODEL_MISMATCH``) and names the command that fixes it, instead of
silently retrieving noise. :func:`reembed` rewrites the rows of another model (or every row): memories from
their turns in ``transcripts`` (so they also get today's indexed text: speaker and date), knowledge chunks
from their title and text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import pyarrow as pa
from lancedb.table import AsyncTable

from salon.storage.embedding import Embedder
from salon.storage.errors import FailedPrecondition
from salon.storage.lance.connection import connect
from salon.storage.lance.memories import MEMORIES, memory_text, memory_words
from salon.storage.lance.schemas import CHUNK_KEY, MEMORY_KEY, TEXT, TURN_KEY, VECTOR, vector_type
from salon.storage.records import TurnRecord
from salon.storage.tables import KNOWLEDGE_TABLE, TRANSCRIPTS, UNREADABLE, UNWRITABLE, open_existing, store_errors

MISMATCH: Final = "EMBEDDING_MODEL_MISMATCH"
BATCH_ROWS: Final = 256
"""Rows re-embedded and written per step (one embedding call, one merge)."""
KEYS: Final = {MEMORIES: MEMORY_KEY, KNOWLEDGE_TABLE: CHUNK_KEY}

Progress = Callable[[str, int, int], None]
"""Called with (table, rows done, rows to do) as :func:`reembed` goes."""


async def check_model(table: AsyncTable, name: str, embedder: Embedder) -> None:
    """Raise :class:`FailedPrecondition` if ``table``'s rows were embedded by another model than ``embedder``.

    Reads one row: a table is embedded by one model, or is being re-embedded (then its first rows, in the
    oldest fragments, are the last to be rewritten)."""
    with store_errors(f"cannot read the {name} table", UNREADABLE):
        rows = await table.query().select(["model_id"]).limit(1).to_arrow()
    if rows.num_rows == 0:
        return
    found = str(rows.column("model_id")[0].as_py())
    if found != embedder.model_id:
        raise FailedPrecondition(
            f"the {name} table was embedded with {found} and this engine embeds with {embedder.model_id}; "
            "run `salon reembed` (with the same data directory) to re-embed it",
            reason=MISMATCH,
        )


async def reembed(
    uri: str,
    embedder: Embedder,
    *,
    everything: bool = False,
    progress: Progress | None = None,
    storage_options: Mapping[str, str] | None = None,
) -> int:
    """Re-embed the rows of ``memories`` and ``knowledge`` at ``uri`` (with ``storage_options`` for an object
    store) made by another model than ``embedder`` (``everything``: every row); the number of rows rewritten.
    Safe to interrupt and run again: each step rewrites whole rows in one merge. The vectors' dimension must
    stay the same."""
    db = await connect(uri, storage_options=storage_options)
    done = 0
    try:
        transcripts = await open_existing(db, TRANSCRIPTS)
        for name in (MEMORIES, KNOWLEDGE_TABLE):
            table = await open_existing(db, name)
            if table is None:
                continue
            try:
                done += await _reembed_table(
                    table, name, embedder, transcripts=transcripts, everything=everything, progress=progress
                )
            finally:
                table.close()  # type: ignore[no-untyped-call]  # lancedb leaves close() unannotated
        if transcripts is not None:
            transcripts.close()  # type: ignore[no-untyped-call]
    finally:
        db.close()  # type: ignore[no-untyped-call]
    return done


async def _reembed_table(
    table: AsyncTable,
    name: str,
    embedder: Embedder,
    *,
    transcripts: AsyncTable | None,
    everything: bool,
    progress: Progress | None,
) -> int:
    schema = await table.schema()
    if schema.field(VECTOR).type != vector_type(embedder.dim):
        raise FailedPrecondition(
            f"the {name} table holds vectors of another dimension than {embedder.model_id} makes ({embedder.dim}); "
            "re-embedding keeps the dimension: start from an empty data directory and ingest again",
            reason=MISMATCH,
        )
    key = KEYS[name]
    query = table.query().select([key])
    if not everything:
        query = query.where(f"model_id != {_literal(embedder.model_id)}")
    with store_errors(f"cannot read the {name} table", UNREADABLE):
        keys = [str(k) for k in (await query.to_arrow()).column(key).to_pylist()]
    if progress is not None:
        progress(name, 0, len(keys))
    for start in range(0, len(keys), BATCH_ROWS):
        chunk = keys[start : start + BATCH_ROWS]
        where = f"{key} IN ({', '.join(_literal(k) for k in chunk)})"
        with store_errors(f"cannot read the {name} table", UNREADABLE):
            rows = await table.query().where(where).to_arrow()
        if name == MEMORIES:
            texts, embedded = await _memory_texts(rows, transcripts)
        else:
            texts = [str(t) for t in rows.column(TEXT).to_pylist()]
            titles = [str(t) for t in rows.column("title").to_pylist()]
            embedded = [f"{title}\n{text}" if title else text for title, text in zip(titles, texts, strict=True)]
        vectors = await embedder.embed(embedded)
        updated = (
            rows.set_column(rows.schema.get_field_index(TEXT), TEXT, pa.array(texts, pa.string()))
            .set_column(rows.schema.get_field_index(VECTOR), VECTOR, pa.array(vectors, type=vector_type(embedder.dim)))
            .set_column(
                rows.schema.get_field_index("model_id"), "model_id", pa.array([embedder.model_id] * rows.num_rows)
            )
        )
        with store_errors(f"cannot write the {name} table", UNWRITABLE):
            await table.merge_insert(key).when_matched_update_all().execute(updated.cast(schema))
        if progress is not None:
            progress(name, min(start + BATCH_ROWS, len(keys)), len(keys))
    if keys:
        with store_errors(f"cannot write the {name} table", UNWRITABLE):
            await table.optimize()  # the new texts into the full-text index, the rewritten fragments compacted
    return len(keys)


async def _memory_texts(rows: pa.Table, transcripts: AsyncTable | None) -> tuple[list[str], list[str]]:
    """(indexed text, embedded text) of each memory row: from its turn when the transcript has it, else from
    the text it has (without its date, if any)."""
    keys = [str(k) for k in rows.column(MEMORY_KEY).to_pylist()]
    turns: dict[str, TurnRecord] = {}
    if transcripts is not None and keys:
        where = f"{TURN_KEY} IN ({', '.join(_literal(k) for k in keys)})"
        with store_errors("cannot read the transcripts table", UNREADABLE):
            found = await transcripts.query().where(where).select(_TURN_COLUMNS).to_arrow()
        for row in found.to_pylist():
            turns[row[TURN_KEY]] = _turn(row)
    texts: list[str] = []
    embedded: list[str] = []
    for key, text in zip(keys, rows.column(TEXT).to_pylist(), strict=True):
        turn = turns.get(key)
        if turn is None:
            texts.append(str(text))
            embedded.append(str(text))
        else:
            texts.append(memory_text(turn))
            embedded.append(memory_words(turn))
    return texts, embedded


_TURN_COLUMNS: Final = [
    TURN_KEY, "tenant_id", "session_id", "turn_id", "turn_index", "user_text", "reply_text",
    "completed_at_ns", "started_at_ns", "enqueued_at_ns",
]  # fmt: skip


def _turn(row: dict[str, Any]) -> TurnRecord:
    return TurnRecord(
        tenant_id=row["tenant_id"],
        session_id=row["session_id"],
        turn_id=row["turn_id"],
        incarnation="",
        turn_index=row["turn_index"],
        status="completed",
        user_text=row["user_text"],
        reply_text=row["reply_text"],
        completed_at_ns=row["completed_at_ns"],
        started_at_ns=row["started_at_ns"],
        enqueued_at_ns=row["enqueued_at_ns"],
    )


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"
