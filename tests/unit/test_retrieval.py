"""Retrieval from LanceDB: filters and fusion, long-term memory written by the transcript store, and a fact
from far back found by the real model. (The retriever contract, on LanceDB and in memory:
tests/contract/test_retriever.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest

from salon.storage.embedding import HashEmbedder, default_embedder
from salon.storage.errors import InvalidArgument
from salon.storage.knowledge import Document
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.lance.memories import MEMORIES
from salon.storage.lance.retrieval import LanceRetriever, memory_filter
from salon.storage.lance.schemas import TRANSCRIPTS_SCHEMA
from salon.storage.records import TurnRecord
from salon.storage.retrieval import (
    MEMORY,
    Candidate,
    Passage,
    RetrievalQuery,
    fuse,
)
from salon.storage.tables import TRANSCRIPTS, MemoryIndexer, TranscriptStore

DIM = 64


def turn(
    index: int, user: str, reply: str = "noted", *, tenant: str = "acme", session: str = "s1", **fields: object
) -> TurnRecord:
    base = TurnRecord(
        tenant_id=tenant,
        session_id=session,
        turn_id=f"t{index}",
        incarnation="1",
        turn_index=index,
        status="completed",
        user_text=user,
        reply_text=reply,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__(dim=DIM)
        self.texts: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.texts.append(list(texts))
        return await super().embed(texts)


async def _one(document: Document) -> AsyncIterator[Document]:
    yield document


def test_memory_filter_is_built_from_validated_ids_only() -> None:
    assert memory_filter("acme", "s1", ["t2", "t1"]) == (
        "tenant_id = 'acme' AND session_id = 's1' AND turn_id NOT IN ('t1', 't2')"
    )
    with pytest.raises(InvalidArgument):
        memory_filter("acme", "s1", ["t1'"])


def test_fusion_combines_similarity_and_relative_bm25() -> None:
    p = Passage(MEMORY, "s", "t", "x", 0.0, 1)
    fused = fuse([Candidate(p, 0.5, 0.0), Candidate(dataclasses.replace(p, chunk_id="u"), 0.4, 8.0)])
    # 0.85 * cosine + 0.15 * bm25 / best bm25 (the full-text search's own scores, without query text)
    assert [(x.chunk_id, round(x.score, 3)) for x in fused] == [("u", 0.49), ("t", 0.425)]
    assert fuse([Candidate(p, -0.3, 0.0)])[0].score == 0.0


# Long-term memory written by the persistence path


@pytest.fixture
async def embedder() -> CountingEmbedder:
    return CountingEmbedder()


@pytest.fixture
async def store(tmp_path: Path, embedder: CountingEmbedder) -> AsyncIterator[TranscriptStore]:
    opened = await TranscriptStore.open(str(tmp_path / "lance"), embedder=embedder)
    yield opened
    await opened.close()


async def test_each_write_embeds_its_new_completed_turns_in_one_batch(
    store: TranscriptStore, embedder: CountingEmbedder
) -> None:
    turns = [
        turn(1, "first"),
        turn(2, "failed one", status="failed"),
        turn(3, "cancelled one", status="cancelled"),
        turn(4, "rolled back", status="rolled_back"),
        turn(5, "fifth", reply="answer five"),
    ]
    await store.write(turns, [])
    assert embedder.texts == [["first\nnoted", "fifth\nanswer five"]]
    assert await store.count(MEMORIES) == 2
    # Redelivery: nothing embedded again, nothing duplicated; only the new turn is embedded.
    await store.write([*turns, turn(6, "sixth")], [])
    assert embedder.texts[1:] == [["sixth\nnoted"]]
    await store.write(turns, [])
    assert len(embedder.texts) == 2
    assert await store.count(MEMORIES) == 3


async def test_new_memories_are_retrievable_at_once(tmp_path: Path, embedder: CountingEmbedder) -> None:
    uri = str(tmp_path / "lance")
    store = await TranscriptStore.open(uri, embedder=embedder)
    retriever = await LanceRetriever.open(uri, embedder)
    try:
        assert await retriever.retrieve(RetrievalQuery("acme", "s1", "anything")) == []
        await store.write([turn(1, "the first thing")], [])  # also creates the indexes
        await store.write([turn(2, "the wifi password is hunter2")], [])
        found = await retriever.retrieve(RetrievalQuery("acme", "s1", "wifi password", top_k=1))
        assert [(p.chunk_id, p.turn_index) for p in found] == [("t2", 2)]
        assert found[0].table_version >= 2
    finally:
        await retriever.close()
        await store.close()


async def test_deleting_a_session_deletes_its_memories(tmp_path: Path, embedder: CountingEmbedder) -> None:
    uri = str(tmp_path / "lance")
    writer = await TranscriptStore.open(uri, embedder=embedder)
    # A store without an embedder (the gateway's) opened before the memories table existed.
    gateway_side = await TranscriptStore.open(str(tmp_path / "lance"))
    try:
        await writer.write([turn(1, "keep me", session="other"), turn(1, "forget me")], [])
        await gateway_side.delete_session("acme", "s1")
        assert await writer.count(MEMORIES, "session_id = 's1'") == 0
        assert await writer.count(MEMORIES, "session_id = 'other'") == 1
    finally:
        await writer.close()
        await gateway_side.close()


async def test_a_transcripts_table_without_context_json_or_tools_is_migrated(tmp_path: Path) -> None:
    uri = str(tmp_path / "lance")
    added = ("context_json", "model_rounds", "tools_json")
    old_schema = pa.schema([f for f in TRANSCRIPTS_SCHEMA if f.name not in added])
    db = await lancedb.connect_async(uri)
    old_row = {f.name: _default(f.type) for f in old_schema}
    old_row.update(turn_key="acme.s1.t1", tenant_id="acme", session_id="s1", turn_id="t1", turn_index=1)
    table = await db.create_table(TRANSCRIPTS, data=pa.Table.from_pylist([old_row], schema=old_schema))
    table.close()  # type: ignore[no-untyped-call]
    db.close()  # type: ignore[no-untyped-call]
    store = await TranscriptStore.open(uri)
    try:
        (old,) = await store.history("acme", "s1")
        assert old.turn_id == "t1"
        assert (old.context_json, old.model_rounds, old.tool_calls) == ("", 0, ())
        await store.write([turn(2, "new", context_json='{"window": []}', model_rounds=2)], [])
        assert [t.context_json for t in await store.history("acme", "s1")] == ["", '{"window": []}']
        assert [t.model_rounds for t in await store.history("acme", "s1")] == [0, 2]
    finally:
        await store.close()


def _default(type_: pa.DataType) -> object:
    if pa.types.is_string(type_):
        return ""
    if pa.types.is_list(type_):
        return []
    if pa.types.is_boolean(type_):
        return False
    if pa.types.is_floating(type_):
        return 0.0
    return 0


# The real model


async def test_a_fact_from_far_back_is_retrieved_with_the_real_model(tmp_path: Path) -> None:
    model = default_embedder()
    uri = str(tmp_path / "lance")
    store = await TranscriptStore.open(uri, embedder=model)
    topics = ["the weather", "a football match", "cooking pasta", "a train delay", "a new phone", "gardening"]
    turns = [
        turn(i, f"Let's talk about {topics[i % len(topics)]} for a moment (message {i}).", "Sure.")
        for i in range(1, 201)
    ]
    turns[2] = turn(3, "By the way, my sister's name is Margarethe and she lives in Porto.", "Nice to know!")
    await store.write(turns[:100], [])
    await store.write(turns[100:], [])
    retriever = await LanceRetriever.open(uri, model)
    try:
        window = frozenset(t.turn_id for t in turns[-10:])
        query = RetrievalQuery("acme", "s1", "Where does my sister live?", top_k=3, exclude_turn_ids=window)
        found = await retriever.retrieve(query)
        assert found[0].chunk_id == "t3"
        assert found[0].score > found[1].score
    finally:
        await retriever.close()
        await store.close()


async def test_tables_opened_by_many_connections_at_once_all_open(tmp_path: Path) -> None:
    # At engine start the gateway, every host and the writer open the same tables concurrently.
    for attempt in range(5):
        uri = str(tmp_path / f"race-{attempt}")
        embedder = HashEmbedder(dim=DIM)
        opened = await asyncio.gather(
            *(LanceRetriever.open(uri, embedder) for _ in range(3)),
            KnowledgeBase.open(uri, embedder),
            TranscriptStore.open(uri, embedder=embedder),
        )
        for item in opened:
            await item.close()


class BrokenEmbedder(HashEmbedder):
    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise RuntimeError("model crashed")


async def test_a_failing_embedder_fails_the_retrieval_and_leaves_no_search_running(tmp_path: Path) -> None:
    uri = str(tmp_path / "lance")
    store = await TranscriptStore.open(uri, embedder=HashEmbedder(dim=DIM))
    await store.write([turn(1, "something to find")], [])
    await store.close()
    retriever = await LanceRetriever.open(uri, BrokenEmbedder(dim=DIM))
    try:
        before = asyncio.all_tasks()
        with pytest.raises(RuntimeError, match="model crashed"):
            await retriever.retrieve(RetrievalQuery("acme", "s1", "something"))
        assert asyncio.all_tasks() == before
    finally:
        await retriever.close()


async def test_the_memory_indexer_writes_memories_only_and_tolerates_redelivery(
    tmp_path: Path, embedder: CountingEmbedder
) -> None:
    uri = str(tmp_path / "lance")
    store = await TranscriptStore.open(uri, embedder=embedder)
    try:
        indexer = MemoryIndexer(store)
        turns = [turn(1, "the gate code is 4711"), turn(2, "failed", status="failed")]
        await indexer.write(turns, [])
        await indexer.write(turns, [])  # redelivered by its consumer
        await indexer.optimize()
        assert await store.count(MEMORIES) == 1
        assert embedder.texts == [["the gate code is 4711\nnoted"]]
        # The transcript writer owns the transcripts: the indexer never writes them.
        assert await store.count(TRANSCRIPTS) == 0
    finally:
        await store.close()
    bare = await TranscriptStore.open(uri)
    try:
        with pytest.raises(RuntimeError):
            await bare.remember(turns)
    finally:
        await bare.close()


async def test_nothing_to_search_costs_no_query_embedding(tmp_path: Path, embedder: CountingEmbedder) -> None:
    uri = str(tmp_path / "lance")
    kb = await KnowledgeBase.open(uri, embedder)
    retriever = await LanceRetriever.open(uri, embedder)
    try:
        # A tenant without documents, and no memory to search (the session's turns are all in its window).
        query = RetrievalQuery("acme", "s1", "anything at all", include_memory=False)
        assert await retriever.retrieve(query) == []
        assert embedder.texts == []
        async for result in kb.ingest("acme", _one(Document("dogs", "dog licences cost ten euros a year"))):
            assert result.ok
        embedder.texts.clear()

        async def found() -> list[Passage]:
            return await retriever.retrieve(RetrievalQuery("acme", "s1", "dog licence", include_memory=False))

        # A first document is searched within NO_KNOWLEDGE_SEEN_S (the absence is remembered that long).
        deadline = asyncio.get_running_loop().time() + 10
        while not (passages := await found()):
            assert asyncio.get_running_loop().time() < deadline, "the new document was never searched"
            await asyncio.sleep(0.05)  # wait-ok: polling a condition with a deadline
        assert passages[0].document_id == "dogs" and embedder.texts
    finally:
        await retriever.close()
        await kb.close()
