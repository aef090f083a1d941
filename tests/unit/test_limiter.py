"""Per-tenant limits with a clock the test moves: each limit is hit, named, hinted and reset."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from salon.engine.limits import TenantLimiter
from salon.engine.tenants import Limits, TenantPolicy
from salon.storage import ResourceExhausted
from salon.v1 import turn_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def limiter(limits: Limits, clock: Clock, sessions: int = 0) -> TenantLimiter:
    async def count(tenant_id: str) -> int:
        return sessions

    return TenantLimiter(lambda t: TenantPolicy(t, limits), count_sessions=count, wall=clock)


async def test_turns_per_minute_is_a_sliding_window_with_a_retry_hint() -> None:
    clock = Clock()
    lim = limiter(Limits(turns_per_minute=2), clock)
    (await lim.admit_turn("a", "x")).release()
    clock.now += 30
    (await lim.admit_turn("a", "x")).release()
    with pytest.raises(ResourceExhausted) as info:
        await lim.admit_turn("a", "x")
    assert info.value.reason == "TURNS_PER_MINUTE"
    assert info.value.retry_after_s == pytest.approx(30.0)
    await lim.admit_turn("b", "x")  # another tenant has its own count
    clock.now += 30.001
    await lim.admit_turn("a", "x")  # the first turn left the window


async def test_concurrent_turns_count_until_released() -> None:
    lim = limiter(Limits(concurrent_turns=1), Clock())
    slot = await lim.admit_turn("a", "x")
    with pytest.raises(ResourceExhausted) as info:
        await lim.admit_turn("a", "x")
    assert info.value.reason == "CONCURRENT_TURNS" and info.value.retry_after_s
    slot.release()
    slot.release()  # idempotent: never frees a place twice
    await lim.admit_turn("a", "x")
    with pytest.raises(ResourceExhausted):
        await lim.admit_turn("a", "x")


async def test_tokens_per_day_come_from_usage_events_once_per_turn_and_reset_at_midnight() -> None:
    clock = Clock()
    clock.now = 86400.0 * 20_000 + 3600  # 01:00 UTC
    lim = limiter(Limits(tokens_per_day=150), clock)

    async def events() -> AsyncIterator[turn_pb2.TurnEvent]:
        yield turn_pb2.TurnEvent(turn_id="t1", usage=turn_pb2.Usage(input_tokens=60, output_tokens=40))
        yield turn_pb2.TurnEvent(turn_id="t1", completed=turn_pb2.TurnCompleted())

    for _ in range(2):  # the second pass is a replay of the same turn: not counted again
        relayed = [e async for e in lim.metered("a", await lim.admit_turn("a", "x"), events())]
        assert len(relayed) == 2
    assert (await lim.usage("a")).tokens_today == 100
    assert (await lim.usage("a")).concurrent_turns == 0, "slots are released when the stream ends"
    await lim.add_usage("a", "t2", turn_pb2.Usage(output_tokens=50, cache_read_input_tokens=1))
    with pytest.raises(ResourceExhausted) as info:
        await lim.admit_turn("a", "x")
    assert info.value.reason == "TOKENS_PER_DAY"
    assert info.value.retry_after_s == pytest.approx(23 * 3600)
    clock.now += 23 * 3600
    await lim.admit_turn("a", "x")
    assert (await lim.usage("a")).tokens_today == 0


async def test_message_size_per_tenant() -> None:
    lim = limiter(Limits(max_message_bytes=4), Clock())
    await lim.admit_turn("a", "abcd")
    with pytest.raises(ResourceExhausted) as info:
        await lim.admit_turn("a", "abcé")
    assert info.value.reason == "MESSAGE_TOO_LARGE" and "abc" not in info.value.message


async def test_max_sessions() -> None:
    with pytest.raises(ResourceExhausted) as info:
        await limiter(Limits(max_sessions=3), Clock(), sessions=3).check_new_session("a")
    assert info.value.reason == "MAX_SESSIONS"
    await limiter(Limits(max_sessions=3), Clock(), sessions=2).check_new_session("a")
    await limiter(Limits(), Clock(), sessions=10**6).check_new_session("a")


async def test_a_refused_turn_counts_nothing() -> None:
    lim = limiter(Limits(turns_per_minute=1, concurrent_turns=5), Clock())
    await lim.admit_turn("a", "x")
    with pytest.raises(ResourceExhausted):
        await lim.admit_turn("a", "x")
    usage = await lim.usage("a")
    assert (usage.turns_last_minute, usage.concurrent_turns) == (1, 1)


async def test_token_totals_are_shared_by_limiters_on_one_store() -> None:
    from salon.storage.inmemory import InMemoryTokenCounters

    clock = Clock()
    shared = InMemoryTokenCounters()
    policy = Limits(tokens_per_day=10)
    one = TenantLimiter(lambda t: TenantPolicy(t, policy), tokens=shared, wall=clock)
    # The second reads the shared total at every check (the default reads it at most every flush interval).
    two = TenantLimiter(lambda t: TenantPolicy(t, policy), tokens=shared, wall=clock, flush_interval_s=0.0)
    await one.add_usage("a", "t1", turn_pb2.Usage(output_tokens=10))
    (await two.admit_turn("a", "x")).release()  # in the first gateway's memory only, until it records them
    assert await one.flush()
    with pytest.raises(ResourceExhausted):
        await two.admit_turn("a", "x")
    assert (await two.usage("a")).tokens_today == 10


async def test_a_resumed_stream_counts_the_tokens_an_abandoned_one_did_not() -> None:
    lim = limiter(Limits(), Clock())

    async def events() -> AsyncIterator[turn_pb2.TurnEvent]:
        yield turn_pb2.TurnEvent(turn_id="t1", delta=turn_pb2.TokenDelta(text="hi"))
        yield turn_pb2.TurnEvent(turn_id="t1", usage=turn_pb2.Usage(output_tokens=7))

    stream = lim.metered("a", await lim.admit_turn("a", "x"), events())
    await anext(stream)  # the client leaves after the first delta
    await stream.aclose()
    assert (await lim.usage("a")).tokens_today == 0 and (await lim.usage("a")).concurrent_turns == 0
    assert len([e async for e in lim.counted("a", events())]) == 2
    assert (await lim.usage("a")).tokens_today == 7


async def test_tokens_are_recorded_by_flushes_exactly_once_each() -> None:
    from salon.storage.inmemory import InMemoryTokenCounters

    clock = Clock()
    shared = InMemoryTokenCounters()
    lim = TenantLimiter(lambda t: TenantPolicy(t, Limits()), tokens=shared, wall=clock)
    day = int(clock.now // 86400)
    for n in range(1, 11):
        await lim.add_usage("a", f"t{n}", turn_pb2.Usage(output_tokens=n))
    assert await shared.get("a", day) == 0, "nothing is written on a turn's path"
    assert await lim.flush() and await lim.flush()  # a second flush with nothing new writes nothing more
    assert await shared.get("a", day) == 55
    await lim.add_usage("a", "t11", turn_pb2.Usage(output_tokens=5))
    await lim.close()  # the last tokens are recorded when the limiter stops
    assert await shared.get("a", day) == 60
    await lim.close()


async def test_concurrent_turns_hold_across_limiters_on_one_store_and_a_dead_ones_places_expire() -> None:
    from salon.storage.inmemory import InMemoryTurnCounters

    clock = Clock()
    shared = InMemoryTurnCounters(lease_s=15.0)
    policy = Limits(concurrent_turns=2)
    one = TenantLimiter(lambda t: TenantPolicy(t, policy), turns=shared, wall=clock)
    two = TenantLimiter(lambda t: TenantPolicy(t, policy), turns=shared, wall=clock)
    await one.admit_turn("a", "x")
    slot = await two.admit_turn("a", "x")
    with pytest.raises(ResourceExhausted) as info:
        await one.admit_turn("a", "x")
    assert info.value.reason == "CONCURRENT_TURNS" and info.value.retry_after_s
    assert (await one.usage("a")).concurrent_turns == 2, "the figures are the tenant's over both gateways"
    released = slot.release()
    assert released is not None
    await released
    await one.admit_turn("a", "x")
    with pytest.raises(ResourceExhausted):
        await two.admit_turn("a", "x")
    # The first gateway dies holding both places (nothing renews its lease): they expire with it.
    clock.now += 15.0
    await two.admit_turn("a", "x")


async def test_turns_per_minute_hold_across_limiters_on_one_store() -> None:
    from salon.storage.inmemory import InMemoryTurnCounters

    clock = Clock()
    shared = InMemoryTurnCounters()
    policy = Limits(turns_per_minute=2)
    one = TenantLimiter(lambda t: TenantPolicy(t, policy), turns=shared, wall=clock)
    two = TenantLimiter(lambda t: TenantPolicy(t, policy), turns=shared, wall=clock)
    (await one.admit_turn("a", "x")).release()
    clock.now += 10
    (await two.admit_turn("a", "x")).release()
    with pytest.raises(ResourceExhausted) as info:
        await one.admit_turn("a", "x")
    assert info.value.reason == "TURNS_PER_MINUTE"
    assert info.value.retry_after_s == pytest.approx(50.0)
    clock.now += 50.001
    await one.admit_turn("a", "x")
