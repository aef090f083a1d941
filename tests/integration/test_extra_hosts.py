"""`salon hosts` (ExtraHosts): hosts started by another process join a running deployment under turns, take
about their share of the shards by lease, and give them back when stopped; nothing acknowledged is lost."""

from __future__ import annotations

import dataclasses
import time

import grpc
import pytest
from conftest import wait_for
from load_support import Load

from salon.engine import Engine
from salon.engine.config import Config
from salon.engine.extra_hosts import ExtraHosts
from salon.storage import InvalidArgument
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

SHARDS = 4


@pytest.mark.timeout(300)
async def test_hosts_of_another_process_join_and_leave_under_turns(make_engine: object) -> None:
    engine: Engine = await make_engine(  # type: ignore[operator]
        num_hosts=1,
        num_shards=SHARDS,
        shard_lease_s=3.0,
        shard_move_grace_s=5.0,
        ack_wait_s=3.0,
        scripted_tokens=6,
        scripted_token_delay_s=0.02,
    )
    config = dataclasses.replace(engine.config, nats_url=engine.nats_url)
    async with grpc.aio.insecure_channel(engine.target) as channel:
        load = Load(cs_grpc.ConversationServiceStub(channel), sessions=6)
        await load.start()

        async def progress(turns: int = 6) -> None:
            since = time.monotonic()

            async def enough() -> bool:
                return load.completed_since(since) >= turns

            await wait_for(enough, timeout_s=60, what=f"{turns} turns to complete")

        await progress()
        async with ExtraHosts(config, count=1) as extra:

            async def shared() -> bool:
                theirs = [s for v in (await extra.shards()).values() for s in v]
                ours = [s for v in (await engine.hosts.shards()).values() for s in v]
                return sorted(theirs + ours) == list(range(SHARDS)) and len(theirs) == len(ours) == SHARDS // 2

            await wait_for(shared, timeout_s=60, what="the joining host to take half of the shards")
            await progress()
        owned = await engine.hosts.wait_balanced(60)
        assert list(owned.values()) == [list(range(SHARDS))], "the engine's host takes every shard back"
        await progress()
        await load.stop()
        lost, doubled = await load.lost_and_doubled()
    assert lost == [], "every acknowledged turn is in its session's history"
    assert doubled == [], "no turn is recorded twice"
    assert set(load.outcomes()) == {"completed"}, load.outcomes()


def test_joining_needs_the_deployments_nats_and_shard_leases() -> None:
    config = Config()
    with pytest.raises(InvalidArgument, match="SALON_NATS_URL"):
        ExtraHosts(dataclasses.replace(config, nats_url="", shard_lease_s=3.0), count=1)
    with pytest.raises(InvalidArgument, match="SHARD_LEASE"):
        ExtraHosts(dataclasses.replace(config, nats_url="nats://127.0.0.1:1", shard_lease_s=0.0), count=1)
    with pytest.raises(InvalidArgument, match="at least 1"):
        ExtraHosts(dataclasses.replace(config, nats_url="nats://127.0.0.1:1", shard_lease_s=3.0), count=0)
