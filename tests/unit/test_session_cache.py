"""The gateway's cache of session definitions: kept only while changes are watched, forgotten on a change, a
reconnect or its age, and never keeping a read that raced a change."""

from __future__ import annotations

import asyncio

import pytest

from salon.engine.session_cache import FEED_RECOVERY_S, SessionCache
from salon.storage import NotFound
from salon.storage.inmemory import InMemorySessionRegistry
from salon.v1 import session_pb2


class Counting(InMemorySessionRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.gate: asyncio.Event | None = None

    async def get(self, tenant_id: str, session_id: str) -> session_pb2.Session:
        self.reads += 1
        session = await super().get(tenant_id, session_id)
        if self.gate is not None:
            await self.gate.wait()
        return session


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _setup() -> tuple[Counting, SessionCache, Clock, list[int]]:
    registry = Counting()
    await registry.create("t", session_pb2.Session(session_id="s"))
    clock = Clock()
    cache = SessionCache(registry, ttl_s=10.0, clock=clock)
    connection = [0]
    cache.enable(lambda: connection[0])
    return registry, cache, clock, connection


async def test_nothing_is_kept_unless_changes_are_watched() -> None:
    registry = Counting()
    await registry.create("t", session_pb2.Session(session_id="s"))
    cache = SessionCache(registry)
    await cache.get("t", "s")
    await cache.get("t", "s")
    assert registry.reads == 2


async def test_a_definition_is_kept_until_changed_or_old() -> None:
    registry, cache, clock, _ = await _setup()
    for _ in range(3):
        assert (await cache.get("t", "s")).session_id == "s"
    assert registry.reads == 1
    cache.forget("t", "s")  # the change feed reports a write (another gateway deleted it)
    await registry.delete("t", "s")
    with pytest.raises(NotFound):
        await cache.get("t", "s")
    await registry.create("t", session_pb2.Session(session_id="s"))
    await cache.get("t", "s")
    reads = registry.reads
    clock.now += 10.0
    await cache.get("t", "s")
    assert registry.reads == reads + 1, "an entry lives ttl_s at most"


async def test_a_read_that_raced_a_change_is_not_kept() -> None:
    registry, cache, _, _ = await _setup()
    registry.gate = asyncio.Event()
    reading = asyncio.ensure_future(cache.get("t", "s"))
    await asyncio.sleep(0)  # wait-ok: one loop turn, so the read is in flight when the change arrives
    cache.forget("t", "s")
    registry.gate.set()
    await reading
    registry.gate = None
    await cache.get("t", "s")
    assert registry.reads == 2


async def test_a_reconnect_forgets_everything_until_the_feed_recovered() -> None:
    registry, cache, clock, connection = await _setup()
    await cache.get("t", "s")
    connection[0] += 1
    await cache.get("t", "s")
    await cache.get("t", "s")
    assert registry.reads == 3
    clock.now += FEED_RECOVERY_S
    await cache.get("t", "s")
    await cache.get("t", "s")
    assert registry.reads == 4
