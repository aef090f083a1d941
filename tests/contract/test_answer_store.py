"""The tool answer contract (:class:`salon.storage.tool_answers.AnswerStore`), on the in-memory store and on a
JetStream key-value bucket: the first answer for a call holds, a turn's answers are read back in order, and an
answer expires after its time-to-live."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from salon.storage import AnswerStore, Names, StoredAnswer
from salon.storage.inmemory import InMemoryAnswerStore
from salon.storage.jetstream.bus import BusSettings, ensure_bus
from salon.storage.jetstream.client import close_connection, connect
from salon.storage.jetstream.erasure import event_purger
from salon.storage.jetstream.tool_answers import KvAnswerStore

LONG_S = 600.0


@pytest.fixture
async def store(nats: NatsClient | None, names: Names) -> AsyncIterator[AnswerStore]:
    if nats is None:
        yield InMemoryAnswerStore()
        return
    js = nats.jetstream()
    yield await KvAnswerStore.open(js, names)
    await js.delete_key_value(names.tool_answers_bucket)


def _result(call_id: str, content: str = "42", *, turn_id: str = "turn-1") -> StoredAnswer:
    return StoredAnswer("tenant-a", "session-1", turn_id, call_id, "result", content=content)


def _decision(call_id: str, approve: bool) -> StoredAnswer:
    return StoredAnswer("tenant-a", "session-1", "turn-1", call_id, "decision", approve=approve, reason="ok")


async def test_the_first_answer_for_a_call_holds(store: AnswerStore) -> None:
    first, created = await store.put(_result("call-1", "first"), LONG_S)
    assert created and first.stored_at_ns > 0 and first.same_as(_result("call-1", "first"))
    again, created = await store.put(_result("call-1", "second"), LONG_S)
    assert not created and again.content == "first" and again.stored_at_ns == first.stored_at_ns
    same, created = await store.put(_result("call-1", "first"), LONG_S)
    assert not created and same == first, "the same answer again is not stored twice"
    held = await store.get("tenant-a", "session-1", "turn-1", "call-1", "result")
    assert held is not None and held.content == "first"
    assert await store.get("tenant-a", "session-1", "turn-1", "call-2", "result") is None
    assert await store.get("tenant-b", "session-1", "turn-1", "call-1", "result") is None, "tenants kept apart"


async def test_a_call_keeps_a_decision_and_a_result_apart(store: AnswerStore) -> None:
    decision, _ = await store.put(_decision("call-1", approve=True), LONG_S)
    result, _ = await store.put(_result("call-1"), LONG_S)
    assert decision.kind == "decision" and decision.approve
    assert result.kind == "result" and result.content == "42"


async def test_a_turns_answers_come_back_in_the_order_stored(store: AnswerStore) -> None:
    odd_id = "toolu 01/é.*>"  # a model may name a call with characters no key takes
    await store.put(_result("call-b"), LONG_S)
    await store.put(_decision(odd_id, approve=False), LONG_S)
    await store.put(_result("call-a"), LONG_S)
    await store.put(_result("call-c", turn_id="turn-2"), LONG_S)
    answers = await store.of_turn("tenant-a", "session-1", "turn-1")
    assert [(a.call_id, a.kind) for a in answers] == [("call-b", "result"), (odd_id, "decision"), ("call-a", "result")]
    assert await store.of_turn("tenant-a", "session-1", "turn-9") == []


async def test_an_answer_expires_after_its_time_to_live(store: AnswerStore) -> None:
    await store.put(_result("call-1", "gone"), 1.0)
    await store.put(_result("call-2", "kept"), LONG_S)
    deadline = time.monotonic() + 30.0
    while await store.get("tenant-a", "session-1", "turn-1", "call-1", "result") is not None:
        assert time.monotonic() < deadline, "the answer never expired"
        await asyncio.sleep(0.2)  # wait-ok: polls a condition with a deadline
    assert [a.call_id for a in await store.of_turn("tenant-a", "session-1", "turn-1")] == ["call-2"]
    taken, created = await store.put(_result("call-1", "new"), LONG_S)
    assert created and taken.content == "new", "an expired answer's call may be answered again"


async def test_a_watch_sees_the_kept_answers_then_each_new_one(store: AnswerStore) -> None:
    await store.put(_result("call-1", "before"), LONG_S)
    seen: list[str] = []

    async def follow() -> None:
        async for answer in store.watch():
            seen.append(answer.content)

    task = asyncio.create_task(follow())
    try:
        deadline = time.monotonic() + 30.0
        while seen != ["before"]:
            assert time.monotonic() < deadline, f"the kept answer was not seen: {seen}"
            await asyncio.sleep(0.05)  # wait-ok: polls a condition with a deadline
        await store.put(_result("call-1", "repeat"), LONG_S)  # not stored: not seen
        await store.put(_decision("call-2", approve=True), LONG_S)
        await store.put(_result("call-3", "after"), LONG_S)
        while len(seen) < 3:
            assert time.monotonic() < deadline, f"new answers were not seen: {seen}"
            await asyncio.sleep(0.05)  # wait-ok: polls a condition with a deadline
        assert seen == ["before", "", "after"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.integration
async def test_a_users_erasure_purges_the_answers_kept_for_their_sessions(nats_url: str, names: Names) -> None:
    nc = await connect(nats_url, name="contract-erasure")
    try:
        js = nc.jetstream()
        purge = event_purger(js, names)
        await ensure_bus(js, names, BusSettings(num_shards=1))
        await purge("tenant-a", "session-1")  # no answer kept yet: nothing to purge, no error
        store = await KvAnswerStore.open(js, names)
        await store.put(_result("call-1"), LONG_S)
        other = StoredAnswer("tenant-a", "session-2", "turn-1", "call-1", "result", content="kept")
        await store.put(other, LONG_S)
        await purge("tenant-a", "session-1")
        assert await store.of_turn("tenant-a", "session-1", "turn-1") == []
        assert [a.content for a in await store.of_turn("tenant-a", "session-2", "turn-1")] == ["kept"]
        await js.delete_key_value(names.tool_answers_bucket)
        await js.delete_stream(names.turns_stream)
        await js.delete_stream(names.events_stream)
    finally:
        await close_connection(nc)
