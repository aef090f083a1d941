"""Each store indexes only the tables it writes: the memory indexer's store and the transcript writer's store
share a LanceDB, and the first turn used to have both make the transcripts' indexes at once (one of them
failing with a commit conflict and a warning in the operator's terminal)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from test_tables import turn

from salon.storage import HashEmbedder
from salon.storage.tables import MEMORIES, SNAPSHOTS, TRANSCRIPTS, TranscriptStore, has_indexes


async def test_the_transcript_and_memory_stores_make_their_indexes_without_a_conflict(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    uri = str(tmp_path / "lancedb")
    transcripts = await TranscriptStore.open(uri)
    memories = await TranscriptStore.open(uri, embedder=HashEmbedder())
    try:
        with caplog.at_level(logging.DEBUG, logger="salon.storage.tables"):
            for index in (1, 2):
                # As in the writer process: the ledger's two consumers write the same turn at about once.
                await asyncio.gather(transcripts.write([turn(index)], []), memories.remember([turn(index)]))
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
        made = [r.getMessage() for r in caplog.records if r.getMessage().startswith("created the indexes")]
        assert sorted(made) == [f"created the indexes of {MEMORIES}", f"created the indexes of {TRANSCRIPTS}"]
        assert await has_indexes(transcripts._tables[TRANSCRIPTS], transcripts._specs[TRANSCRIPTS])
        assert await has_indexes(memories._tables[MEMORIES], memories._specs[MEMORIES])
        assert SNAPSHOTS not in transcripts._indexed, "a table without rows gets no index yet"
    finally:
        await transcripts.close()
        await memories.close()
