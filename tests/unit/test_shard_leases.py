"""Elastic shard ownership on the in-memory lease store: fair shares, joining, leaving, dying, and never two
hosts serving one shard."""

from __future__ import annotations

import asyncio
import time

import pytest

from salon.actors.shard_leases import ShardLeases, fair_shares, host_key, plan_moves, shard_key
from salon.storage.inmemory import InMemoryLeaseStore
from salon.storage.leases import Lease

TTL = 10.0
SHARDS = 16


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Cluster:
    """Hosts on one store, recording which shards each serves, and failing the test the moment two serve one."""

    def __init__(self, shards: int = SHARDS) -> None:
        self.clock = Clock()
        self.store = InMemoryLeaseStore(TTL, clock=self.clock)
        self.shards = shards
        self.serving: dict[str, set[int]] = {}
        self.hosts: dict[str, ShardLeases] = {}
        self.graces: list[float] = []

    def add(self, name: str, *, expected: int = 1, preferred: tuple[int, ...] = ()) -> ShardLeases:
        self.serving[name] = set()

        async def take(shard: int) -> None:
            others = [h for h, s in self.serving.items() if h != name and shard in s]
            assert not others, f"{name} took shard {shard} still served by {others}"
            self.serving[name].add(shard)

        async def give_up(shard: int, grace_s: float) -> None:
            self.graces.append(grace_s)
            self.serving[name].discard(shard)

        leases = ShardLeases(
            self.store,
            holder=name,
            num_shards=self.shards,
            on_take=take,
            on_give_up=give_up,
            preferred=preferred,
            expected_hosts=expected,
            clock=self.clock,
        )
        self.hosts[name] = leases
        return leases

    async def rounds(self, n: int = 3, names: list[str] | None = None) -> None:
        for _ in range(n):
            for name in names or list(self.hosts):
                await self.hosts[name].tick()
                await self.hosts[name].settled()

    def counts(self) -> dict[str, int]:
        return {name: len(s) for name, s in self.serving.items()}

    def served(self) -> list[int]:
        return sorted(s for shards in self.serving.values() for s in shards)


def test_fair_shares_split_evenly_in_name_order() -> None:
    assert fair_shares(["b", "a", "c"], 16) == {"a": 6, "b": 5, "c": 5}
    assert fair_shares(["a"], 16) == {"a": 16}
    assert fair_shares(["a", "b"], 16) == {"a": 8, "b": 8}
    assert fair_shares([], 16) == {}


def test_plan_takes_preferred_free_shards_first() -> None:
    moves = plan_moves("a", ["a", "b"], {}, 4, preferred=[1, 3])
    assert moves.take == (1, 3)
    assert moves.give_up == ()


def test_plan_gives_up_the_excess_keeping_preferred_shards() -> None:
    owners = dict.fromkeys(range(4), "a")
    moves = plan_moves("a", ["a", "b"], owners, 4, preferred=[0, 1])
    assert moves.give_up == (3, 2)
    assert moves.take == ()


def test_plan_never_takes_an_owned_shard() -> None:
    owners = dict.fromkeys(range(3), "b")
    moves = plan_moves("a", ["a", "b"], owners, 4)
    assert moves.take == (3,)


async def test_hosts_started_together_split_the_shards_as_the_fixed_layout() -> None:
    cluster = Cluster()
    a = cluster.add("host-0", expected=2, preferred=tuple(range(0, SHARDS, 2)))
    cluster.add("host-1", expected=2, preferred=tuple(range(1, SHARDS, 2)))
    # Alone, the first waits for the second instead of taking everything.
    assert await a.tick() is True
    assert cluster.counts() == {"host-0": 0, "host-1": 0}
    await cluster.rounds(2)
    assert cluster.serving == {"host-0": set(range(0, SHARDS, 2)), "host-1": set(range(1, SHARDS, 2))}


async def test_a_lone_host_waits_for_the_expected_ones_at_most_one_lease_time() -> None:
    cluster = Cluster()
    a = cluster.add("host-0", expected=2)
    await a.tick()
    assert cluster.counts() == {"host-0": 0}
    cluster.clock.now += TTL
    await cluster.rounds(1)
    assert cluster.counts() == {"host-0": SHARDS}


