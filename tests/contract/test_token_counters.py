"""The token counters contract (:class:`salon.storage.usage.TokenCounters`), on the in-memory counters and on a
JetStream key-value bucket: running totals per writer, tenant and day, summed over writers; a repeated record
counts nothing twice; writers recording at once all count."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from salon.storage import Names, TokenCounters
from salon.storage.inmemory import InMemoryTokenCounters
from salon.storage.jetstream.usage import KvTokenCounters, open_usage_bucket, usage_bucket

DAY = 20_000


@pytest.fixture
async def counters(nats: NatsClient | None, names: Names) -> AsyncIterator[TokenCounters]:
    if nats is None:
        yield InMemoryTokenCounters()
        return
    js = nats.jetstream()
    yield await KvTokenCounters.open(js, names)
    await js.delete_key_value(usage_bucket(names))


async def test_nothing_counted_is_zero(counters: TokenCounters) -> None:
    assert await counters.get("acme", DAY) == 0


async def test_record_returns_the_total_over_writers(counters: TokenCounters) -> None:
    assert await counters.record("acme", DAY, "g1", 120) == 120
    assert await counters.record("acme", DAY, "g2", 30) == 150
    assert await counters.record("acme", DAY, "g1", 150) == 180
    assert await counters.get("acme", DAY) == 180


async def test_a_repeated_or_older_record_counts_nothing_twice(counters: TokenCounters) -> None:
    await counters.record("acme", DAY, "g1", 100)
    assert await counters.record("acme", DAY, "g1", 100) == 100  # a retry after an unclear failure
    assert await counters.record("acme", DAY, "g1", 40) == 100  # a late, older figure
    assert await counters.get("acme", DAY) == 100


async def test_tenants_and_days_are_counted_apart(counters: TokenCounters) -> None:
    await counters.record("acme", DAY - 1, "g", 5)
    await counters.record("acme", DAY, "g", 7)
    await counters.record("globex", DAY, "g", 11)
    assert await counters.get("acme", DAY - 1) == 5
    assert await counters.get("acme", DAY) == 7
    assert await counters.get("globex", DAY) == 11
    assert await counters.get("globex", DAY - 1) == 0


async def test_writers_recording_at_the_same_time_all_count(counters: TokenCounters) -> None:
    # Gateways share the counters: a compare-and-set that loses must read again and land, never drop a figure.
    async def writer(name: str, totals: range) -> None:
        for total in totals:
            await counters.record("acme", DAY, name, total)

    await asyncio.gather(*(writer(f"g{w}", range(1, 11)) for w in range(12)))
    assert await counters.get("acme", DAY) == 12 * 10


@pytest.mark.integration
async def test_a_total_from_before_writers_counts_as_one_writer(nats: NatsClient | None, names: Names) -> None:
    if nats is None:
        pytest.skip("a JetStream bucket written by an earlier version")
    kv = await open_usage_bucket(nats.jetstream(), names)
    try:
        await kv.put(f"acme.{DAY}", b"70")
        counters = KvTokenCounters(kv)
        assert await counters.get("acme", DAY) == 70
        assert await counters.record("acme", DAY, "g1", 5) == 75
    finally:
        await nats.jetstream().delete_key_value(usage_bucket(names))
