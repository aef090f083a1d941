"""A swapped embedding model is detected at open, and ``reembed`` rewrites the rows of the old one."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from salon.engine.cli import main
from salon.storage.embedding import HashEmbedder
from salon.storage.errors import FailedPrecondition
from salon.storage.knowledge import Document
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.lance.memories import MEMORIES
from salon.storage.lance.reembed import reembed
from salon.storage.lance.retrieval import LanceRetriever
from salon.storage.records import TurnRecord
from salon.storage.retrieval import RetrievalQuery
from salon.storage.tables import KNOWLEDGE_TABLE, TranscriptStore

WHEN = int(datetime(2026, 5, 14, 12, 0, tzinfo=UTC).timestamp() * 1e9)


class OtherModel(HashEmbedder):
    """Vectors of the same size from "another model"."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.model_id = "another-model@1"


def turn(index: int, user: str) -> TurnRecord:
    return TurnRecord("acme", "s1", f"t{index}", "1", index, "completed", user, "noted", completed_at_ns=WHEN)


async def _one(document: Document) -> AsyncIterator[Document]:
    yield document


async def _fill(uri: str) -> None:
    """Memories and knowledge embedded by the hash model, the memories with their text of before."""
    store = await TranscriptStore.open(uri, embedder=HashEmbedder(64))
    kb = await KnowledgeBase.open(uri, HashEmbedder(64))
    try:
        await store.write([turn(1, "the wifi password is hunter2"), turn(2, "we adopted a beagle")], [])
        async for result in kb.ingest("acme", _one(Document("dogs", "dog licences cost ten euros a year"))):
            assert not result.error_reason
    finally:
        await kb.close()
        await store.close()


async def test_tables_of_another_model_are_refused_until_reembedded(tmp_path: Path) -> None:
    uri = str(tmp_path / "lance")
    await _fill(uri)
    other = OtherModel()
    with pytest.raises(FailedPrecondition) as refused:
        await LanceRetriever.open(uri, other)
    assert refused.value.reason == "EMBEDDING_MODEL_MISMATCH"
    assert "salon reembed" in refused.value.message
    with pytest.raises(FailedPrecondition):
        await KnowledgeBase.open(uri, other)

    progress: list[tuple[str, int, int]] = []
    assert await reembed(uri, other, progress=lambda *step: progress.append(step)) == 3
    assert progress == [(MEMORIES, 0, 2), (MEMORIES, 2, 2), (KNOWLEDGE_TABLE, 0, 1), (KNOWLEDGE_TABLE, 1, 1)]
    assert await reembed(uri, other) == 0  # nothing left of the old model

    retriever = await LanceRetriever.open(uri, other)
    try:
        found = await retriever.retrieve(RetrievalQuery("acme", "s1", "wifi password", top_k=1))
        assert found[0].text == "[2026-05-14] user: the wifi password is hunter2\nassistant: noted"
        query = RetrievalQuery("acme", "s1", "dog licences", top_k=3, include_memory=False)
        assert [p.document_id for p in await retriever.retrieve(query)] == ["dogs"]
    finally:
        await retriever.close()


async def test_reembed_refuses_vectors_of_another_size(tmp_path: Path) -> None:
    uri = str(tmp_path / "lance")
    await _fill(uri)
    with pytest.raises(FailedPrecondition) as refused:
        await reembed(uri, HashEmbedder(32))
    assert "dimension" in refused.value.message


async def test_the_command_reembeds_with_the_configured_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SALON_EMBEDDING_MODEL", "hash")
    monkeypatch.delenv("SALON_LANCEDB_URI", raising=False)
    await _fill(str(tmp_path / "lancedb"))
    # The command runs its own event loop: from a worker thread, as a user's shell would.
    assert await asyncio.to_thread(main, ["reembed", "--data-dir", str(tmp_path)]) == 0
    assert "re-embedded 0 rows with hash-bow-64" in capsys.readouterr().err
    assert await asyncio.to_thread(main, ["reembed", "--data-dir", str(tmp_path), "--all"]) == 0
    assert "re-embedded 3 rows" in capsys.readouterr().err