async def test_a_joining_host_takes_about_its_share_and_nobody_serves_twice() -> None:
    cluster = Cluster()
    cluster.add("host-0")
    cluster.add("host-1")
    await cluster.rounds(2)
    assert cluster.counts() == {"host-0": 8, "host-1": 8}
    c = cluster.add("host-2")
    await cluster.rounds(3)
    assert sorted(cluster.counts().values()) == [5, 5, 6]
    assert cluster.served() == list(range(SHARDS))
    assert c.taken == len(cluster.serving["host-2"])
    # The moves were graceful: each host gave its running turns the move grace.
    assert cluster.graces and all(g > 0 for g in cluster.graces)


async def test_a_leaving_host_hands_its_shards_to_the_others() -> None:
    cluster = Cluster()
    for name in ("host-0", "host-1", "host-2"):
        cluster.add(name)
    await cluster.rounds(3)
    await cluster.hosts["host-1"].leave(grace_s=2.0)
    assert cluster.serving["host-1"] == set()
    del cluster.hosts["host-1"]
    await cluster.rounds(2)
    assert cluster.counts() == {"host-0": 8, "host-1": 0, "host-2": 8}
    assert cluster.served() == list(range(SHARDS))
    # Nothing of the leaver is left: neither its presence nor its shards.
    assert all(lease.holder != "host-1" for lease in (await cluster.store.held()).values())


async def test_a_dead_hosts_shards_move_after_the_lease_time_and_it_finds_them_lost() -> None:
    cluster = Cluster()
    for name in ("host-0", "host-1"):
        cluster.add(name)
    await cluster.rounds(2)
    dead = cluster.hosts.pop("host-1")
    cluster.serving["host-1"].clear()  # paused: it serves nothing, and renews nothing
    # Before the lease time, its shards stay its own.
    cluster.clock.now += TTL / 2
    await cluster.rounds(1)
    assert cluster.counts()["host-0"] == 8
    cluster.clock.now += TTL * 0.6
    # The survivor renewed in time: only the dead host's leases expired.
    await cluster.rounds(2)
    assert cluster.counts()["host-0"] == SHARDS
    # The paused host comes back: its renewals are refused, the shards are another's, and it stops serving them
    # (its running turns get the grace; the ledger fences any write it makes to a session that moved).
    lost_before = dead.lost
    await dead.tick()
    await dead.settled()
    assert dead.lost - lost_before == 8
    assert dead.owned == frozenset()


async def test_a_lease_expired_by_a_late_round_is_taken_again_without_interruption() -> None:
    cluster = Cluster()
    host = cluster.add("host-0")
    await cluster.rounds(1)
    served = set(cluster.serving["host-0"])
    # The host's rounds came late (an overloaded machine): its leases expired, but nobody took them.
    cluster.clock.now += TTL * 1.5
    await cluster.rounds(1)
    assert cluster.serving["host-0"] == served
    assert host.lost == 0 and cluster.graces == []


async def test_only_one_of_two_racing_hosts_gets_a_shard() -> None:
    clock = Clock()
    store = InMemoryLeaseStore(TTL, clock=clock)
    first = await store.create(shard_key(3), "a")
    second = await store.create(shard_key(3), "b")
    assert first is not None and second is None
    # A renewal naming an old revision is refused.
    assert first is not None
    renewed = await store.renew(first)
    assert renewed is not None
    assert await store.renew(first) is None
    # Releasing with an old revision leaves the lease alone; with the current one it frees it.
    await store.release(first)
    assert (await store.held())[shard_key(3)].holder == "a"
    await store.release(renewed)
    assert await store.create(shard_key(3), "b") is not None


@pytest.mark.parametrize("hosts", [1, 3, 5, 7])
async def test_any_number_of_hosts_converges_to_fair_shares(hosts: int) -> None:
    cluster = Cluster()
    for i in range(hosts):
        cluster.add(f"host-{i}")
    await cluster.rounds(hosts + 2)
    assert cluster.counts() == fair_shares(cluster.hosts, SHARDS)
    assert cluster.served() == list(range(SHARDS))


