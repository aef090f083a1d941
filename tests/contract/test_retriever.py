"""The retriever contract (:class:`salon.storage.retrieval.Retriever`), on LanceDB (in the test's temp dir) and in
memory: tenant and session isolation, excluded turns, top_k, min_score, sources, ids checked, query text
never read as query syntax."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from salon.storage import Document, Passage, RetrievalQuery, Retriever, TurnRecord
from salon.storage.embedding import HashEmbedder
from salon.storage.errors import InvalidArgument
from salon.storage.inmemory import InMemoryRetriever
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.lance.memories import memory_text
from salon.storage.lance.retrieval import LanceRetriever
from salon.storage.retrieval import KNOWLEDGE, MEMORY
from salon.storage.tables import TranscriptStore

DIM = 64

# What every retriever holds: (tenant, session, turn index, user text).
MEMORY_ROWS = [
    ("acme", "s1", 1, "my dog is called biscuit"),
    ("acme", "s1", 2, "i work as a nurse in lisbon"),
    ("acme", "s1", 3, "the dog biscuit loves the beach"),
    ("acme", "s2", 1, "my dog is called rex"),
    ("globex", "s1", 1, "my dog is called shadow"),
]
KNOWLEDGE_ROWS = [
    ("acme", "dogs", "dog licences cost ten euros a year"),
    ("globex", "dogs", "globex dog policy secret"),
]


def turn(index: int, user: str, *, tenant: str, session: str) -> TurnRecord:
    """A completed turn of ``session``: what the transcript store remembers."""
    return TurnRecord(
        tenant_id=tenant,
        session_id=session,
        turn_id=f"t{index}",
        incarnation="1",
        turn_index=index,
        status="completed",
        user_text=user,
        reply_text="noted",
    )


async def lance_retriever(tmp_path: Path) -> AsyncIterator[Retriever]:
    uri = str(tmp_path / "lance")
    embedder = HashEmbedder(dim=DIM)
    store = await TranscriptStore.open(uri, embedder=embedder)
    kb = await KnowledgeBase.open(uri, embedder)
    try:
        turns = [turn(i, text, tenant=t, session=s) for t, s, i, text in MEMORY_ROWS]
        await store.write(turns, [])
        for tenant, doc_id, text in KNOWLEDGE_ROWS:
            async for result in kb.ingest(tenant, _one(Document(doc_id, text))):
                assert result.ok
    finally:
        await store.close()
        await kb.close()
    retriever = await LanceRetriever.open(uri, embedder)
    yield retriever
    await retriever.close()


async def memory_retriever(tmp_path: Path) -> AsyncIterator[Retriever]:
    retriever = InMemoryRetriever(HashEmbedder(dim=DIM))
    for tenant, session, index, text in MEMORY_ROWS:
        t = turn(index, text, tenant=tenant, session=session)
        retriever.add(Passage(MEMORY, session, t.turn_id, memory_text(t), 0.0, 0, turn_index=index), tenant, session)
    for tenant, doc_id, text in KNOWLEDGE_ROWS:
        retriever.add(Passage(KNOWLEDGE, doc_id, f"{doc_id}#0", text, 0.0, 0), tenant)
    yield retriever


async def _one(document: Document) -> AsyncIterator[Document]:
    yield document


@pytest.fixture(params=["lance", "in-memory"])
async def retriever(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Retriever]:
    make = lance_retriever if request.param == "lance" else memory_retriever
    async for r in make(tmp_path):
        yield r


def keys(passages: list[Passage]) -> set[tuple[str, str, str]]:
    return {(p.source, p.document_id, p.chunk_id) for p in passages}


async def test_memories_come_from_the_session_and_knowledge_from_the_tenant(
    retriever: Retriever,
) -> None:
    found = await retriever.retrieve(RetrievalQuery("acme", "s1", "what is my dog called", top_k=10))
    assert keys(found) == {
        (MEMORY, "s1", "t1"),
        (MEMORY, "s1", "t2"),
        (MEMORY, "s1", "t3"),
        (KNOWLEDGE, "dogs", "dogs#0"),
    }
    assert found[0].chunk_id == "t1"
    assert found[0].text == "user: my dog is called biscuit\nassistant: noted"
    assert found[0].turn_index == 1
    assert [p.score for p in found] == sorted((p.score for p in found), reverse=True)
    assert all(0.0 <= p.score <= 1.0 for p in found)
    assert "globex" not in " ".join(p.text for p in found)
    other = await retriever.retrieve(RetrievalQuery("globex", "s1", "what is my dog called", top_k=10))
    assert {p.text.split()[-1] for p in other if p.source == KNOWLEDGE} == {"secret"}
    assert all("shadow" in p.text for p in other if p.source == MEMORY)


async def test_turns_in_the_window_are_never_returned(retriever: Retriever) -> None:
    query = RetrievalQuery("acme", "s1", "my dog biscuit", top_k=10, exclude_turn_ids=frozenset({"t1", "t3"}))
    found = await retriever.retrieve(query)
    assert {p.chunk_id for p in found if p.source == MEMORY} == {"t2"}


async def test_top_k_min_score_and_sources(retriever: Retriever) -> None:
    base = RetrievalQuery("acme", "s1", "my dog is called biscuit", top_k=10)
    assert len(await retriever.retrieve(dataclasses.replace(base, top_k=2))) == 2
    assert await retriever.retrieve(dataclasses.replace(base, top_k=0)) == []
    everything = await retriever.retrieve(base)
    threshold = everything[1].score
    above = await retriever.retrieve(dataclasses.replace(base, min_score=threshold))
    assert above == [p for p in everything if p.score >= threshold]
    assert len(above) < len(everything)
    only_memory = await retriever.retrieve(dataclasses.replace(base, include_knowledge=False))
    assert {p.source for p in only_memory} == {MEMORY}
    only_knowledge = await retriever.retrieve(dataclasses.replace(base, include_memory=False))
    assert {p.source for p in only_knowledge} == {KNOWLEDGE}
    assert await retriever.retrieve(dataclasses.replace(base, include_memory=False, include_knowledge=False)) == []


@pytest.mark.parametrize(
    "query",
    [
        RetrievalQuery("acme' OR '1'='1", "s1", "dog"),
        RetrievalQuery("acme", "s1' OR session_id != '", "dog"),
        RetrievalQuery("acme", "s1", "dog", exclude_turn_ids=frozenset({"t1') OR ('a'='a"})),
        RetrievalQuery("", "s1", "dog"),
    ],
)
async def test_bad_ids_are_refused(retriever: Retriever, query: RetrievalQuery) -> None:
    with pytest.raises(InvalidArgument):
        await retriever.retrieve(query)


async def test_query_text_is_never_query_syntax(retriever: Retriever) -> None:
    for text in ['"dog" AND (biscuit:', "title:dog OR *", "'; DROP TABLE memories; --", "", "   "]:
        found = await retriever.retrieve(RetrievalQuery("acme", "s1", text, top_k=10))
        assert all(p.source == KNOWLEDGE or p.document_id == "s1" for p in found)
