"""Memory of a person and the knowledge base below the tenant, end to end through gRPC on real NATS, Ray and
LanceDB: sessions naming a user, memory scoped to the user across sessions, SearchMemory (read-only,
tenant-checked), the do-not-remember flag, user erasure (nothing of the user found afterwards by any read
path), knowledge collections in search and in sessions, and PDF/HTML/DOCX documents cited by page or
heading."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import grpc
import nats.js.errors
import pytest
from conftest import wait_for
from doc_fixtures import docx_bytes, html_page, pdf_bytes
from sec_support import TenantsFile, bearer, engine_config

from salon.client import Document, SalonClient, SalonError
from salon.engine import Engine
from salon.engine.cli import main
from salon.storage import Names
from salon.storage.jetstream.client import close_connection, connect
from salon.storage.tables import TranscriptStore
from salon.v1 import admin_service_pb2 as admin_pb2
from salon.v1 import admin_service_pb2_grpc as admin_grpc
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import knowledge_service_pb2_grpc as ks_grpc
from salon.v1 import session_pb2, turn_pb2

pytestmark = pytest.mark.integration

USER_SCOPE = session_pb2.MEMORY_SCOPE_USER
SECRET = "zq-secret-7781"


class Setup:
    """The module's engine and the keys of its tenants (acme, beta) and of an admin."""

    def __init__(self, engine: Engine, keys: dict[str, str]) -> None:
        self.engine = engine
        self.keys = keys

    def client(self, tenant: str) -> SalonClient:
        return SalonClient(self.engine.target, api_key=self.keys[tenant])