async def test_a_restarted_host_takes_its_own_leases_back_at_once() -> None:
    cluster = Cluster()
    cluster.add("host-0")
    cluster.add("host-1")
    await cluster.rounds(2)
    before = set(cluster.serving["host-1"])
    # The process dies and a new one of the same host starts before the leases expire.
    await cluster.hosts["host-1"].close()
    cluster.serving["host-1"] = set()
    cluster.add("host-1")
    await cluster.rounds(1, names=["host-1"])
    assert cluster.serving["host-1"] == before
    assert cluster.counts() == {"host-0": 8, "host-1": 8}


async def test_a_lease_lost_while_its_shard_is_given_up_lets_the_give_up_finish() -> None:
    clock = Clock()
    store = InMemoryLeaseStore(TTL, clock=clock)
    serving: set[int] = set()
    cancelled: list[int] = []
    begun: set[int] = set()
    both_begun = asyncio.Event()
    finish = asyncio.Event()

    async def take(shard: int) -> None:
        serving.add(shard)

    async def give_up(shard: int, grace_s: float) -> None:
        begun.add(shard)
        if len(begun) == 2:
            both_begun.set()
        try:
            await finish.wait()  # the shard's running turns, within the grace
        except asyncio.CancelledError:
            cancelled.append(shard)
            raise
        serving.discard(shard)

    host = ShardLeases(store, holder="host-0", num_shards=4, on_take=take, on_give_up=give_up, clock=clock)
    await host.tick()
    assert serving == {0, 1, 2, 3}
    assert await store.create(host_key("host-1"), "host-1") is not None
    await host.tick()  # a second host: two shards are being given up
    stopping = {0, 1, 2, 3} - host.owned
    assert len(stopping) == 2
    await asyncio.wait_for(both_begun.wait(), 10)
    # The machine stalls past the lease time mid-move, and the other host takes the shards being given up.
    clock.now += TTL * 1.5
    assert await store.create(host_key("host-1"), "host-1") is not None
    for shard in stopping:
        assert await store.create(shard_key(shard), "host-1") is not None
    await host.tick()
    assert host.lost == 2
    # The give-ups go on (they already stopped pulling; cancelling one midway would leave its shard's subscription
    # and sessions behind) and end as they would have.
    finish.set()
    await host.settled()
    assert cancelled == []
    assert serving == set(host.owned) == {0, 1, 2, 3} - stopping


async def test_a_round_cut_short_while_a_shard_starts_releases_its_lease() -> None:
    clock = Clock()
    store = InMemoryLeaseStore(TTL, clock=clock)
    starting = asyncio.Event()

    async def take(shard: int) -> None:
        starting.set()
        await asyncio.Event().wait()  # starting the shard hangs (a stuck subscription, say)

    async def give_up(shard: int, grace_s: float) -> None:
        raise AssertionError("nothing was being served")

    host = ShardLeases(store, holder="host-0", num_shards=2, on_take=take, on_give_up=give_up, clock=clock)
    round_ = asyncio.create_task(host.tick())
    await asyncio.wait_for(starting.wait(), 10)
    round_.cancel()  # as the lease round's time limit does
    with pytest.raises(asyncio.CancelledError):
        await round_
    # Not held while nothing serves it: the next round (here or another host's) takes the shard again.
    assert host.owned == frozenset()
    assert not any(key.startswith("shard.") for key in await store.held())


class StallingStore(InMemoryLeaseStore):
    """A lease store whose first read never answers (a store stuck behind a lost connection)."""

    def __init__(self) -> None:
        super().__init__(0.3)
        self.reads = 0

    async def held(self) -> dict[str, Lease]:
        self.reads += 1
        if self.reads == 1:
            await asyncio.Event().wait()
        return await super().held()


async def test_a_round_stuck_past_the_lease_time_is_abandoned_and_the_next_one_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = StallingStore()

    async def take(shard: int) -> None:
        pass

    async def give_up(shard: int, grace_s: float) -> None:
        pass

    host = ShardLeases(store, holder="host-0", num_shards=2, on_take=take, on_give_up=give_up)
    await host.start()
    try:
        deadline = time.monotonic() + 30
        while not host.owned:  # the shards are taken by a round after the stuck one
            assert time.monotonic() < deadline, "no round ran after the stuck one"
            await asyncio.sleep(0.05)  # wait-ok: polls a condition with a deadline
    finally:
        await host.close()
    assert store.reads >= 2
    assert "took the whole lease time" in caplog.text
