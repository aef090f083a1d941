"""Hosts join and leave a running deployment under turns: shards move by lease, sessions continue on their new
hosts, nothing acknowledged is lost, and the time sessions wait across each move is printed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from conftest import wait_for
from load_support import Load

from salon.engine import Engine
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

SHARDS = 8
LEASE_S = 3.0
STEP_S = 150.0
"""Longest any one step may take: past the engine's own limits (a host's start 120 s, a leave 35 s, balancing
60 s), so those fail first with their own message, and a step that hangs anywhere else fails here."""


@contextlib.asynccontextmanager
async def step(engine: Engine, what: str) -> AsyncIterator[None]:
    """Bound one step of the test. When it overruns, or times out inside, print where each host's tasks wait
    first: what hangs, when something does (the failure's message stays short)."""
    limit = asyncio.timeout(STEP_S)
    try:
        async with limit:
            yield
    except TimeoutError:
        for index, stacks in (await engine.hosts.task_stacks()).items():
            print(f"host {index}:", *([stacks] if isinstance(stacks, str) else stacks), sep="\n  ")
        if limit.expired():
            pytest.fail(f"{what} did not finish within {STEP_S:.0f} s (the hosts' tasks are printed above)")
        raise


@pytest.mark.timeout(600)  # four moves under load, each waiting for a host to start or a lease to expire
async def test_hosts_join_leave_and_die_under_turns_without_losing_any(make_engine: object) -> None:
    engine: Engine = await make_engine(  # type: ignore[operator]
        num_hosts=2,
        num_shards=SHARDS,
        shard_lease_s=LEASE_S,
        shard_move_grace_s=5.0,
        ack_wait_s=3.0,
        scripted_tokens=6,
        scripted_token_delay_s=0.02,
    )
    hosts = engine.hosts
    owned = await hosts.wait_balanced(30)
    assert sorted(len(v) for v in owned.values()) == [4, 4]
    async with grpc.aio.insecure_channel(engine.target) as channel:
        load = Load(cs_grpc.ConversationServiceStub(channel), sessions=12)
        async with step(engine, "starting the load"):
            await load.start()

        async def progress(since: float, turns: int = 12) -> None:
            async def enough() -> bool:
                return load.completed_since(since) >= turns

            await wait_for(enough, timeout_s=60, what=f"{turns} turns to complete")

        await progress(0.0)
        figures: dict[str, float] = {}

        # A host joins: it takes about its share from the two running ones.
        t0 = time.monotonic()
        async with step(engine, "a host joining"):
            added = await hosts.add_host()
            owned = await hosts.wait_balanced(60)
        figures["join"] = time.monotonic() - t0
        assert sorted(len(v) for v in owned.values()) == [2, 3, 3]
        assert owned[added], "the new host serves shards"
        await progress(time.monotonic())
        figures["join_longest_turn"] = load.longest_wait_s(t0, time.monotonic())

        # One of the first hosts leaves gracefully: its shards go to the others.
        t0 = time.monotonic()
        async with step(engine, "a host leaving"):
            assert await hosts.remove_host(0, grace_s=5.0), "the host left and closed in time"
            owned = await hosts.wait_balanced(60)
        figures["leave"] = time.monotonic() - t0
        assert 0 not in owned and sorted(len(v) for v in owned.values()) == [4, 4]
        await progress(time.monotonic())
        figures["leave_longest_turn"] = load.longest_wait_s(t0, time.monotonic())

        # A host dies without a word: its leases expire and the survivor takes every shard.
        t0 = time.monotonic()
        hosts.kill_host(added)
        async with step(engine, "the survivor taking the dead host's shards"):
            owned = await hosts.wait_balanced(60)
        figures["death"] = time.monotonic() - t0
        assert list(owned.values()) == [list(range(SHARDS))]
        await progress(time.monotonic())
        figures["death_longest_turn"] = load.longest_wait_s(t0, time.monotonic())

        async with step(engine, "the sessions finishing their turns"):
            await load.stop()
        async with step(engine, "reading the histories"):
            lost, doubled = await load.lost_and_doubled()

    outcomes = load.outcomes()
    print(
        "elastic hosts:",
        {k: round(v, 2) for k, v in figures.items()},
        "outcomes:",
        outcomes,
        f"lost={len(lost)} doubled={len(doubled)}",
    )
    assert lost == [], "every acknowledged turn is in its session's history"
    assert doubled == [], "no turn is recorded twice"
    # Moves are invisible to clients: no turn failed or was cancelled by them.
    assert set(outcomes) == {"completed"}, outcomes
