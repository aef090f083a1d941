"""Storage of issue 16's features against a real LanceDB: PDF/HTML/DOCX documents with their page or heading
in the title, collections and document ids as filters, memory rows carrying the user, user-scoped retrieval,
the do-not-remember flag, erasure by user, and older tables gaining the new columns."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest
from doc_fixtures import docx_bytes, html_page, pdf_bytes

from salon.storage import Document, IngestResult, InvalidArgument, RetrievalQuery, TurnRecord
from salon.storage.documents import DOCX, HTML, PDF, UnreadableDocument, convert
from salon.storage.embedding import HashEmbedder
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.lance.memories import MEMORIES
from salon.storage.lance.memory_search import MemorySearch
from salon.storage.lance.retrieval import LanceRetriever
from salon.storage.lance.schemas import TRANSCRIPTS_SCHEMA, knowledge_schema, memories_schema
from salon.storage.reasons import Reason
from salon.storage.tables import KNOWLEDGE_TABLE, TRANSCRIPTS, TranscriptStore, knowledge_spec, open_table

EMBEDDER = HashEmbedder(dim=64)


async def stream(documents: Iterable[Document]) -> AsyncIterator[Document]:
    for document in documents:
        yield document


@pytest.fixture
async def kb(tmp_path: Path) -> AsyncIterator[KnowledgeBase]:
    opened = await KnowledgeBase.open(str(tmp_path / "lance"), EMBEDDER, max_document_bytes=64 * 1024)
    yield opened
    await opened.close()


async def ingest(kb: KnowledgeBase, documents: Iterable[Document]) -> list[IngestResult]:
    return [r async for r in kb.ingest("acme", stream(documents))]


# Conversion


def test_pdf_pages_html_and_docx_headings_are_kept() -> None:
    pages = convert(PDF, "", pdf_bytes([["Llamas live in the Andes."], ["The boiler (unit B) stays below 2 bar."]]))
    assert [(s.location, s.text) for s in pages] == [
        ("page 1", "Llamas live in the Andes."),
        ("page 2", "The boiler (unit B) stays below 2 bar."),
    ]
    docx = convert(
        DOCX, "", docx_bytes([(1, "Safety"), (0, "Wear gloves."), (2, "Fire"), (0, "Meet in the car park.")])
    )
    assert docx[0].markdown and docx[0].text == "# Safety\n\nWear gloves.\n\n## Fire\n\nMeet in the car park."
    html = convert(HTML, html_page("Guide", [("Parking", "Park behind building C.")]), b"")
    assert html[0].text == "# Guide\n\n## Parking\n\nPark behind building C."
    assert "script text" not in html[0].text and "color" not in html[0].text


@pytest.mark.parametrize(("media_type", "content"), [(PDF, b"%PDF-1.4 not really"), (DOCX, b"PK\x03\x04 broken")])
def test_a_damaged_file_is_unreadable_without_quoting_it(media_type: str, content: bytes) -> None:
    with pytest.raises(UnreadableDocument) as caught:
        convert(media_type, "", content)
    assert "broken" not in str(caught.value) and "really" not in str(caught.value)


async def test_binary_documents_cite_page_and_heading(kb: KnowledgeBase) -> None:
    manual = pdf_bytes([["Introduction to the boiler."], ["The boiler pressure must stay below two bar."]])
    handbook = docx_bytes([(1, "Safety"), (0, "Gloves are kept in the blue cupboard.")])
    page = html_page("Guide", [("Parking", "Visitors park behind building C.")])
    results = await ingest(
        kb,
        [
            Document("manual", "", title="Boiler manual", media_type=PDF, content=manual),
            Document("handbook", "", title="Handbook", media_type=DOCX, content=handbook),
            Document("guide", page, title="Guide", media_type=HTML),
            Document("broken", "", media_type=PDF, content=b"%PDF-1.4 secret words"),
        ],
    )
    assert [(r.document_id, r.error_reason) for r in results] == [
        ("manual", ""),
        ("handbook", ""),
        ("guide", ""),
        ("broken", Reason.UNREADABLE_DOCUMENT),
    ]
    assert "secret" not in results[3].error_message
    (pressure,) = await kb.search("acme", "boiler pressure bar", top_k=1, document_ids=["manual"])
    assert pressure.title == "Boiler manual / page 2" and "two bar" in pressure.text
    (gloves,) = await kb.search("acme", "gloves cupboard", top_k=1, document_ids=["handbook"])
    assert gloves.title == "Handbook / Safety"
    (parking,) = await kb.search("acme", "where do visitors park", top_k=1, document_ids=["guide"])
    assert parking.title == "Guide / Guide / Parking"


# Filters


async def test_collections_and_document_ids_keep_knowledge_bases_apart(kb: KnowledgeBase) -> None:
    await ingest(
        kb,
        [
            Document("leave", "Annual leave is 28 days a year.", collection="hr"),
            Document("wifi", "The wifi password is heliotrope.", collection="it"),
            Document("printer", "The printer is on floor two.", collection="it"),
            Document("loose", "Lunch is at noon."),
        ],
    )
    everything = await kb.search("acme", "days wifi printer lunch", top_k=10)
    assert {p.document_id for p in everything} == {"leave", "wifi", "printer", "loose"}
    it = await kb.search("acme", "days wifi printer lunch", top_k=10, collections=["it"])
    assert {p.document_id for p in it} == {"wifi", "printer"}
    two = await kb.search("acme", "days wifi printer lunch", top_k=10, collections=["hr", "it"], document_ids=["leave"])
    assert {p.document_id for p in two} == {"leave"}
    with pytest.raises(InvalidArgument) as caught:
        await kb.search("acme", "x", collections=["it' OR '1'='1"])
    assert caught.value.reason == Reason.INVALID_COLLECTION
    refused = await ingest(kb, [Document("bad-collection", "text", collection="no spaces")])
    assert refused[0].error_reason == Reason.INVALID_COLLECTION


# Memory of a user


def turn(session: str, index: int, text: str, *, user: str = "alice", forget: bool = False) -> TurnRecord:
    return TurnRecord(
        tenant_id="acme",
        session_id=session,
        turn_id=f"{session}-t{index}",
        incarnation="1",
        turn_index=index,
        status="completed",
        user_text=text,
        reply_text="Noted.",
        completed_at_ns=1_700_000_000_000_000_000 + index,
        user_id=user,
        do_not_remember=forget,
    )


async def test_user_memory_spans_sessions_and_do_not_remember_keeps_a_turn_out(tmp_path: Path) -> None:
    uri = str(tmp_path / "lance")
    store = await TranscriptStore.open(uri, embedder=EMBEDDER)
    retriever = await LanceRetriever.open(uri, EMBEDDER)
    search = await MemorySearch.open(uri, EMBEDDER)
    try:
        await store.write(
            [
                turn("s1", 1, "my favourite colour is vermilion"),
                turn("s1", 2, "the vault code is 8842", forget=True),
                turn("s2", 1, "my dog is called biscuit"),
                turn("s3", 1, "my favourite colour is teal", user="bob"),
            ],
            [],
        )
        assert await store.count(MEMORIES) == 3  # the forgotten turn is only in the transcript
        assert await store.count(TRANSCRIPTS, "do_not_remember = true") == 1
        own = await retriever.retrieve(RetrievalQuery("acme", "s2", "favourite colour", top_k=10))
        assert {p.chunk_id for p in own} == {"s2-t1"}
        users = await retriever.retrieve(
            RetrievalQuery("acme", "s2", "favourite colour", top_k=10, memory_user_id="alice")
        )
        assert {p.chunk_id for p in users} == {"s1-t1", "s2-t1"}
        hits = await search.search("acme", "vault code", user_id="alice", top_k=10)
        assert "s1-t2" not in {p.chunk_id for p in hits}
        (first, *_) = await search.search("acme", "favourite colour vermilion", session_id="s1", top_k=1)
        assert (first.chunk_id, first.turn_index, first.time_ns) == ("s1-t1", 1, 1_700_000_000_000_000_001)
        with pytest.raises(InvalidArgument) as caught:
            await search.search("acme", "x", user_id="bob' OR '1'='1")
        assert caught.value.reason == Reason.INVALID_USER_ID

        assert await store.erase_user("acme", "alice") == 2
        assert await search.search("acme", "colour dog vault", user_id="alice", top_k=10) == []
        assert await store.count(TRANSCRIPTS, "user_id = 'alice'") == 0
        assert await store.count(MEMORIES, "user_id = 'bob'") == 1  # others untouched
    finally:
        await search.close()
        await retriever.close()
        await store.close()


# Older data directories


async def test_older_tables_gain_the_new_columns(tmp_path: Path) -> None:
    uri = str(tmp_path / "lance")
    db = await lancedb.connect_async(uri)
    old_memories = pa.schema([f for f in memories_schema(64) if f.name not in ("user_id", "completed_at_ns")])
    old_knowledge = pa.schema([f for f in knowledge_schema(64) if f.name != "collection"])
    await db.create_table(MEMORIES, schema=old_memories)
    await db.create_table(KNOWLEDGE_TABLE, schema=old_knowledge)
    old_transcripts = pa.schema([f for f in TRANSCRIPTS_SCHEMA if f.name not in ("user_id", "do_not_remember")])
    await db.create_table(TRANSCRIPTS, schema=old_transcripts)
    store = await TranscriptStore.open(uri)
    await store.write([turn("s1", 1, "hello", forget=True)], [])
    assert await store.count(TRANSCRIPTS, "do_not_remember = true AND user_id = 'alice'") == 1
    await store.close()
    search = await MemorySearch.open(uri, EMBEDDER)
    knowledge = await open_table(db, knowledge_spec(64))
    try:
        assert await search.search("acme", "anything", user_id="alice") == []
        assert "collection" in (await knowledge.schema()).names
        memories = await db.open_table(MEMORIES)
        assert {"user_id", "completed_at_ns"} <= set((await memories.schema()).names)
    finally:
        knowledge.close()
        await search.close()


def test_turn_records_without_the_new_fields_still_decode() -> None:
    record = turn("s1", 1, "hello")
    raw = dataclasses.asdict(record)
    del raw["user_id"], raw["do_not_remember"]
    decoded = TurnRecord.from_json(json.dumps(raw).encode())
    assert (decoded.user_id, decoded.do_not_remember) == ("", False)


async def test_processes_opening_an_older_table_at_once_all_get_the_new_columns(tmp_path: Path) -> None:
    # The gateway, each host and the writer open the tables at the same moment at start.
    uri = str(tmp_path / "lance")
    db = await lancedb.connect_async(uri)
    old_memories = pa.schema([f for f in memories_schema(64) if f.name not in ("user_id", "completed_at_ns")])
    await db.create_table(MEMORIES, schema=old_memories)
    opened = await asyncio.gather(*(MemorySearch.open(uri, EMBEDDER) for _ in range(4)))
    try:
        for search in opened:
            assert await search.search("acme", "anything", user_id="alice") == []
    finally:
        for search in opened:
            await search.close()
