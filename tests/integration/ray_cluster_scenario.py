"""Run by test_ray_cluster.py in a process of its own (a Ray driver attaches to one cluster per process): an
engine on the given Ray cluster, turns under load, one worker node killed, and the outcome printed as one JSON
line starting with ``RESULT``.

Arguments: a JSON object with ``ray_address``, ``nats_url``, ``data_dir``, ``groups`` (each worker node's
address and process group), ``marker`` (the cluster's temp dir) and ``ray_resources`` (the engine's setting)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import grpc
import ray
from load_support import Load
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from ray_cluster_support import kill_node

from salon.engine import Config, Engine
from salon.engine.ray_start import ensure_ray
from salon.v1 import conversation_service_pb2_grpc as cs_grpc


async def _until(predicate: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.1)  # wait-ok: polls a condition with a deadline


@ray.remote(num_cpus=0)
class _Probe:
    def node(self) -> str:
        return str(ray.get_runtime_context().get_node_id())


async def _every_node_schedulable() -> None:
    """Wait until an actor can be placed on every node: a node just started is listed alive before the scheduler
    sees its resources, and hosts placed meanwhile would all land on the older nodes."""
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    probes = [
        _Probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()  # type: ignore[attr-defined]
        for node in nodes
    ]
    try:
        await asyncio.wait_for(asyncio.gather(*(p.node.remote() for p in probes)), 120)
    finally:
        for probe in probes:
            ray.kill(probe)


async def main(args: dict[str, Any]) -> dict[str, Any]:
    config = Config(
        data_dir=args["data_dir"],
        grpc_port=0,
        nats_url=args["nats_url"],
        namespace=args["namespace"],
        ray_address=args["ray_address"],
        ray_resources=args["ray_resources"],
        num_hosts=3,
        num_shards=6,
        shard_lease_s=3.0,
        shard_move_grace_s=5.0,
        ack_wait_s=3.0,
        model_provider="scripted",
        scripted_tokens=6,
        scripted_token_delay_s=0.02,
        shutdown_grace_s=2.0,
        long_term_memory=False,
    )
    ensure_ray(config)
    await _every_node_schedulable()
    engine = Engine(config)
    await engine.start()
    result: dict[str, Any] = {}
    try:
        ips = {n["NodeID"]: n["NodeManagerAddress"] for n in ray.nodes()}
        before = {i: ips[info["node_id"]] for i, info in zip(engine.hosts.indexes, engine.hosts.info, strict=True)}
        result["hosts_before"] = before
        result["writer_node"] = ips[(await engine.writer.started())["node_id"]]
        async with grpc.aio.insecure_channel(engine.target) as channel:
            load = Load(cs_grpc.ConversationServiceStub(channel), sessions=12)
            await load.start()

            async def progress(since: float) -> None:
                async def enough() -> bool:
                    return load.completed_since(since) >= 12

                await _until(enough, 60, "turns to complete")

            await progress(0.0)
            # A worker node that runs a host.
            victim = next(ip for ip in args["groups"] if ip in before.values())
            result["killed"] = victim
            t0 = time.monotonic()
            assert kill_node(args["groups"][victim], args["marker"]) > 0
            # Its hosts' sessions move: first to the live hosts (their leases expire), then Ray restarts the dead
            # hosts on live nodes and the shards spread again.
            await progress(time.monotonic())
            result["turns_flowing_s"] = time.monotonic() - t0

            victim_ids = {n["NodeID"] for n in ray.nodes() if n["NodeManagerAddress"] == victim}

            async def answer(host: Any) -> dict[str, Any] | None:
                try:
                    return dict(await asyncio.wait_for(host.ready.remote(), 5))
                except Exception:
                    return None  # on the dead node, or being restarted by Ray: not serving now

            async def moved() -> bool:
                # Every shard served by a host on a live node: the dead hosts' leases expired and the survivors
                # took their shards, or Ray has already restarted a dead host on a live node and it took its share
                # back.
                infos = await asyncio.gather(*(answer(h) for h in engine.hosts.handles))
                owned = [i["shards"] for i in infos if i is not None and i["node_id"] not in victim_ids]
                result["owned_after"] = owned
                return sorted(s for shards in owned for s in shards) == list(range(config.num_shards))

            await _until(moved, 60, "the live hosts to serve every shard")
            result["moved_s"] = time.monotonic() - t0

            async def node_dead() -> bool:
                return not any(n.get("Alive") for n in ray.nodes() if n["NodeID"] in victim_ids)

            await _until(node_dead, 60, "Ray to see the node dead")
            result["node_dead_s"] = time.monotonic() - t0
            await progress(time.monotonic())
            result["longest_turn_s"] = load.longest_wait_s(t0, time.monotonic())
            await load.stop()
            lost, doubled = await load.lost_and_doubled()
        result.update(lost=lost, doubled=doubled, outcomes=load.outcomes())
    finally:
        await engine.close()
    return result


if __name__ == "__main__":
    outcome = asyncio.run(main(json.loads(sys.argv[1])))
    print("RESULT " + json.dumps(outcome), flush=True)
