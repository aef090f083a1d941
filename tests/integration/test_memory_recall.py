"""Memory past the window, end to end on real NATS, Ray, LanceDB and the bundled embedding model: a fact stated
early is retrieved and cited 200 turns later while the window holds only the last 20 messages, the rolling
summary moves with the window, and every turn records what entered its prompt."""

from __future__ import annotations

import grpc
import pytest
from conftest import EngineFactory, assert_well_formed, collect_turn, create_session

from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import session_pb2, turn_pb2

pytestmark = pytest.mark.integration

FILLER_TOPICS = ["the weather", "a train timetable", "lunch plans", "a football match", "gardening", "a film"]


def filler(i: int) -> str:
    return f"Message {i}: let us chat about {FILLER_TOPICS[i % len(FILLER_TOPICS)]} for a moment."


async def history(stub: cs_grpc.ConversationServiceStub, session_id: str) -> list[turn_pb2.TurnRecord]:
    turns: list[turn_pb2.TurnRecord] = []
    token = ""
    while True:
        page = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id, page_size=500, page_token=token))
        turns += page.turns
        token = page.next_page_token
        if not token:
            return turns


async def test_a_fact_from_turn_3_is_retrieved_and_cited_at_turn_200(make_engine: EngineFactory) -> None:
    engine = await make_engine(scripted_tokens=4, retrieval_min_score=0.3, num_hosts=1, num_shards=2)
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        memory = session_pb2.MemorySettings(window_max_messages=20, window_token_budget=4000, retrieval_top_k=3)
        session_id = await create_session(stub, memory=memory)
        versions: list[int] = []
        summaries: list[str] = []
        for i in range(1, 200):
            text = "Remember this: my locker combination is 4711, on the blue locker." if i == 3 else filler(i)
            events = await collect_turn(stub, session_id, text, idempotency_key=f"turn-{i:03d}")
            assert events[-1].HasField("completed"), f"turn {i} did not complete"
            if i % 40 == 0:
                session = (await stub.GetSession(cs_pb2.GetSessionRequest(session_id=session_id))).session
                versions.append(session.summary.version)
                summaries.append(session.summary.text)

        events = await collect_turn(stub, session_id, "What was my locker combination?", idempotency_key="turn-200")
        assert_well_formed(events, session_id)
        kinds = [e.WhichOneof("kind") for e in events]
        # Citations come before the first token, and name turn 3's memory.
        assert kinds.index("citations") < kinds.index("delta")
        cited = events[kinds.index("citations")].citations.citations
        memories = [c for c in cited if c.source == "memory"]
        assert [c.chunk_id for c in memories][:1] == ["turn-003"], [c.chunk_id for c in cited]
        assert memories[0].document_id == session_id and memories[0].score >= 0.3
        assert memories[0].table_version > 0

        # The summary exists and moved with the window: its version grew between the checks.
        assert versions == sorted(versions) and len(set(versions)) == len(versions), versions
        assert versions[0] >= 1 and all(summaries)

        # Turn 200's record says what entered its prompt: the window (whole turns, at most 20 messages, all
        # recent), the summary version, turn 3's memory with its score, and token counts.
        turns = await history(stub, session_id)
        assert len(turns) == 200
        context = turns[-1].context
        assert 0 < len(context.window) <= 20
        window_turns = {m.turn_id for m in context.window}
        assert "turn-003" not in window_turns
        assert min(m.turn_index for m in context.window) >= 190
        assert all(m.tokens > 0 for m in context.window)
        assert context.summary_version >= versions[-1] and context.summary_tokens > 0
        recalled = [p for p in context.passages if p.citation.chunk_id == "turn-003"]
        assert recalled and recalled[0].turn_index == 3 and recalled[0].tokens > 0
        assert [p.citation.chunk_id for p in context.passages] == [c.chunk_id for c in cited]
        assert context.total_tokens > context.message_tokens + sum(m.tokens for m in context.window)
        # Memories of turns still in the window are never retrieved.
        assert not {p.citation.chunk_id for p in context.passages} & window_turns

        # A retry of turn 200 (same idempotency key) gets the same events, citations included, and the model
        # is not asked again.
        calls = sum(s["model_calls"] for s in await engine.hosts.stats())
        replay = await collect_turn(stub, session_id, "What was my locker combination?", idempotency_key="turn-200")
        assert [(e.seq, e.WhichOneof("kind")) for e in replay] == [
            (e.seq, k) for e, k in zip(events, kinds, strict=True)
        ]
        replayed = next(e for e in replay if e.HasField("citations"))
        assert list(replayed.citations.citations) == list(cited)
        assert sum(s["model_calls"] for s in await engine.hosts.stats()) == calls
