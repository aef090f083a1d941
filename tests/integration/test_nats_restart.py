"""The engine supervises the nats-server it started: killed, it comes back on the same file storage, every
connection resumes, and clients see UNAVAILABLE (with a reason and a retry hint) only while it is away."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from conftest import collect_turn, create_session, reply_text, wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc

from salon.engine import Engine
from salon.engine.nats_server import find_nats_server
from salon.providers import scripted_reply
from salon.storage.tables import TranscriptStore
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import turn_pb2


def _trailer(error: grpc.aio.AioRpcError, key: str) -> str:
    return str(dict(error.trailing_metadata() or ()).get(key, ""))


@pytest.fixture
def nats_binary(tmp_path: Path) -> Path:
    """A link to nats-server that the test can take away, so the engine cannot restart the server until the
    test has seen the outage (the engine runs in the test's event loop: nothing happens between the kill and
    the removal)."""
    link = tmp_path / "bin" / "nats-server"
    link.parent.mkdir()
    link.symlink_to(find_nats_server())
    return link


async def _status(health: health_pb2_grpc.HealthStub) -> int:
    return int((await health.Check(health_pb2.HealthCheckRequest(service=""))).status)


async def test_a_killed_nats_server_is_restarted_and_every_part_resumes(make_engine: object, nats_binary: Path) -> None:
    tokens = 200
    engine: Engine = await make_engine(  # type: ignore[operator]
        nats_url="", nats_server_bin=str(nats_binary), scripted_tokens=tokens, scripted_token_delay_s=0.05
    )
    assert engine._embedded_nats is not None and engine._embedded_nats.pid is not None
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        session_id = await create_session(stub)
        assert (await collect_turn(stub, session_id, "before the kill"))[-1].HasField("completed")
        running = await create_session(stub)

        # A long turn is streaming when the server dies.
        seen: list[turn_pb2.TurnEvent] = []
        call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=running, text="across the outage"), timeout=120)
        stream: AsyncIterator[cs_pb2.SendTurnResponse] = call.__aiter__()
        while len(seen) < 5:
            seen.append((await stream.__anext__()).event)
        os.kill(engine._embedded_nats.pid, signal.SIGKILL)
        hidden = nats_binary.with_name("away")
        nats_binary.rename(hidden)  # noqa: ASYNC240 - before the engine's loop runs again
        killed_at = time.monotonic()

        # The running stream ends with UNAVAILABLE and a retry hint, not at its deadline.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for response in stream:
                seen.append(response.event)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _trailer(info.value, "salon-error-reason") == "NATS_UNAVAILABLE"
        assert int(_trailer(info.value, "salon-retry-after-ms")) > 0

        async def not_serving() -> bool:
            return await _status(health) == health_pb2.HealthCheckResponse.NOT_SERVING

        await wait_for(not_serving, timeout_s=30, what="health to say NOT_SERVING")
        # A new call during the outage is refused at once, with the documented reason.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await collect_turn(stub, session_id, "during the outage", timeout=30)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _trailer(info.value, "salon-error-reason") == "NATS_UNAVAILABLE"

        hidden.rename(nats_binary)

        async def serving() -> bool:
            return await _status(health) == health_pb2.HealthCheckResponse.SERVING

        await wait_for(serving, timeout_s=60, what="health to say SERVING again")
        print(f"nats-server outage to SERVING: {time.monotonic() - killed_at:.2f} s (binary held away part of it)")
        after = await collect_turn(stub, session_id, "after the restart", timeout=60)
        assert after[-1].HasField("completed")

        # The turn that was running at the kill: every event after the last one seen, exactly once.
        turn_id = seen[0].turn_id
        resumed: list[turn_pb2.TurnEvent] = []

        async def resumed_to_the_end() -> bool:
            resumed.clear()
            try:
                request = cs_pb2.ResumeTurnRequest(session_id=running, turn_id=turn_id, after_seq=seen[-1].seq)
                async for response in stub.ResumeTurn(request, timeout=60):
                    resumed.append(response.event)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.NOT_FOUND):
                    return False  # still running or not recorded yet
                raise
            return True

        await wait_for(resumed_to_the_end, timeout_s=90, what="the running turn to be resumable")
        events = seen + resumed
        assert [e.seq for e in events] == list(range(1, len(events) + 1)), "no gap, no repeat"
        assert events[-1].HasField("completed")
        assert reply_text(events) == "".join(scripted_reply("across the outage", tokens))
    closing = time.monotonic()
    await engine.close()
    print(f"engine closed {time.monotonic() - closing:.2f} s after the outage")


async def test_the_engine_recovers_from_a_nats_server_kill_by_itself(make_engine: object) -> None:
    engine: Engine = await make_engine(nats_url="")  # type: ignore[operator]
    server = engine._embedded_nats
    assert server is not None and server.pid is not None
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        session_id = await create_session(stub)
        sent = [(await collect_turn(stub, session_id, "before"))[0].turn_id]
        killed = server.pid
        os.kill(killed, signal.SIGKILL)
        killed_at = time.monotonic()

        async def back() -> bool:
            return server.restarts == 1 and await _status(health) == health_pb2.HealthCheckResponse.SERVING

        await wait_for(back, timeout_s=60, what="the engine to serve again")
        serving_s = time.monotonic() - killed_at
        assert server.pid not in (None, killed)
        after = await collect_turn(stub, session_id, "after", timeout=60)
        assert after[-1].HasField("completed")
        first_turn_s = time.monotonic() - killed_at
        sent.append(after[0].turn_id)
        history = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id))
        assert [t.turn_id for t in history.turns] == sent

        async def stored() -> bool:  # the writer's ledger consumer resumed too
            try:
                await engine.writer.flush()
            except Exception:
                return False  # a retry may still be under way
            rows = await TranscriptStore.open(engine.config.lancedb_location)
            try:
                return [r.turn_id for r in await rows.history(engine.config.default_tenant, session_id)] == sent
            finally:
                await rows.close()

        await wait_for(stored, timeout_s=60, what="both turns to be stored")
    closing = time.monotonic()
    await engine.close()
    print(
        f"nats-server SIGKILL: SERVING after {serving_s:.2f} s, first turn completed after {first_turn_s:.2f} s; "
        f"engine closed in {time.monotonic() - closing:.2f} s"
    )


async def test_closing_during_a_lasting_outage_completes(make_engine: object, nats_binary: Path) -> None:
    engine: Engine = await make_engine(  # type: ignore[operator]
        nats_url="", nats_server_bin=str(nats_binary), scripted_tokens=200, scripted_token_delay_s=0.05
    )
    server = engine._embedded_nats
    assert server is not None and server.pid is not None
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="cut off"), timeout=120)
        stream = call.__aiter__()
        await stream.__anext__()
        os.kill(server.pid, signal.SIGKILL)
        nats_binary.unlink()  # noqa: ASYNC240 - before the engine's loop runs again: no server comes back
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in stream:
                pass
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    closing = time.monotonic()
    await engine.close()  # raised ConnectionResetError from the NATS client before
    print(f"engine closed in {time.monotonic() - closing:.2f} s during a lasting nats-server outage")
    assert engine._embedded_nats is None and server.pid is None
