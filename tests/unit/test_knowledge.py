"""The knowledge base on a real LanceDB directory (hash embedder): ingestion, replacement, bad documents,
deletion, search and tenant isolation."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from pathlib import Path

import pytest

from salon.storage.embedding import HashEmbedder
from salon.storage.errors import InvalidArgument, Unavailable
from salon.storage.knowledge import (
    DOCUMENT_TOO_LARGE,
    EMPTY_DOCUMENT,
    INVALID_DOCUMENT_ID,
    TITLE_TOO_LONG,
    UNREADABLE_DOCUMENT,
    UNSUPPORTED_MEDIA_TYPE,
    Document,
    IngestResult,
)
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.lance.retrieval import search_table
from salon.storage.retrieval import KNOWLEDGE

REFUNDS = Document(
    "refunds",
    "# Refunds\n\nA customer may return an item within thirty days for a refund.\n\n"
    "# Shipping\n\nParcels ship to the EU and the UK within two days.",
    title="Policy",
    media_type="text/markdown",
)
CAT = Document("office-cat", "The office cat is named Whiskers and sleeps near the printer.")


class CountingEmbedder(HashEmbedder):
    """A hash embedder that counts its calls."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.calls = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        return await super().embed(texts)


@pytest.fixture
async def kb(tmp_path: Path) -> AsyncIterator[KnowledgeBase]:
    opened = await KnowledgeBase.open(str(tmp_path / "lance"), CountingEmbedder(), max_document_bytes=4096)
    yield opened
    await opened.close()


async def stream(documents: Iterable[Document]) -> AsyncIterator[Document]:
    for document in documents:
        yield document


async def ingest(kb: KnowledgeBase, tenant: str, documents: Iterable[Document]) -> list[IngestResult]:
    return [r async for r in kb.ingest(tenant, stream(documents))]


async def test_ingested_documents_are_found_by_search(kb: KnowledgeBase) -> None:
    results = await ingest(kb, "acme", [REFUNDS, CAT])
    assert results == [IngestResult("refunds", chunks=2), IngestResult("office-cat", chunks=1)]
    passages = await kb.search("acme", "what is the name of the office cat", top_k=2)
    assert passages[0].source == KNOWLEDGE
    assert passages[0].document_id == "office-cat"
    assert passages[0].chunk_id == "office-cat#0"
    assert passages[0].text == CAT.text
    assert passages[0].table_version > 0
    assert 0 < passages[0].score <= 1
    refund = (await kb.search("acme", "return an item for a refund", top_k=1))[0]
    assert (refund.chunk_id, refund.title) == ("refunds#0", "Policy / Refunds")


async def test_a_bad_document_gets_its_reason_and_does_not_stop_the_others(kb: KnowledgeBase) -> None:
    secret = "confidential words that must not be echoed"
    documents = [
        Document("bad id!", secret),
        CAT,
        Document("empty", "  \n\n "),
        Document("huge", secret * 200),
        Document("png", secret, media_type="image/png"),
        Document("pdf-as-text", secret, media_type="application/pdf"),
        Document("long-title", secret, title="t" * 600),
        Document("md", "# Only text\n\nshort", media_type="text/markdown; charset=utf-8"),
        Document("plain", "no media type given", media_type=""),
    ]
    results = await ingest(kb, "acme", documents)
    assert [(r.document_id, r.error_reason) for r in results] == [
        ("bad id!", INVALID_DOCUMENT_ID),
        ("office-cat", ""),
        ("empty", EMPTY_DOCUMENT),
        ("huge", DOCUMENT_TOO_LARGE),
        ("png", UNSUPPORTED_MEDIA_TYPE),
        ("pdf-as-text", UNREADABLE_DOCUMENT),
        ("long-title", TITLE_TOO_LONG),
        ("md", ""),
        ("plain", ""),
    ]
    for r in results:
        assert r.ok == (r.error_reason == "")
        assert (r.chunks > 0) == r.ok
        assert "confidential" not in r.error_message
        assert bool(r.error_message) == (not r.ok)
    assert await kb.count_chunks("acme") == 3


async def test_reingesting_a_document_replaces_it(kb: KnowledgeBase) -> None:
    long_text = "\n\n".join(f"Paragraph {i} about the old refund policy. " * 8 for i in range(6))
    first = await ingest(kb, "acme", [Document("policy", long_text)])
    assert first[0].chunks > 2
    await ingest(kb, "acme", [Document("policy", "Refunds are no longer offered.")])
    assert await kb.count_chunks("acme", "policy") == 1
    texts = [p.text for p in await kb.search("acme", "refund policy", top_k=10)]
    assert texts == ["Refunds are no longer offered."]


async def test_a_document_given_twice_in_one_stream_ends_as_the_later_one(kb: KnowledgeBase) -> None:
    results = await ingest(kb, "acme", [Document("d", "first version"), Document("d", "second version")])
    assert [r.ok for r in results] == [True, True]
    assert [p.text for p in await kb.search("acme", "version", top_k=5)] == ["second version"]


