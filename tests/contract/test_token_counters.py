"""The token counters contract (:class:`salon.storage.usage.TokenCounters`), on the in-memory counters and on a
JetStream key-value bucket: running totals per tenant and day, and no lost update when gateways add at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from salon.storage import Names, TokenCounters
from salon.storage.inmemory import InMemoryTokenCounters
from salon.storage.jetstream.usage import KvTokenCounters, usage_bucket

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


async def test_add_returns_the_running_total(counters: TokenCounters) -> None:
    assert await counters.add("acme", DAY, 120) == 120
    assert await counters.add("acme", DAY, 30) == 150
    assert await counters.add("acme", DAY, 0) == 150
    assert await counters.get("acme", DAY) == 150


async def test_tenants_and_days_are_counted_apart(counters: TokenCounters) -> None:
    await counters.add("acme", DAY - 1, 5)
    await counters.add("acme", DAY, 7)
    await counters.add("globex", DAY, 11)
    assert await counters.get("acme", DAY - 1) == 5
    assert await counters.get("acme", DAY) == 7
    assert await counters.get("globex", DAY) == 11
    assert await counters.get("globex", DAY - 1) == 0


async def test_adds_at_the_same_time_all_count(counters: TokenCounters) -> None:
    # Several gateways share the counters: a compare-and-set that loses must read again, never drop an add.
    totals = await asyncio.gather(*(counters.add("acme", DAY, n) for n in range(1, 21)))
    assert await counters.get("acme", DAY) == sum(range(1, 21))
    assert sorted(totals)[-1] == sum(range(1, 21))
    assert len(set(totals)) == len(totals)  # each add saw its own total
