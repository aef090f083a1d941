"""Delivery guarantees of the turn path: idempotent retries, trace context, outages, dead hosts."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import grpc
import pytest
from conftest import assert_well_formed, collect_turn, create_session, reply_text, wait_for

from salon.actors import host_of_shard, shard_for
from salon.engine import EmbeddedNats, Engine
from salon.providers import scripted_reply
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc


async def _turns_started(engine: Engine) -> int:
    return sum(s["turns_started"] for s in await engine.hosts.stats())


async def test_same_idempotency_key_replays_the_turn_without_running_it_again(make_engine: object) -> None:
    engine: Engine = await make_engine()  # type: ignore[operator]
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        first = await collect_turn(stub, session_id, "only once", idempotency_key="key-1")
        again = await collect_turn(stub, session_id, "only once", idempotency_key="key-1")
        assert first == again, "a retry sees the same events with the same sequence numbers"
        assert first[0].turn_id == "key-1"
        assert await _turns_started(engine) == 1
        got = (await stub.GetSession(cs_pb2.GetSessionRequest(session_id=session_id))).session
        assert got.turn_count == 1


async def test_concurrent_duplicates_join_the_running_turn(make_engine: object) -> None:
    engine: Engine = await make_engine(scripted_tokens=10, scripted_token_delay_s=0.02)  # type: ignore[operator]
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        results = await asyncio.gather(
            *(collect_turn(stub, session_id, "together", idempotency_key="dup-1") for _ in range(3))
        )
        assert results[0] == results[1] == results[2]
        assert_well_formed(results[0], session_id)
        assert await _turns_started(engine) == 1


async def test_trace_context_flows_from_grpc_through_nats_to_the_host(stub: cs_grpc.ConversationServiceStub) -> None:
    session_id = await create_session(stub)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    call = stub.SendTurn(
        cs_pb2.SendTurnRequest(session_id=session_id, text="traced"),
        metadata=(("traceparent", f"00-{trace_id}-00f067aa0ba902b7-01"),),
    )
    events = [r.event async for r in call]
    assert events[0].accepted.trace_id == trace_id


async def test_nats_outage_gives_unavailable_and_the_engine_recovers_by_itself(
    make_engine: object, tmp_path: Path
) -> None:
    server = EmbeddedNats(tmp_path / "own-nats")
    url = await server.start()
    try:
        engine: Engine = await make_engine(nats_url=url)  # type: ignore[operator]
        async with grpc.aio.insecure_channel(engine.target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            session_id = await create_session(stub)
            assert (await collect_turn(stub, session_id, "before"))[-1].HasField("completed")

            port = server.port
            await server.close()
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await collect_turn(stub, session_id, "during")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            retry_ms = dict(info.value.trailing_metadata() or ()).get("salon-retry-after-ms")
            assert retry_ms is not None and int(retry_ms) > 0

            server = EmbeddedNats(tmp_path / "own-nats", port=port)
            await server.start()

            async def works() -> bool:
                try:
                    events = await collect_turn(stub, session_id, "after")
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE
                    return False
                return events[-1].HasField("completed")

            await wait_for(works, timeout_s=30, what="the engine to reconnect to NATS")
        await engine.close()  # before its nats-server: closing on a dead one waits out its timeouts
    finally:
        await server.close()


async def test_a_killed_host_is_restarted_by_ray_and_takes_up_its_shards(make_engine: object) -> None:
    engine: Engine = await make_engine()  # type: ignore[operator]
    config = engine.config
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        assert (await collect_turn(stub, session_id, "one"))[-1].HasField("completed")

        owner = host_of_shard(shard_for(config.default_tenant, session_id, config.num_shards), config.num_hosts)
        pid = engine.hosts.info[owner]["pid"]
        os.kill(pid, signal.SIGKILL)

        async def restarted() -> bool:
            try:
                info = await asyncio.wait_for(engine.hosts.handles[owner].ready.remote(), 5)
            except Exception:
                return False
            return bool(info["pid"] != pid)

        await wait_for(restarted, timeout_s=60, what="Ray to restart the host")
        events = await collect_turn(stub, session_id, "two after restart", timeout=60)
        assert events[-1].HasField("completed")
        assert reply_text(events) == "".join(scripted_reply("two after restart", 8))
        got = (await stub.GetSession(cs_pb2.GetSessionRequest(session_id=session_id))).session
        assert got.turn_count == 2, "the session's memory survived its host"


async def test_turn_readers_leave_no_consumers_behind(make_engine: object) -> None:
    # Each SendTurn reads its events through an ephemeral JetStream consumer. A stream holds at most 1,000
    # consumers, so under sustained load they must go when the turn ends, not after an inactivity timeout.
    engine: Engine = await make_engine()  # type: ignore[operator]
    js = engine._nc.jetstream()
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        sessions = [await create_session(stub) for _ in range(4)]
        for _ in range(3):
            await asyncio.gather(*(collect_turn(stub, s, "count the consumers") for s in sessions))
        info = await js.stream_info(engine.names.events_stream)
    assert info.state.consumer_count == 0
