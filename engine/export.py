"""``salon export``: a session's transcript as Parquet or Arrow IPC, in the transcripts table's schema."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import ipc

from salon.storage import NotFound, require_id
from salon.storage.lance.schemas import TRANSCRIPTS_SCHEMA, turns_to_batch
from salon.storage.reasons import Reason
from salon.storage.tables import TranscriptStore

FORMATS = ("parquet", "arrow")
PAGE = 1000


async def export_session(
    lancedb_uri: str,
    tenant_id: str,
    session_id: str,
    output: Path,
    fmt: str,
    *,
    storage_options: Mapping[str, str] | None = None,
) -> int:
    """Write every stored turn of the session to ``output``; returns the number of turns (``storage_options``:
    those of an object-store ``lancedb_uri``).

    Reads the tables directly, so it works with the engine stopped. A running engine's last turns reach the
    tables within the writer's flush interval; a stopped engine has flushed everything it acknowledged.
    """
    require_id(tenant_id, "tenant_id")
    require_id(session_id, "session_id")
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    store = await TranscriptStore.open(lancedb_uri, storage_options=storage_options)
    try:
        batches: list[pa.RecordBatch] = []
        after = 0
        while True:
            page = await store.history(tenant_id, session_id, after_turn_index=after, limit=PAGE)
            if not page:
                break
            batches.append(turns_to_batch(page))
            after = page[-1].turn_index
    finally:
        await store.close()
    if not batches:
        raise NotFound("session not found", reason=Reason.SESSION_NOT_FOUND)
    table = pa.Table.from_batches(batches, schema=TRANSCRIPTS_SCHEMA)
    output.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "parquet":
        pq.write_table(table, output)
    else:
        with pa.OSFile(str(output), "wb") as sink, ipc.new_file(sink, TRANSCRIPTS_SCHEMA) as writer:
            writer.write_table(table)
    return int(table.num_rows)