async def test_tenants_never_see_each_others_documents(kb: KnowledgeBase) -> None:
    await ingest(kb, "tenant-a", [CAT])
    await ingest(kb, "tenant-b", [REFUNDS])
    assert {p.document_id for p in await kb.search("tenant-b", "office cat Whiskers", top_k=10)} == {"refunds"}
    assert {p.document_id for p in await kb.search("tenant-a", "refund", top_k=10)} == {"office-cat"}
    # Deleting another tenant's document id deletes nothing.
    assert await kb.delete("tenant-b", ["office-cat"]) == 0
    assert await kb.count_chunks("tenant-a") == 1
    # The same document id in two tenants is two documents.
    await ingest(kb, "tenant-b", [Document("office-cat", "tenant b's own cat text")])
    assert [p.text for p in await kb.search("tenant-a", "cat", top_k=5)] == [CAT.text]


async def test_delete_counts_the_documents_that_existed(kb: KnowledgeBase) -> None:
    await ingest(kb, "acme", [REFUNDS, CAT])
    assert await kb.delete("acme", ["refunds", "never-ingested", "refunds"]) == 1
    assert await kb.count_chunks("acme") == 1
    assert await kb.delete("acme", []) == 0
    assert [p.document_id for p in await kb.search("acme", "refund shipping", top_k=5)] == ["office-cat"]


@pytest.mark.parametrize("bad", ["", "a'b", "x' OR tenant_id != 'y", "a" * 65, "dots.are.out"])
async def test_bad_ids_are_refused_before_any_query(kb: KnowledgeBase, bad: str) -> None:
    with pytest.raises(InvalidArgument):
        await kb.search(bad, "anything")
    with pytest.raises(InvalidArgument):
        await kb.delete(bad, ["doc"])
    with pytest.raises(InvalidArgument):
        await kb.delete("acme", [bad])
    with pytest.raises(InvalidArgument):
        await ingest(kb, bad, [CAT])


async def test_new_documents_are_searchable_by_full_text_at_once(kb: KnowledgeBase) -> None:
    await ingest(kb, "acme", [CAT])  # the first write also creates the full-text index
    await ingest(kb, "acme", [Document("codes", "The vault code is zq7xk.")])
    embedder = HashEmbedder(dim=64)
    (vector,) = await embedder.embed(["zq7xk"])
    table = kb._table
    candidates = await search_table(table, KNOWLEDGE, where="tenant_id = 'acme'", text="zq7xk", vector=vector, limit=5)
    lexical = {c.passage.document_id: c.bm25 for c in candidates if c.bm25 > 0}
    assert set(lexical) == {"codes"}


async def test_documents_waiting_together_are_embedded_in_one_batch(kb: KnowledgeBase, tmp_path: Path) -> None:
    embedder = CountingEmbedder()
    batched = await KnowledgeBase.open(str(tmp_path / "other"), embedder)
    try:
        documents = [Document(f"doc-{i}", f"document number {i} text") for i in range(40)]
        results = await ingest(batched, "acme", documents)
        assert [r.document_id for r in results] == [d.document_id for d in documents]
        assert all(r.ok for r in results)
        assert embedder.calls < len(documents) / 4
    finally:
        await batched.close()


async def test_a_failing_source_stops_after_the_results_already_given(kb: KnowledgeBase) -> None:
    async def failing() -> AsyncIterator[Document]:
        yield CAT
        raise ConnectionResetError("client went away")

    seen: list[IngestResult] = []
    with pytest.raises(ConnectionResetError):
        async for result in kb.ingest("acme", failing()):
            seen.append(result)
    assert await kb.count_chunks("acme") == len([r for r in seen if r.ok])


async def test_a_closed_knowledge_base_refuses_calls(tmp_path: Path) -> None:
    opened = await KnowledgeBase.open(str(tmp_path / "closed"), HashEmbedder(dim=64))
    await opened.close()
    await opened.close()
    with pytest.raises(Unavailable):
        await opened.search("acme", "x")


async def test_documents_persist_across_reopen(tmp_path: Path) -> None:
    uri = str(tmp_path / "persist")
    first = await KnowledgeBase.open(uri, HashEmbedder(dim=64))
    await ingest(first, "acme", [CAT])
    await first.close()
    second = await KnowledgeBase.open(uri, HashEmbedder(dim=64))
    try:
        assert [p.document_id for p in await second.search("acme", "office cat")] == ["office-cat"]
    finally:
        await second.close()


async def test_bad_settings_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        await KnowledgeBase.open(str(tmp_path / "x"), HashEmbedder(), chunk_tokens=10, overlap_tokens=10)


async def test_an_ingestion_leaves_the_table_compacted_and_indexed(kb: KnowledgeBase) -> None:
    await ingest(kb, "acme", [CAT])  # the first write creates the indexes
    await ingest(kb, "acme", [Document(f"doc-{i}", f"document number {i} " * 60) for i in range(40)])
    table = kb._table
    stats = await table.stats()
    # The 40 documents came in 3 or more batches, each writing a fragment; compaction merged them (LanceDB
    # may leave the first, already indexed fragment on its own until a later optimize).
    assert stats["fragment_stats"]["num_fragments"] <= 2
    assert {index.name: index.num_unindexed_rows for index in await table.list_indices()}["text_idx"] == 0
    assert [p.document_id for p in await kb.search("acme", "Whiskers near the printer", top_k=1)] == ["office-cat"]