@pytest.fixture(scope="module")
async def setup(nats_url: str, ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    tenants = TenantsFile(tmp_path_factory.mktemp("users") / "tenants.toml")
    keys = {"acme": tenants.add_key("acme"), "beta": tenants.add_key("beta")}
    keys["admin"] = tenants.add_key("ops", admin=True)
    config = engine_config(
        nats_url,
        tmp_path_factory.mktemp("users-data"),
        tenants_file=str(tenants.path),
        retrieval_min_score=0.3,
        scripted_tokens=2,
    )
    async with Engine(config) as engine:
        yield Setup(engine, keys)


async def failure(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, str]:
    try:
        await call
    except SalonError as exc:
        return exc.code, exc.reason, exc.message
    except grpc.aio.AioRpcError as exc:
        reason = dict(exc.trailing_metadata() or ()).get("salon-error-reason", "")
        return exc.code(), str(reason), exc.details() or ""
    pytest.fail("the call succeeded")


def history(setup: Setup, client: SalonClient, tenant: str, session_id: str) -> Awaitable[cs_pb2.GetHistoryResponse]:
    request = cs_pb2.GetHistoryRequest(session_id=session_id)
    response: Awaitable[cs_pb2.GetHistoryResponse] = client.stub.GetHistory(
        request, metadata=bearer(setup.keys[tenant])
    )
    return response


async def turn(client: SalonClient, session_id: str, text: str, **fields: Any) -> list[turn_pb2.TurnEvent]:
    events = [e async for e in client.send_turn(session_id, text, **fields)]
    assert events[-1].HasField("completed")
    return events


def memory_citations(events: list[turn_pb2.TurnEvent]) -> list[turn_pb2.Citation]:
    return [c for e in events if e.HasField("citations") for c in e.citations.citations if c.source == "memory"]


async def remembered(client: SalonClient, text: str, turn_id: str, *, session_id: str = "", user_id: str = "") -> None:
    """Wait until the memory indexer has embedded ``turn_id`` (it runs behind the turns)."""

    async def found() -> bool:
        hits = await client.search_memory(text, top_k=50, session_id=session_id, user_id=user_id)
        return any(h.turn_id == turn_id for h in hits)

    await wait_for(found, timeout_s=90, what=f"the memory of {turn_id}")


async def test_user_memory_across_sessions_and_search_memory(setup: Setup) -> None:
    async with setup.client("acme") as acme, setup.client("beta") as beta:
        first = await acme.create_session(user_id="alice")
        events = await turn(acme, first.id, "My favourite colour is vermilion, remember that.")
        colour_turn = events[0].turn_id
        await remembered(acme, "favourite colour", colour_turn, user_id="alice")

        # A new session of the same user with the user scope retrieves the other session's memory.
        mine = session_pb2.MemorySettings(memory_scope=USER_SCOPE)
        second = await acme.create_session(user_id="alice", memory=mine)
        assert second.proto.user_id == "alice" and second.proto.memory.memory_scope == USER_SCOPE
        cited = memory_citations(await turn(acme, second.id, "What is my favourite colour?"))
        assert [(c.document_id, c.chunk_id) for c in cited][:1] == [(first.id, colour_turn)]
        # The default scope is the session's own: a new session of alice has nothing to retrieve yet.
        own = await acme.create_session(user_id="alice")
        assert memory_citations(await turn(acme, own.id, "What is my favourite colour?")) == []

        # SearchMemory: passages with scores, turn ids and times, by session or by user; it writes nothing.
        hits = await acme.search_memory("favourite colour vermilion", session_id=first.id, top_k=3)
        assert hits[0].turn_id == colour_turn and hits[0].session_id == first.id and hits[0].turn_index == 1
        assert hits[0].citation.source == "memory" and 0 < hits[0].citation.score <= 1
        assert hits[0].turn_time.seconds > 0 and "vermilion" in hits[0].text
        by_user = await acme.search_memory("favourite colour vermilion", user_id="alice", top_k=50)
        assert colour_turn in {h.turn_id for h in by_user}
        again = await acme.search_memory("favourite colour vermilion", user_id="alice", top_k=50)
        assert len(again) == len(by_user)

        # Another tenant sees nothing: the same answer for its session as for no session, no hits for the user.
        assert await beta.search_memory("favourite colour", user_id="alice") == []
        missing = await failure(beta.search_memory("colour", session_id=first.id))
        assert missing[:2] == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
        assert (await failure(beta.search_memory("colour", session_id="no-such-session")))[:2] == missing[:2]


async def test_bad_memory_requests_say_why_without_echoing(setup: Setup) -> None:
    async with setup.client("acme") as acme:
        cases = [
            (acme.search_memory("x", session_id="s1", user_id="alice"), "BAD_MEMORY_SCOPE"),
            (acme.search_memory("x"), "BAD_MEMORY_SCOPE"),
            (acme.search_memory("x", user_id=f"{SECRET} OR 1=1"), "INVALID_USER_ID"),
            (acme.search_memory("x", session_id=f"{SECRET}'"), "INVALID_SESSION_ID"),
            (acme.search_memory("x", user_id="alice", top_k=51), "TOP_K_TOO_LARGE"),
            (acme.search_memory("", user_id="alice"), "EMPTY_TEXT"),
            (acme.create_session(user_id=f"{SECRET}!"), "INVALID_USER_ID"),
            (acme.create_session(memory=session_pb2.MemorySettings(memory_scope=USER_SCOPE)), "BAD_MEMORY_SCOPE"),
            (
                acme.create_session(memory=session_pb2.MemorySettings(knowledge_collections=[f"{SECRET} x"])),
                "INVALID_COLLECTION",
            ),
            (acme.search("x", collections=[f"{SECRET}'"]), "INVALID_COLLECTION"),
            (acme.search("x", document_ids=[f"{SECRET}'"]), "INVALID_DOCUMENT_ID"),
            (acme.erase_user(f"{SECRET}?"), "INVALID_USER_ID"),
            (acme.erase_user("alice", tenant_id="beta"), "NOT_ADMIN"),
        ]
        for call, reason in cases:
            code, got, message = await failure(call)
            expected = grpc.StatusCode.PERMISSION_DENIED if reason == "NOT_ADMIN" else grpc.StatusCode.INVALID_ARGUMENT
            assert (code, got) == (expected, reason)
            assert SECRET not in message


async def test_a_turn_sent_with_do_not_remember_is_answered_but_never_remembered(setup: Setup) -> None:
    async with setup.client("acme") as acme:
        session = await acme.create_session(user_id="carol")
        forgotten = await turn(acme, session.id, "The vault code is 8842.", do_not_remember=True)
        assert any(e.HasField("delta") for e in forgotten)
        kept = await turn(acme, session.id, "My dog is called Biscuit.")
        # The indexer takes the ledger in order: once the later turn is remembered, the earlier was passed over.
        await remembered(acme, "dog called Biscuit", kept[0].turn_id, session_id=session.id)
        hits = await acme.search_memory("vault code 8842", session_id=session.id, top_k=50)
        assert forgotten[0].turn_id not in {h.turn_id for h in hits}
        hits = await acme.search_memory("vault code 8842", user_id="carol", top_k=50)
        assert forgotten[0].turn_id not in {h.turn_id for h in hits}
        # Still in the transcript, marked.
        transcript = await history(setup, acme, "acme", session.id)
        marks = {t.turn_id: t.not_remembered for t in transcript.turns}
        assert marks == {forgotten[0].turn_id: True, kept[0].turn_id: False}


async def test_erasing_a_user_leaves_nothing_of_them(setup: Setup) -> None:
    async with setup.client("acme") as acme, setup.client("beta") as beta, setup.client("admin") as admin:
        sessions = [await acme.create_session(user_id="dave", metadata={"who": "dave"}) for _ in range(2)]
        other = await acme.create_session(user_id="erin")
        beta_dave = await beta.create_session(user_id="dave")
        turn_ids: list[str] = []
        for i, session in enumerate([*sessions, other]):
            events = await turn(acme, session.id, f"Note {i}: my locker number is {4711 + i}.")
            await remembered(acme, "locker number", events[0].turn_id, session_id=session.id)
            turn_ids.append(events[0].turn_id)
        beta_turn = await turn(beta, beta_dave.id, "My locker number is 99.")
        await remembered(beta, "locker number", beta_turn[0].turn_id, session_id=beta_dave.id)

        # The events of dave's turns are kept for resuming streams: erasure purges them too.
        nc = await connect(setup.engine.nats_url, name="erasure-test")
        js = nc.jetstream()
        names = Names(setup.engine.config.namespace)
        dave_events = [names.event_subject("acme", s.id, t) for s, t in zip(sessions, turn_ids[:2], strict=True)]
        for subject in dave_events:
            assert (await js.get_last_msg(names.events_stream, subject)).data
        # Another tenant cannot erase acme's users; an admin key can name the tenant.
        denied = await failure(beta.erase_user("dave", tenant_id="acme"))
        assert denied[:2] == (grpc.StatusCode.PERMISSION_DENIED, "NOT_ADMIN")
        erased = await acme.erase_user("dave")
        assert erased.sessions_deleted == 2

        for session in sessions:
            for call in (
                acme.get_session(session.id),
                acme.search_memory("locker", session_id=session.id),
                history(setup, acme, "acme", session.id),
            ):
                assert (await failure(call))[:2] == (grpc.StatusCode.NOT_FOUND, "SESSION_NOT_FOUND")
        assert [s.id async for s in acme.list_sessions(metadata_filter={"who": "dave"})] == []
        try:
            for subject in dave_events:
                with pytest.raises(nats.js.errors.NotFoundError):
                    await js.get_last_msg(names.events_stream, subject)
            other_subject = names.event_subject("acme", other.id, turn_ids[2])
            assert (await js.get_last_msg(names.events_stream, other_subject)).data
        finally:
            await close_connection(nc)
        assert await acme.search_memory("locker number", user_id="dave", top_k=50) == []
        # Nothing left in any table either (as an operator would look).
        store = await TranscriptStore.open(setup.engine.config.lancedb_location)
        try:
            for table in ("transcripts", "memories"):
                assert await store.count(table, "tenant_id = 'acme' AND user_id = 'dave'") == 0
            for table in ("transcripts", "snapshots", "memories"):
                ids = ", ".join(f"'{s.id}'" for s in sessions)
                assert await store.count(table, f"tenant_id = 'acme' AND session_id IN ({ids})") == 0
        finally:
            await store.close()
        # Other users and other tenants keep theirs; erasing again finds nothing.
        assert await acme.search_memory("locker number", user_id="erin", top_k=50) != []
        assert await beta.search_memory("locker number", user_id="dave", top_k=50) != []
        again = await admin.erase_user("dave", tenant_id="acme")
        assert (again.sessions_deleted, again.memories_deleted) == (0, 0)


async def test_collections_and_documents_beyond_text(setup: Setup) -> None:
    async with setup.client("acme") as acme:
        manual = pdf_bytes([["Boiler manual, introduction."], ["The boiler pressure must stay below two bar."]])
        handbook = docx_bytes([(1, "Safety"), (0, "Protective gloves are kept in the blue cupboard.")])
        page = html_page("Visitors", [("Parking", "Visitors park behind building C, never in bay 4.")])
        documents = [
            Document("manual", title="Boiler manual", media_type="application/pdf", content=manual, collection="it"),
            Document(
                "handbook",
                title="Handbook",
                media_type="application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                content=handbook,
                collection="hr",
            ),
            Document("visitors", page, title="Visitors", media_type="text/html", collection="hr"),
            Document("broken", media_type="application/pdf", content=f"%PDF-1.4 {SECRET}".encode()),
        ]
        results = [p.result async for p in acme.ingest(documents) if p.result is not None]
        assert [(r.document_id, r.code, r.reason) for r in results] == [
            ("manual", 0, ""),
            ("handbook", 0, ""),
            ("visitors", 0, ""),
            ("broken", grpc.StatusCode.INVALID_ARGUMENT.value[0], "UNREADABLE_DOCUMENT"),
        ]
        assert SECRET not in results[3].message

        hits = await acme.search("boiler pressure", top_k=1, collections=["it"])
        assert (hits[0].citation.document_id, hits[0].citation.title) == ("manual", "Boiler manual / page 2")
        hr = await acme.search("boiler pressure gloves parking", top_k=10, collections=["hr"])
        assert {h.citation.document_id for h in hr} == {"handbook", "visitors"}
        only = await acme.search("boiler pressure gloves parking", top_k=10, document_ids=["visitors"])
        assert {h.citation.title for h in only} == {"Visitors / Visitors / Parking"}

        # A session that names its collections retrieves from those only.
        it_only = await acme.create_session(memory=session_pb2.MemorySettings(knowledge_collections=["it"]))
        cited = [
            c
            for e in await turn(acme, it_only.id, "Where are the protective gloves kept? And the boiler pressure?")
            if e.HasField("citations")
            for c in e.citations.citations
        ]
        assert cited and {c.document_id for c in cited} == {"manual"}
        hr_only = await acme.create_session(memory=session_pb2.MemorySettings(knowledge_collections=["hr"]))
        cited = [
            c
            for e in await turn(acme, hr_only.id, "Where are the protective gloves kept?")
            if e.HasField("citations")
            for c in e.citations.citations
        ]
        assert cited and cited[0].document_id == "handbook" and cited[0].title == "Handbook / Safety"


async def test_salon_ingest_sends_pdf_and_docx_files_into_a_collection(setup: Setup, tmp_path: Path) -> None:
    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "pump.pdf").write_bytes(pdf_bytes([["Pump manual."], ["Bleed the pump valve every ninety days."]]))
    (folder / "rota.docx").write_bytes(docx_bytes([(1, "Cleaning rota"), (0, "The lab floor is mopped on Tuesdays.")]))
    args = ["ingest", str(folder), "--target", setup.engine.target, "--collection", "manuals"]
    code = await asyncio.to_thread(main, [*args, "--api-key", setup.keys["acme"]])
    assert code == 0
    async with setup.client("acme") as acme:
        (hit,) = await acme.search("bleed the pump valve", top_k=1, collections=["manuals"])
        assert (hit.citation.document_id, hit.citation.title) == ("pump-pdf", "pump / page 2")
        (hit,) = await acme.search("when is the floor mopped", top_k=1, collections=["manuals"])
        assert (hit.citation.document_id, hit.citation.title) == ("rota-docx", "rota / Cleaning rota")
        assert not await acme.search("bleed the pump valve", collections=["elsewhere"])


async def test_erase_user_through_the_generated_stub(setup: Setup) -> None:
    # The raw API, as another language's client would call it.
    async with grpc.aio.insecure_channel(setup.engine.target) as channel:
        admin = admin_grpc.AdminServiceStub(channel)  # type: ignore[no-untyped-call]
        knowledge = ks_grpc.KnowledgeServiceStub(channel)  # type: ignore[no-untyped-call]
        conversation = cs_grpc.ConversationServiceStub(channel)  # type: ignore[no-untyped-call]
        md = bearer(setup.keys["beta"])
        created = await conversation.CreateSession(cs_pb2.CreateSessionRequest(user_id="frank"), metadata=md)
        assert created.session.user_id == "frank"
        request = cs_pb2.SendTurnRequest(session_id=created.session.session_id, text="hello")
        events = [r.event async for r in conversation.SendTurn(request, metadata=md)]
        assert events[-1].HasField("completed")
        response = await admin.EraseUser(admin_pb2.EraseUserRequest(user_id="frank"), metadata=md)
        assert response.sessions_deleted == 1
        search = ks_pb2.SearchMemoryRequest(text="hello", user_id="frank")
        assert list((await knowledge.SearchMemory(search, metadata=md)).hits) == []
