"""The ANN index of large tables: a knowledge or memories table past the (here small) threshold gets an IVF_PQ
index from its writer, in the background, and searches through it return what an exact search returns; a
table below the threshold gets none."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from test_tables import turn

from salon.storage import Document, HashEmbedder, RetrievalQuery
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.lance.retrieval import LanceRetriever
from salon.storage.lance.vector_index import SearchPlanner, has_vector_index, tune
from salon.storage.tables import MEMORIES, TranscriptStore

WORDS = [f"w{i}" for i in range(400)]
THRESHOLD = 300


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(n)]


async def documents(items: Sequence[str]) -> AsyncIterator[Document]:
    for i, text in enumerate(items):
        yield Document(f"d{i}", text)


async def ids_of(table: object, vector: list[float], *, exact: bool) -> list[str]:
    search = table.query().nearest_to(vector).column("vector").distance_type("cosine")  # type: ignore[attr-defined]
    search = search.bypass_vector_index() if exact else tune(search)
    rows = await search.select(["chunk_key"]).limit(10).to_arrow()
    return [str(k) for k in rows.column("chunk_key").to_pylist()]


async def test_a_knowledge_table_past_the_threshold_gets_an_index_and_searches_stay_correct(tmp_path: Path) -> None:
    embedder = HashEmbedder()
    uri = str(tmp_path / "lancedb")
    corpus = [*texts(THRESHOLD + 20, seed=1), "the wifi password is heliotrope"]
    kb = await KnowledgeBase.open(uri, embedder, vector_index_min_rows=THRESHOLD)
    try:
        async for result in kb.ingest("acme", documents(corpus)):
            assert result.ok
        await kb.vector_index.wait()
        assert kb.vector_index.indexed
        table = kb._table
        assert await has_vector_index(table)
        # Through the index (its search settings) the same rows come back as from an exact search.
        for query in [*texts(5, seed=2), "wifi password"]:
            (vector,) = await embedder.embed([query])
            assert await ids_of(table, vector, exact=False) == await ids_of(table, vector, exact=True)
        hits = await kb.search("acme", "what is the wifi password", top_k=3)
        assert hits[0].document_id == f"d{len(corpus) - 1}"
        # A wide prefilter goes through the index, a narrow one is searched exactly.
        plan = SearchPlanner(table, max_exact_rows=100)
        assert not await plan.exact("tenant_id = 'acme'")
        assert await plan.exact("document_id IN ('d1', 'd2')")
    finally:
        await kb.close()


async def test_a_knowledge_table_below_the_threshold_gets_no_index(tmp_path: Path) -> None:
    kb = await KnowledgeBase.open(str(tmp_path / "lancedb"), HashEmbedder(), vector_index_min_rows=10_000)
    try:
        async for result in kb.ingest("acme", documents(texts(40, seed=3))):
            assert result.ok
        await kb.vector_index.wait()
        assert not kb.vector_index.indexed
        assert not await has_vector_index(kb._table)
        assert await SearchPlanner(kb._table, max_exact_rows=1).exact("tenant_id = 'acme'")  # no index: exact
    finally:
        await kb.close()


async def test_memories_past_the_threshold_get_an_index_from_the_memory_store(tmp_path: Path) -> None:
    uri = str(tmp_path / "lancedb")
    embedder = HashEmbedder()
    store = await TranscriptStore.open(uri, embedder=embedder, vector_index_min_rows=THRESHOLD)
    try:
        lines = texts(THRESHOLD + 10, seed=4)
        turns = [turn(i, session=f"s{i % 7}", user_text=line) for i, line in enumerate(lines, start=1)]
        turns.append(turn(len(turns) + 1, session="s1", user_text="my cat is called marmalade"))
        await store.remember(turns)
        assert store.vector_index is not None and not store.vector_index.indexed
        await store.optimize((MEMORIES,))  # the memory indexer's periodic maintenance starts the build
        await store.vector_index.wait()
        assert store.vector_index.indexed
        assert await has_vector_index(store._tables[MEMORIES])
    finally:
        await store.close()
    retriever = await LanceRetriever.open(uri, embedder)
    try:
        found = await retriever.retrieve(
            RetrievalQuery("acme", "s1", "what is my cat called", top_k=3, include_knowledge=False)
        )
        assert found[0].chunk_id == f"t{len(turns)}"
        assert all(p.document_id == "s1" for p in found)  # the session prefilter holds through the index
    finally:
        await retriever.close()
