"""The knowledge base end to end: ingestion over gRPC with per-document outcomes, citations that point at the
right chunks, replacement on re-ingest, deletion, bad documents that fail alone, `salon ingest`, and tenant
isolation of documents and memories against a real LanceDB."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from conftest import EngineFactory, assert_well_formed, collect_turn, create_session

from salon.actors import LocalInFlight, SessionActor, SessionKey, SessionSettings, SessionState, Turn, TurnEvent
from salon.actors.wire import event_to_proto
from salon.client import Document, SalonClient
from salon.engine.cli import main
from salon.providers import ScriptedProvider
from salon.storage import Document as StoredDocument
from salon.storage import RetrievalQuery, TurnRecord, build_embedder
from salon.storage.inmemory import InMemoryJournal
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.lance.retrieval import LanceRetriever
from salon.storage.tables import TranscriptStore
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import knowledge_service_pb2_grpc as ks_grpc
from salon.v1 import session_pb2, turn_pb2

pytestmark = pytest.mark.integration

HANDBOOK = """# Office handbook

## Network

The office wifi network is called salon-guest. The wifi password is heliotrope-42 and changes every spring.

## Kitchen

The coffee machine is descaled on Fridays. Please rinse your cup.
"""
TRAVEL = "Travel policy: book trains for trips under four hours. Flights need a manager's approval in advance."
MENU = "The canteen serves lentil soup on Mondays and grilled halloumi on Thursdays."
INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def doc(document_id: str, text: str, title: str = "", media_type: str = "") -> ks_pb2.Document:
    return ks_pb2.Document(document_id=document_id, text=text, title=title, media_type=media_type)


async def ingest(
    stub: ks_grpc.KnowledgeServiceStub, *batches: list[ks_pb2.Document]
) -> tuple[list[ks_pb2.DocumentResult], ks_pb2.IngestSummary]:
    async def requests() -> AsyncIterator[ks_pb2.IngestDocumentsRequest]:
        for batch in batches:
            yield ks_pb2.IngestDocumentsRequest(documents=batch)

    results: list[ks_pb2.DocumentResult] = []
    summaries: list[ks_pb2.IngestSummary] = []
    async for response in stub.IngestDocuments(requests()):
        if response.HasField("result"):
            results.append(response.result)
        else:
            summaries.append(response.summary)
    assert len(summaries) == 1
    return results, summaries[0]


async def search(stub: ks_grpc.KnowledgeServiceStub, text: str, top_k: int = 10) -> list[ks_pb2.SearchHit]:
    return list((await stub.Search(ks_pb2.SearchRequest(text=text, top_k=top_k))).hits)


async def test_ingest_cite_replace_delete(make_engine: EngineFactory) -> None:
    engine = await make_engine(num_hosts=1, num_shards=2, retrieval_min_score=0.3)
    async with grpc.aio.insecure_channel(engine.target) as channel:
        knowledge = ks_grpc.KnowledgeServiceStub(channel)
        conversation = cs_grpc.ConversationServiceStub(channel)
        results, summary = await ingest(
            knowledge,
            [doc("handbook", HANDBOOK, "Office handbook", "text/markdown"), doc("travel", TRAVEL, "Travel policy")],
            [doc("menu", MENU)],
        )
        assert [(r.index, r.document_id, r.code) for r in results] == [
            (0, "handbook", 0),
            (1, "travel", 0),
            (2, "menu", 0),
        ]
        assert all(r.chunks >= 1 for r in results)
        # Progress counts run with the stream.
        assert [r.documents_done for r in results] == [1, 2, 3]
        assert results[-1].chunks_done == sum(r.chunks for r in results)
        assert (summary.documents, summary.succeeded, summary.failed) == (3, 3, 0)
        assert summary.chunks == results[-1].chunks_done and not summary.failures

        hits = await search(knowledge, "what is the wifi password")
        assert hits[0].citation.document_id == "handbook" and "heliotrope-42" in hits[0].text
        password_chunk = hits[0].citation.chunk_id

        # A turn cites the chunk that holds the answer, before its first token.
        session_id = await create_session(conversation)
        events = await collect_turn(conversation, session_id, "What is the office wifi password?")
        assert_well_formed(events, session_id)
        kinds = [e.WhichOneof("kind") for e in events]
        assert kinds[1] == "citations" and kinds.index("citations") < kinds.index("delta")
        cited = list(events[1].citations.citations)
        assert (cited[0].source, cited[0].document_id, cited[0].chunk_id) == ("knowledge", "handbook", password_chunk)
        assert cited[0].title.startswith("Office handbook") and cited[0].table_version > 0
        assert all(c.document_id != "menu" for c in cited)

        # Re-ingesting replaces: the old text is gone, the new one is found.
        results, summary = await ingest(
            knowledge, [doc("handbook", "The wifi password is now marigold-7.", "Office handbook")]
        )
        assert summary.succeeded == 1
        hits = await search(knowledge, "wifi password heliotrope-42")
        assert not any("heliotrope" in h.text for h in hits)
        assert any("marigold-7" in h.text for h in hits if h.citation.document_id == "handbook")
        assert len([h for h in hits if h.citation.document_id == "handbook"]) == 1

        # Delete: the document's chunks are no longer found; deleting again finds nothing to delete.
        deleted = await knowledge.DeleteDocuments(ks_pb2.DeleteDocumentsRequest(document_ids=["menu", "nope"]))
        assert deleted.deleted == 1
        assert not any(h.citation.document_id == "menu" for h in await search(knowledge, "lentil soup canteen"))
        again = await knowledge.DeleteDocuments(ks_pb2.DeleteDocumentsRequest(document_ids=["menu"]))
        assert again.deleted == 0


def cited_documents(events: list[turn_pb2.TurnEvent]) -> list[str]:
    return [c.document_id for e in events if e.HasField("citations") for c in e.citations.citations]


async def test_a_session_sets_its_cutoff_to_zero_and_its_passage_budget(make_engine: EngineFactory) -> None:
    # The deployment's cut-off is high, so a session on the defaults drops every passage found here.
    engine = await make_engine(num_hosts=1, num_shards=2, retrieval_min_score=0.99)
    question = "What does the canteen serve on Mondays?"
    async with grpc.aio.insecure_channel(engine.target) as channel:
        knowledge = ks_grpc.KnowledgeServiceStub(channel)
        conversation = cs_grpc.ConversationServiceStub(channel)
        _, summary = await ingest(knowledge, [doc("menu", MENU), doc("travel", TRAVEL)])
        assert summary.succeeded == 2
        hits = await search(knowledge, question)
        assert hits and hits[0].citation.document_id == "menu"
        assert all(h.citation.score < 0.99 for h in hits)  # so the default cut-off drops them all

        memory = session_pb2.MemorySettings
        on_defaults = await create_session(conversation)
        # The old field's 0 still means "the engine default" ...
        old_zero = await create_session(conversation, memory=memory(retrieval_min_score=0.0))
        # ... the new one's 0 means zero, and wins over the old field.
        zero = await create_session(conversation, memory=memory(retrieval_min_score=0.5, retrieval_score_cutoff=0.0))
        # A budget no passage fits in keeps them all out, whatever the cut-off.
        no_room = await create_session(
            conversation, memory=memory(retrieval_score_cutoff=0.0, retrieval_token_budget=1)
        )
        assert cited_documents(await collect_turn(conversation, on_defaults, question)) == []
        assert cited_documents(await collect_turn(conversation, old_zero, question)) == []
        assert cited_documents(await collect_turn(conversation, zero, question))[0] == "menu"
        assert cited_documents(await collect_turn(conversation, no_room, question)) == []

        for bad in (memory(retrieval_score_cutoff=1.5), memory(retrieval_token_budget=10_000_000)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await create_session(conversation, memory=bad)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert dict(caught.value.trailing_metadata() or ()).get("salon-error-reason") == "BAD_MEMORY_SETTINGS"


async def test_bad_documents_fail_alone_and_say_why_without_echoing(make_engine: EngineFactory) -> None:
    engine = await make_engine(num_hosts=1, num_shards=2, max_document_bytes=2000)
    secret = "confidential-marker-7781"
    async with grpc.aio.insecure_channel(engine.target) as channel:
        knowledge = ks_grpc.KnowledgeServiceStub(channel)
        results, summary = await ingest(
            knowledge,
            [
                doc("empty", "   \n  "),
                doc("good-1", TRAVEL),
                doc("huge", (secret + " ") * 200),
                doc("png", f"PNG {secret}", media_type="image/png"),
                doc(f"bad id {secret}", f"text {secret}"),
                doc("good-2", MENU),
            ],
        )
        outcome = {r.index: (r.document_id, r.code, r.reason) for r in results}
        assert outcome == {
            0: ("empty", INVALID, "EMPTY_DOCUMENT"),
            1: ("good-1", 0, ""),
            2: ("huge", INVALID, "DOCUMENT_TOO_LARGE"),
            3: ("png", INVALID, "UNSUPPORTED_MEDIA_TYPE"),
            4: ("", INVALID, "INVALID_DOCUMENT_ID"),
            5: ("good-2", 0, ""),
        }
        assert all(r.message and secret not in r.message for r in results if r.code)
        assert (summary.documents, summary.succeeded, summary.failed) == (6, 2, 4)
        assert [(f.index, f.reason) for f in summary.failures] == [
            (0, "EMPTY_DOCUMENT"),
            (2, "DOCUMENT_TOO_LARGE"),
            (3, "UNSUPPORTED_MEDIA_TYPE"),
            (4, "INVALID_DOCUMENT_ID"),
        ]
        assert secret not in str(summary)
        assert {h.citation.document_id for h in await search(knowledge, "canteen lentil soup train travel")} <= {
            "good-1",
            "good-2",
        }

        # Whole-request problems: INVALID_ARGUMENT with a reason, no echo.
        for request in (ks_pb2.SearchRequest(text=""), ks_pb2.SearchRequest(text="x", top_k=1000)):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await knowledge.Search(request)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await knowledge.DeleteDocuments(ks_pb2.DeleteDocumentsRequest(document_ids=[f"no good {secret}"]))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert secret not in (caught.value.details() or "")
        assert dict(caught.value.trailing_metadata() or ()).get("salon-error-reason") == "INVALID_DOCUMENT_ID"


async def test_python_client_and_salon_ingest(make_engine: EngineFactory, tmp_path: Path) -> None:
    engine = await make_engine(num_hosts=1, num_shards=2)
    docs = tmp_path / "docs"
    (docs / "guides").mkdir(parents=True)
    (docs / "guides" / "setup.md").write_text("# Setup\n\nRun the installer, then restart the router twice.\n")
    (docs / "faq.txt").write_text("The support line is open from nine to five.\n")
    (docs / "empty.md").write_text("")
    (docs / "image.png").write_bytes(b"\x89PNG")  # not a text file: not sent
    code = await asyncio.to_thread(main, ["ingest", "--target", engine.target, str(docs)])
    assert code == 1  # one file failed (empty), the others were stored
    async with SalonClient(engine.target) as client:
        hits = await client.search("restart the router", top_k=3)
        assert hits[0].citation.document_id == "guides-setup-md"
        progress = [p async for p in client.ingest([Document("faq-txt", "The support line now opens at eight.")])]
        assert progress[0].ok and progress[-1].summary is not None and progress[-1].ok
        hits = await client.search("when is the support line open", top_k=5)
        assert [h.text for h in hits if h.citation.document_id == "faq-txt"] == ["The support line now opens at eight."]
        assert await client.delete_documents(["faq-txt", "guides-setup-md"]) == 2
    unreachable = await asyncio.to_thread(main, ["ingest", "--target", "127.0.0.1:1", str(docs / "faq.txt")])
    assert unreachable == 2


async def test_tenants_never_retrieve_each_others_documents_or_memories(tmp_path: Path) -> None:
    """Until authentication exists every gRPC caller is the default tenant: isolation is tested where the
    tenant is decided, the session actor and the retriever, against a real LanceDB and the real model."""
    uri = str(tmp_path / "lancedb")
    embedder = await asyncio.to_thread(build_embedder, "default")
    base = await KnowledgeBase.open(uri, embedder)
    store = await TranscriptStore.open(uri, embedder=embedder)
    retriever = await LanceRetriever.open(uri, embedder)
    try:

        async def one(document: StoredDocument) -> AsyncIterator[StoredDocument]:
            yield document

        for tenant in ("tenant_a", "tenant_b"):
            text = f"The launch code of {tenant} is {'alpha' if tenant == 'tenant_a' else 'bravo'}-launch-9."
            results = [r async for r in base.ingest(tenant, one(StoredDocument("codes", text, "Codes")))]
            assert results[0].ok
        # Both tenants have a session named s1 with a remembered turn about a secret.
        records = [
            TurnRecord(tenant, "s1", f"{tenant}-t1", "1", 1, "completed", f"My secret word is {word}.", "Noted.")
            for tenant, word in (("tenant_a", "apricot"), ("tenant_b", "blueberry"))
        ]
        await store.write(records, [])

        journal = InMemoryJournal()
        settings = SessionSettings(retrieval_top_k=8, retrieval_min_score=0.0)
        for tenant, mine, theirs in (("tenant_a", "alpha", "bravo"), ("tenant_b", "bravo", "alpha")):
            key = SessionKey(tenant, "s1")
            loaded, ledger = await journal.open(tenant, "s1", "1", "host")
            state = SessionState.restore(loaded, "1", settings.window_max_messages)
            state.turn_count = 1  # the remembered turn t1 was the session's first, and has left its window
            actor = SessionActor(key, settings, state, ScriptedProvider(tokens=2), ledger, retriever=retriever)
            events: list[turn_pb2.TurnEvent] = []
            done = asyncio.Event()

            async def sink(event: TurnEvent, events: list[turn_pb2.TurnEvent] = events) -> None:
                events.append(event_to_proto(event))

            async def on_done(done: asyncio.Event = done) -> None:
                done.set()

            turn = Turn("t2", "What is the launch code and my secret word?")
            await actor.submit(LocalInFlight(turn, sink, on_done))
            await asyncio.wait_for(done.wait(), 30)
            await actor.close()
            cited = [c for e in events if e.HasField("citations") for c in e.citations.citations]
            assert {c.source for c in cited} == {"knowledge", "memory"}
            assert {c.chunk_id for c in cited if c.source == "memory"} == {f"{tenant}-t1"}
            # The passages' texts as the retriever returns them for this tenant: only its own.
            found = await retriever.retrieve(RetrievalQuery(tenant, "s1", "launch code secret word", top_k=8))
            texts = " ".join(p.text for p in found)
            assert mine in texts and theirs not in texts
            assert ("apricot" in texts) == (tenant == "tenant_a") and ("blueberry" in texts) == (tenant == "tenant_b")
    finally:
        await retriever.close()
        await store.close()
        await base.close()
