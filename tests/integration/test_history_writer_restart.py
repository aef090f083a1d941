"""A turn the client saw complete is in its history at every moment, whatever order the batch writer stores
turns in: after a writer restart, later turns reach the table before an earlier one is redelivered."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
from conftest import collect_turn, create_session, wait_for

from salon.engine import Engine
from salon.storage.tables import TranscriptStore
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc


async def _history(stub: cs_grpc.ConversationServiceStub, session_id: str, page_size: int) -> list[str]:
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


async def _stored(engine: Engine, session_id: str) -> list[str]:
    store = await TranscriptStore.open(engine.config.lancedb_location)
    try:
        return [r.turn_id for r in await store.history(engine.config.default_tenant, session_id, limit=1000)]
    finally:
        await store.close()


async def test_an_earlier_turn_held_by_a_dead_writer_stays_in_history(make_engine: object) -> None:
    # The writer flushes only when told to, and a taken entry is not redelivered within the test: the first
    # writer holds turn 0 unwritten when it dies, and nothing but this test makes the next one write.
    engine: Engine = await make_engine(  # type: ignore[operator]
        flush_interval_s=3600.0, flush_rows=10_000, writer_ack_wait_s=3600.0
    )
    async with grpc.aio.insecure_channel(engine.target) as channel:
        stub = cs_grpc.ConversationServiceStub(channel)
        session_id = await create_session(stub)
        first = (await collect_turn(stub, session_id, "held by the first writer"))[0].turn_id

        async def buffered() -> bool:
            return (await engine.writer.status())["buffered"] >= 2  # the activation marker and turn 0

        await wait_for(buffered, timeout_s=30, what="the first writer to take turn 0")
        os.kill((await engine.writer.started())["pid"], signal.SIGKILL)

        async def restarted() -> bool:
            try:
                await asyncio.wait_for(engine.writer.status(), 10)
            except Exception:
                return False
            return True

        await wait_for(restarted, timeout_s=60, what="the writer to restart")
        later = [(await collect_turn(stub, session_id, f"later {i}"))[-1] for i in range(2)]
        assert all(e.HasField("completed") for e in later)
        later_ids = [e.turn_id for e in later]

        async def later_stored() -> bool:
            await asyncio.wait_for(engine.writer.flush(), 10)
            return set(later_ids) <= set(await _stored(engine, session_id))

        await wait_for(later_stored, timeout_s=60, what="the later turns to be stored")
        assert first not in await _stored(engine, session_id), "turn 0 still waits for its redelivery"

        expected = [first, *later_ids]
        assert await _history(stub, session_id, page_size=50) == expected
        assert await _history(stub, session_id, page_size=1) == expected
