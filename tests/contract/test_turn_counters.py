"""The turn counters contract (:class:`salon.storage.usage.TurnCounters`), in memory and on a JetStream
key-value bucket: the minute window and the running turns hold over every holder (gateway), a holder's running
turns expire with its lease, and admissions racing from many holders never overshoot a limit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from salon.storage import Names, TurnCounters
from salon.storage.inmemory import InMemoryTurnCounters
from salon.storage.jetstream.usage import KvTurnCounters, usage_bucket
from salon.storage.reasons import Reason
from salon.storage.usage import TurnLimits, TurnWindow

NOW = 1_800_000_000.0
LEASE_S = 15.0


@pytest.fixture
async def counters(nats: NatsClient | None, names: Names) -> AsyncIterator[TurnCounters]:
    if nats is None:
        yield InMemoryTurnCounters(LEASE_S)
        return
    js = nats.jetstream()
    yield await KvTurnCounters.open(js, names, LEASE_S)
    await js.delete_key_value(usage_bucket(names))


async def test_the_minute_window_holds_over_holders(counters: TurnCounters) -> None:
    limits = TurnLimits(turns_per_minute=2)
    assert await counters.admit("acme", "g1", 0, limits, now=NOW) is None
    assert await counters.admit("acme", "g2", 0, limits, now=NOW + 20) is None
    refusal = await counters.admit("acme", "g1", 0, limits, now=NOW + 30)
    assert refusal is not None and refusal.reason == Reason.TURNS_PER_MINUTE
    assert refusal.retry_after_s == pytest.approx(30.0)
    assert await counters.admit("globex", "g1", 0, limits, now=NOW + 30) is None  # another tenant
    assert await counters.admit("acme", "g1", 0, limits, now=NOW + 60.001) is None
    assert (await counters.figures("acme", now=NOW + 60.001)).turns_last_minute == 2


async def test_running_turns_hold_over_holders_until_given_back(counters: TurnCounters) -> None:
    limits = TurnLimits(concurrent_turns=2)
    assert await counters.admit("acme", "g1", 0, limits, now=NOW) is None
    assert await counters.admit("acme", "g2", 0, limits, now=NOW) is None
    refusal = await counters.admit("acme", "g1", 1, limits, now=NOW)
    assert refusal is not None and refusal.reason == Reason.CONCURRENT_TURNS and refusal.retry_after_s > 0
    assert (await counters.figures("acme", now=NOW)).concurrent_turns == 2
    await counters.hold("acme", "g2", 0, now=NOW + 1)
    assert await counters.admit("acme", "g1", 1, limits, now=NOW + 1) is None
    assert (await counters.figures("acme", now=NOW + 1)).concurrent_turns == 2


async def test_a_holders_turns_expire_with_its_lease_unless_renewed(counters: TurnCounters) -> None:
    limits = TurnLimits(concurrent_turns=1)
    assert await counters.admit("acme", "dead", 0, limits, now=NOW) is None
    assert await counters.admit("acme", "live", 0, limits, now=NOW) is not None
    await counters.hold("acme", "dead", 1, now=NOW + LEASE_S - 1)  # renewed once, then never again
    assert await counters.admit("acme", "live", 0, limits, now=NOW + 2 * LEASE_S - 1.5) is not None
    assert await counters.admit("acme", "live", 0, limits, now=NOW + 2 * LEASE_S - 1) is None


async def test_holders_racing_never_overshoot(counters: TurnCounters) -> None:
    limits = TurnLimits(turns_per_minute=7, concurrent_turns=100)
    results = await asyncio.gather(*(counters.admit("acme", f"g{n}", 0, limits, now=NOW) for n in range(20)))
    assert sum(r is None for r in results) == 7
    figures = await counters.figures("acme", now=NOW)
    assert (figures.turns_last_minute, figures.concurrent_turns) == (7, 7)


def test_a_window_survives_its_bytes() -> None:
    window = TurnWindow()
    window.admit("g1", 0, TurnLimits(), NOW)
    window.admit("g2", 3, TurnLimits(), NOW + 1.5)
    again = TurnWindow.from_bytes(window.to_bytes())
    assert (again.started, again.holders) == (window.started, window.holders)
    assert TurnWindow.from_bytes(b"").figures(NOW).turns_last_minute == 0
