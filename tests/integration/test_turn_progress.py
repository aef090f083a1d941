"""A turn's progress is durable: the events a client may have seen outlive nats-server, and a turn handed out
again continues after them; a turn refused before it ran is not burnt, and runs once when sent again."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import assert_well_formed, collect_turn, create_session, reply_text

from salon.engine import EmbeddedNats, Engine
from salon.storage import Names
from salon.storage.jetstream.bus import BusSettings, EventPublisher, ensure_bus
from salon.storage.jetstream.client import close_connection, connect
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import turn_pb2


def _events(turn_id: str, deltas: list[str]) -> list[turn_pb2.TurnEvent]:
    events = [turn_pb2.TurnEvent(session_id="s1", turn_id=turn_id, seq=1, accepted=turn_pb2.TurnAccepted())]
    for seq, text in enumerate(deltas, start=2):
        events.append(
            turn_pb2.TurnEvent(session_id="s1", turn_id=turn_id, seq=seq, delta=turn_pb2.TokenDelta(text=text))
        )
    return events


async def test_stored_events_survive_a_killed_nats_server(tmp_path: Path) -> None:
    names = Names("progress")
    server = EmbeddedNats(tmp_path / "nats")
    url = await server.start()
    try:
        nc = await connect(url, name="progress-test")
        await ensure_bus(nc.jetstream(), names, BusSettings(num_shards=1))
        events = EventPublisher(nc, names)
        sent = _events("u1", ["Once", " upon", " a"])
        for event in sent:
            await events.publish("acme", event)
        await events.flush("acme", "s1", "u1")
        await events.close()
        await close_connection(nc)

        port, pid = server.port, server.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # no shutdown, nothing flushed on the way out
        await server.close()
        server = EmbeddedNats(tmp_path / "nats", port=port)
        url = await server.start()

        nc = await connect(url, name="progress-test-again")
        await ensure_bus(nc.jetstream(), names, BusSettings(num_shards=1))
        again = EventPublisher(nc, names)
        assert await again.sent("acme", "s1", "u1") == sent
        assert await again.sent("acme", "s1", "never") == []
        await again.close()
        await close_connection(nc)
    finally:
        await server.close()


async def test_a_refused_turn_sent_again_under_its_key_runs_once(make_engine: Any) -> None:
    engine: Engine = await make_engine(
        num_hosts=1, max_turns_per_host=1, max_turns_per_tenant=1, scripted_tokens=40, scripted_token_delay_s=0.02
    )
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        busy, other = await create_session(stub), await create_session(stub)
        running = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=busy, text="hold the host"))
        assert (await running.read()).event.HasField("accepted")
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await collect_turn(stub, other, "let me in", idempotency_key="k-refused")
        assert dict(refused.value.trailing_metadata() or ())["salon-error-reason"] == "TOO_MANY_TURNS"
        while await running.read() is not grpc.aio.EOF:
            pass
        calls = await _model_calls(engine)

        # Within JetStream's dedupe window: the refused message is gone and a copy would be dropped.
        events = await collect_turn(stub, other, "let me in", idempotency_key="k-refused")
        assert_well_formed(events, other)
        assert events[-1].HasField("completed")
        again = await collect_turn(stub, other, "let me in", idempotency_key="k-refused")
        assert [e.seq for e in again] == [e.seq for e in events]
        assert reply_text(again) == reply_text(events)
        assert await _model_calls(engine) == calls + 1, "the refused turn ran once, when sent again"
        history = (await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=other, page_size=10))).turns
        assert [t.turn_id for t in history] == ["k-refused"]


async def _model_calls(engine: Engine) -> int:
    return sum(s["model_calls"] for s in await engine.hosts.stats())
