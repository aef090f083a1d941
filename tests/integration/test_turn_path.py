"""The turn path end to end: gRPC → JetStream → a Ray-hosted session actor → events back over gRPC."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import grpc
import pytest
from conftest import assert_well_formed, collect_turn, create_session, engine_config, reply_text, running_engine

from salon.engine import Engine
from salon.providers import scripted_reply
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import turn_pb2

PACED_TOKENS = 10


@pytest.fixture(scope="module")
async def paced(nats_url: str, ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Engine]:
    """An engine whose answers take a moment (10 tokens 20 ms apart), shared by the tests that need a turn to
    be still running when the next arrives; each works on sessions of its own."""
    config = engine_config(
        tmp_path_factory.mktemp("paced"), nats_url, scripted_tokens=PACED_TOKENS, scripted_token_delay_s=0.02
    )
    async with running_engine(config) as engine:
        yield engine


async def test_three_turns_stream_in_order_with_gap_free_sequence(stub: cs_grpc.ConversationServiceStub) -> None:
    session_id = await create_session(stub, system_prompt="be brief")
    for n in range(3):
        text = f"alpha{n} beta{n} gamma{n}"
        events = await collect_turn(stub, session_id, text)
        assert_well_formed(events, session_id)
        assert events[-1].HasField("completed")
        assert reply_text(events) == "".join(scripted_reply(text, 8))
        deltas = [e for e in events if e.HasField("delta")]
        assert 1 <= len(deltas) <= 8, "tokens may travel several to an event, never split"
        assert any(e.HasField("usage") and e.usage.output_tokens == 8 for e in events)
    got = await stub.GetSession(cs_pb2.GetSessionRequest(session_id=session_id))
    assert got.session.turn_count == 3


async def test_parallel_sessions_never_mix_tokens(stub: cs_grpc.ConversationServiceStub) -> None:
    sessions = [await create_session(stub) for _ in range(8)]

    async def converse(index: int, session_id: str) -> None:
        for turn in range(2):
            text = f"s{index}x{turn}a s{index}x{turn}b"
            events = await collect_turn(stub, session_id, text)
            assert_well_formed(events, session_id)
            assert reply_text(events) == "".join(scripted_reply(text, 8))

    await asyncio.gather(*(converse(i, s) for i, s in enumerate(sessions)))


async def test_two_turns_sent_at_once_run_one_after_the_other(paced: Engine) -> None:
    async with grpc.aio.insecure_channel(paced.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        first_accepted = asyncio.Event()

        async def send(text: str) -> list[turn_pb2.TurnEvent]:
            events = []
            async for response in stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text=text)):
                events.append(response.event)
                first_accepted.set()
            return events

        first = asyncio.create_task(send("first"))
        # The second turn is sent once the first has been accepted, so their order is defined.
        await asyncio.wait_for(first_accepted.wait(), 30)
        second = await send("second")
        first_events = await first

    # Two client streams have no common arrival order; the engine's emission times do.
    first_done = first_events[-1].time.ToNanoseconds()
    second_deltas = [e.time.ToNanoseconds() for e in second if e.HasField("delta")]
    assert first_events[-1].HasField("completed") and second[-1].HasField("completed")
    assert second_deltas and min(second_deltas) >= first_done
    assert second[0].accepted.queue_position == 1


async def test_queued_turn_reports_its_queue_position(paced: Engine) -> None:
    async with grpc.aio.insecure_channel(paced.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        first_call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="one"))
        first = await first_call.read()
        assert first.event.accepted.queue_position == 0
        second = await collect_turn(stub, session_id, "two")
        assert second[0].accepted.queue_position == 1
        assert reply_text(second) == "".join(scripted_reply("two", PACED_TOKENS))
        last = first
        while (response := await first_call.read()) is not grpc.aio.EOF:
            last = response
        assert last.event.HasField("completed")


async def test_converse_carries_two_sessions_interleaved_on_one_stream(paced: Engine) -> None:
    async with grpc.aio.insecure_channel(paced.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        a, b = await create_session(stub), await create_session(stub)
        # Each session's first turn opens it on its host (and, under load, may wait for its retrieval tables): that
        # wait could outlast the other session's whole answer, and the two would not overlap at all.
        for session_id in (a, b):
            await collect_turn(stub, session_id, "warm")

        async def requests() -> object:
            yield cs_pb2.ConverseRequest(request_id="r1", send_turn=cs_pb2.SendTurnRequest(session_id=a, text="apple"))
            yield cs_pb2.ConverseRequest(request_id="r2", send_turn=cs_pb2.SendTurnRequest(session_id=b, text="berry"))

        responses = [r async for r in stub.Converse(requests())]

    events = [r.event for r in responses if r.HasField("event")]
    assert not [r for r in responses if r.HasField("error")]
    by_session = {s: [e for e in events if e.session_id == s] for s in (a, b)}
    assert_well_formed(by_session[a], a)
    assert_well_formed(by_session[b], b)
    assert reply_text(by_session[a]) == "".join(scripted_reply("apple", PACED_TOKENS))
    assert reply_text(by_session[b]) == "".join(scripted_reply("berry", PACED_TOKENS))
    # Every event, not only deltas: a delta may carry several tokens (joined while the previous one was stored),
    # so under load a turn can have as few as two. A stream that served one turn after the other switches once.
    order = [e.session_id for e in events]
    switches = sum(1 for x, y in itertools.pairwise(order) if x != y)
    assert switches >= 2, "the two sessions' events should interleave on the shared stream"


async def test_converse_reports_a_bad_request_and_keeps_the_stream(stub: cs_grpc.ConversationServiceStub) -> None:
    session_id = await create_session(stub)

    async def requests() -> object:
        yield cs_pb2.ConverseRequest(request_id="bad", send_turn=cs_pb2.SendTurnRequest(session_id=session_id, text=""))
        yield cs_pb2.ConverseRequest(
            request_id="good", send_turn=cs_pb2.SendTurnRequest(session_id=session_id, text="ok")
        )

    responses = [r async for r in stub.Converse(requests())]
    errors = [r.error for r in responses if r.HasField("error")]
    assert [(e.request_id, e.code, e.reason) for e in errors] == [
        ("bad", grpc.StatusCode.INVALID_ARGUMENT.value[0], "EMPTY_TEXT")
    ]
    events = [r.event for r in responses if r.HasField("event")]
    assert events[-1].HasField("completed")
