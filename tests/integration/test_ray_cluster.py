"""The engine on a multi-node Ray cluster (a head and two worker nodes started with ``ray start``, separate
raylets): hosts run on the nodes that have the resource named in ``ray_resources`` (the workers, not the head);
a worker node killed under turns takes its hosts with it, their sessions move to live hosts and continue, and
nothing acknowledged is lost."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_cluster_support import RayNodes

HERE = Path(__file__).parent


@pytest.fixture
def ray_nodes() -> Iterator[RayNodes]:
    nodes = RayNodes(workers=2, worker_resources={"salon": 100})
    try:
        nodes.start()
        yield nodes
    finally:
        nodes.close()


@pytest.mark.timeout(600)  # three `ray start` take a minute or more on a loaded machine
async def test_a_worker_node_dies_under_turns_and_its_sessions_continue_elsewhere(
    ray_nodes: RayNodes, nats_url: str, tmp_path: Path
) -> None:
    args = {
        "ray_address": ray_nodes.address,
        "nats_url": nats_url,
        "namespace": "raycluster",
        "data_dir": str(tmp_path / "data"),
        "groups": {ip: ray_nodes.groups[ip] for ip in ray_nodes.worker_ips},
        "ray_resources": "salon=1",
        "marker": str(ray_nodes.root),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / "ray_cluster_scenario.py"),
        json.dumps(args),
        cwd=HERE,
        env={**ray_nodes.env, "PYTHONPATH": str(HERE)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout=300)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = out.decode(errors="replace")
    lines = [line for line in text.splitlines() if line.startswith("RESULT ")]
    assert process.returncode == 0 and lines, text[-6000:]
    result = json.loads(lines[-1][len("RESULT ") :])
    print("ray cluster:", {k: v for k, v in result.items() if k not in ("lost", "doubled")})
    # Only the worker nodes have the resource every host needs: none runs on the head. (How the hosts spread over
    # the workers is Ray's SPREAD, best effort: seen putting all three on one node of a loaded machine.)
    assert set(result["hosts_before"].values()) <= set(ray_nodes.worker_ips), result["hosts_before"]
    assert result["writer_node"] in ray_nodes.worker_ips
    assert result["killed"] in ray_nodes.worker_ips
    # Afterwards the hosts on live nodes serve every shard.
    assert sorted(s for shards in result["owned_after"] for s in shards) == list(range(6))
    assert result["lost"] == [], "every acknowledged turn is in its session's history"
    assert result["doubled"] == []
    assert set(result["outcomes"]) == {"completed"}, result["outcomes"]
