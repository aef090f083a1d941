"""Nothing acknowledged is lost: inject a fault, recover, then count what was acknowledged, persisted,
lost (must be 0), duplicated (must be 0) and sent to the model twice (must be 0)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import grpc
from conftest import assert_well_formed, collect_turn, create_session, reply_text, wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc

from salon.actors import host_of_shard, shard_for
from salon.engine import Engine
from salon.providers import scripted_reply
from salon.storage.tables import TranscriptStore
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc


async def _history(stub: cs_grpc.ConversationServiceStub, session_id: str, page_size: int = 3) -> list[str]:
    """Every turn id of the transcript, following pages."""
    ids: list[str] = []
    token = ""
    while True:
        page = await stub.GetHistory(
            cs_pb2.GetHistoryRequest(session_id=session_id, page_size=page_size, page_token=token)
        )
        ids += [t.turn_id for t in page.turns]
        token = page.next_page_token
        if not token:
            return ids


async def _stored_turn_ids(engine: Engine, session_id: str) -> list[str]:
    store = await TranscriptStore.open(engine.config.lancedb_location)
    try:
        return [r.turn_id for r in await store.history(engine.config.default_tenant, session_id, limit=10_000)]
    finally:
        await store.close()


async def _wait_stored(engine: Engine, session_id: str, expected: list[str]) -> list[str]:
    """Flush until every expected turn is in LanceDB (the writer may not have fetched them yet)."""
    stored: list[str] = []

    async def done() -> bool:
        nonlocal stored
        try:
            await asyncio.wait_for(engine.writer.flush(), 10)
        except Exception:
            return False  # the writer is restarting
        stored = await _stored_turn_ids(engine, session_id)
        return set(expected) <= set(stored)

    await wait_for(done, timeout_s=60, what="the acknowledged turns to reach LanceDB")
    return stored


async def _model_calls(engine: Engine) -> int:
    return sum(s["model_calls"] for s in await engine.hosts.stats())


async def test_history_pages_through_the_transcript_and_delete_removes_every_row(make_engine: object) -> None:
    engine: Engine = await make_engine()  # type: ignore[operator]
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        other = await create_session(stub)
        sent = [(await collect_turn(stub, session_id, f"turn {i}"))[0].turn_id for i in range(7)]
        unrelated = (await collect_turn(stub, other, "unrelated"))[0].turn_id
        # Before the writer flushed (history reads the ledger's tail) and after.
        assert await _history(stub, session_id) == sent
        assert await _wait_stored(engine, session_id, sent) == sent
        # The other session's row is stored too (it may come in a later flush), so its survival below is judged.
        assert await _wait_stored(engine, other, [unrelated]) == [unrelated]
        assert await _history(stub, session_id) == sent
        page = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id, page_size=1))
        assert page.turns[0].user_text == "turn 0"
        assert page.turns[0].reply_text == "".join(scripted_reply("turn 0", 8))
        assert page.turns[0].usage.output_tokens == 8

        await stub.DeleteSession(cs_pb2.DeleteSessionRequest(session_id=session_id))
        assert await _stored_turn_ids(engine, session_id) == []
        assert len(await _stored_turn_ids(engine, other)) == 1, "only the deleted session's rows go"


async def test_host_killed_mid_stream_the_turn_is_redelivered_and_recorded_once(make_engine: object) -> None:
    engine: Engine = await make_engine(  # type: ignore[operator]
        scripted_tokens=30, scripted_token_delay_s=0.03, ack_wait_s=2.0
    )
    config = engine.config
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        await collect_turn(stub, session_id, "warm up")
        owner = host_of_shard(shard_for(config.default_tenant, session_id, config.num_shards), config.num_hosts)
        pid = engine.hosts.info[owner]["pid"]

        events = []
        call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="survive the crash"), timeout=120)
        async for response in call:
            events.append(response.event)
            if len(events) == 6:
                os.kill(pid, signal.SIGKILL)

    assert_well_formed(events, session_id)
    assert events[-1].HasField("completed")
    assert reply_text(events) == "".join(scripted_reply("survive the crash", 30)), "no gap, no repeat"
    assert [e.WhichOneof("kind") for e in events].count("accepted") == 1
    stored = await _wait_stored(engine, session_id, [events[0].turn_id])
    assert stored.count(events[0].turn_id) == 1, "recorded exactly once"
    assert len(stored) == 2


async def test_writer_killed_before_a_flush_loses_nothing(make_engine: object) -> None:
    engine: Engine = await make_engine(  # type: ignore[operator]
        flush_interval_s=3600.0, flush_rows=10_000, writer_ack_wait_s=2.0
    )
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        acked = [(await collect_turn(stub, session_id, f"keep {i}"))[0].turn_id for i in range(6)]

        async def all_buffered() -> bool:
            status = await engine.writer.status()
            assert status["flushed_rows"] == 0, "nothing may be flushed before the kill"
            return status["buffered"] >= len(acked)  # plus the session's activation marker

        await wait_for(all_buffered, timeout_s=30, what="the writer to hold every turn")

        os.kill((await engine.writer.started())["pid"], signal.SIGKILL)
        stored = await _wait_stored(engine, session_id, acked)
        assert sorted(stored) == sorted(acked), "nothing lost"
        assert len(stored) == len(set(stored)) == 6, "no duplicated rows"


async def test_same_key_after_the_events_expired_is_answered_from_the_record(make_engine: object) -> None:
    engine: Engine = await make_engine(dedupe_window_s=1.0, event_retention_s=2.0)  # type: ignore[operator]
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        first = await collect_turn(stub, session_id, "remembered", idempotency_key="late-retry")
        calls = await _model_calls(engine)
        js = engine._nc.jetstream()  # the test reads the stream directly to know when events expired

        async def expired() -> bool:
            info = await js.stream_info(engine.names.events_stream)
            return info.state.messages == 0

        await wait_for(expired, timeout_s=30, what="the turn's events to expire")
        again = await collect_turn(stub, session_id, "remembered", idempotency_key="late-retry")

    assert again[0].accepted.replayed
    assert [e.seq for e in again] == [e.seq for e in first]
    assert [e.WhichOneof("kind") for e in again] == [e.WhichOneof("kind") for e in first]
    # Pieces joined while the first answer streamed are recorded joined: each comes back under its number.
    assert [e.delta.text for e in again if e.HasField("delta")] == [e.delta.text for e in first if e.HasField("delta")]
    assert reply_text(again) == reply_text(first)
    assert await _model_calls(engine) == calls, "the model is not called again"


async def test_unwritable_store_refuses_new_turns_and_loses_nothing(make_engine: object) -> None:
    engine: Engine = await make_engine(  # type: ignore[operator]
        flush_interval_s=0.1, store_check_interval_s=0.1
    )
    data = Path(engine.config.lancedb_location) / "transcripts.lance" / "data"
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        session_id = await create_session(stub)
        acked = [(await collect_turn(stub, session_id, "before"))[0].turn_id]
        await _wait_stored(engine, session_id, acked)

        # Break the table's data directory (root ignores permissions, so make it a file instead).
        moved = data.with_name("data.moved")
        data.rename(moved)
        data.write_text("not a directory")
        try:
            acked.append((await collect_turn(stub, session_id, "during"))[0].turn_id)

            async def refusing() -> bool:
                try:
                    await collect_turn(stub, session_id, "refused?")
                except grpc.aio.AioRpcError as exc:
                    return exc.code() == grpc.StatusCode.UNAVAILABLE
                return False

            await wait_for(refusing, timeout_s=30, what="new turns to be refused")
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        finally:
            data.unlink()
            moved.rename(data)

        async def serving() -> bool:
            reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
            return reply.status == health_pb2.HealthCheckResponse.SERVING

        await wait_for(serving, timeout_s=30, what="the engine to serve again")
        acked.append((await collect_turn(stub, session_id, "after"))[0].turn_id)
        stored = await _wait_stored(engine, session_id, acked)
        assert len(stored) == len(set(stored)), "none twice"


async def test_export_writes_the_transcript_as_parquet_and_arrow(make_engine: object, tmp_path: Path) -> None:
    import pyarrow.parquet as pq
    from pyarrow import ipc

    engine: Engine = await make_engine()  # type: ignore[operator]
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        sent = [(await collect_turn(stub, session_id, f"export {i}"))[0].turn_id for i in range(3)]
    await _wait_stored(engine, session_id, sent)
    for fmt in ("parquet", "arrow"):
        out = tmp_path / f"t.{fmt}"
        result = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "salon.engine.cli",
            "export",
            session_id,
            "--format",
            fmt,
            "--output",
            str(out),
            "--data-dir",
            engine.config.data_dir,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await result.communicate()
        assert result.returncode == 0, err.decode()[-1000:]
        table = pq.read_table(out) if fmt == "parquet" else ipc.open_file(str(out)).read_all()
        assert table.column("turn_id").to_pylist() == sent
        assert table.column("user_text").to_pylist() == [f"export {i}" for i in range(3)]
        assert table.column("reply_text").to_pylist()[0] == "".join(scripted_reply("export 0", 8))
    missing = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "salon.engine.cli",
        "export",
        "no-such-session",
        "--data-dir",
        engine.config.data_dir,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await missing.communicate()
    assert missing.returncode == 2 and b"session not found" in err
