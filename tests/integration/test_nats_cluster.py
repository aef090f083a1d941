"""The engine on a real three-node nats-server JetStream cluster on loopback: its streams and buckets get three
replicas, and killing a node under load (the one the gateway is connected to, or the turns stream's leader)
loses no acknowledged turn while clients see only retryable statuses.

Each test starts its own cluster (the fixture owns the three processes: ephemeral client ports, file stores in
temp dirs, routes between the nodes) and its own engine on it, and drives concurrent sessions that send turns
with idempotency keys, retrying each key until it completes, as a client following the retry hints would.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from conftest import create_session, engine_config, running_engine, wait_for
from nats.js import api

from salon.engine import Engine
from salon.storage.jetstream.client import (
    close_connection,
    connect,
    servers_without_sync_always,
    stream_replicas,
    warn_unless_synced,
)
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

NODES = 3
SESSIONS = 6
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED, grpc.StatusCode.RESOURCE_EXHAUSTED})
"""What a client may see while a node is lost: each says "try again" (with a retry hint)."""

_T = TypeVar("_T")


def _free_loopback_ports(count: int) -> list[int]:
    # Routes name every node's cluster port, so those must be known before the nodes start: the kernel picks
    # them (bound to port 0 and released just before the servers take them). Client ports are the servers'
    # own choice (-1), read back from their ports files.
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@dataclass
class Node:
    """One nats-server of the cluster."""

    name: str
    directory: Path
    process: subprocess.Popen[bytes]
    url: str = ""

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class NatsCluster:
    """Three nats-servers with JetStream (file store, ``sync_interval: always``) routed into one cluster, on
    loopback. Owns its processes: :meth:`close` kills what is left of them."""

    def __init__(self, root: Path, binary: Path) -> None:
        self.root = root
        self.binary = binary
        self.nodes: list[Node] = []

    @property
    def url(self) -> str:
        """Every node's client URL, comma separated (the form SALON_NATS_URL takes)."""
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        return next(node for node in self.nodes if node.name == name)

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the nodes and wait until each has written its client port."""
        cluster_ports = _free_loopback_ports(NODES)
        routes = [f"nats-route://127.0.0.1:{port}" for port in cluster_ports]
        for index, port in enumerate(cluster_ports):
            name = f"n{index}"
            directory = self.root / name
            directory.mkdir(parents=True)
            config = directory / "nats-server.conf"
            config.write_text(
                "\n".join(
                    [
                        f'server_name: "{name}"',
                        'listen: "127.0.0.1:-1"',
                        f'ports_file_dir: "{directory}"',
                        "jetstream {",
                        f'  store_dir: "{directory / "jetstream"}"',
                        "  sync_interval: always",
                        "}",
                        "cluster {",
                        '  name: "salon-test"',
                        f'  listen: "127.0.0.1:{port}"',
                        f"  routes: {json.dumps(routes)}",
                        "}",
                        "",
                    ]
                )
            )
            with open(directory / "nats-server.log", "wb") as log_file:
                process = subprocess.Popen(
                    [str(self.binary), "-c", str(config)], stdout=log_file, stderr=subprocess.STDOUT
                )
            self.nodes.append(Node(name, directory, process))
        deadline = time.monotonic() + timeout_s
        for node in self.nodes:
            ports_file = node.directory / f"{self.binary.name}_{node.process.pid}.ports"
            while not node.url:
                assert node.alive, f"{node.name} exited: {(node.directory / 'nats-server.log').read_text()[-2000:]}"
                assert time.monotonic() < deadline, f"{node.name} did not start"
                with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
                    node.url = json.loads(ports_file.read_text())["nats"][0]
                    break
                time.sleep(0.01)  # wait-ok: polls the server's ports file, with a deadline

    async def wait_for_jetstream(self, timeout_s: float = 60.0) -> None:
        """Wait until the cluster has a JetStream meta leader and can place a three-replica stream."""
        nc = await connect(self.url, name="cluster-probe", timeout_s=timeout_s)
        js = nc.jetstream(timeout=2.0)
        probe = api.StreamConfig(name="probe", subjects=["probe"], num_replicas=NODES, storage=api.StorageType.FILE)

        async def placed() -> bool:
            try:
                await js.add_stream(probe)
            except Exception:
                return False
            return True

        try:
            await wait_for(placed, timeout_s=timeout_s, what="the JetStream cluster to place a replicated stream")
            await js.delete_stream("probe")
        finally:
            await close_connection(nc)

    def kill(self, node: Node) -> None:
        """SIGKILL ``node`` and reap it."""
        os.kill(node.process.pid, signal.SIGKILL)
        node.process.wait()

    def close(self) -> None:
        """Kill every node still running. Idempotent."""
        for node in self.nodes:
            if node.alive:
                node.process.kill()
            node.process.wait()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    """A fresh three-node cluster for one test (the test kills a node of it)."""
    owned = NatsCluster(tmp_path / "cluster", Path(sys.executable).with_name("nats-server"))
    try:
        owned.start()
        yield owned
    finally:
        owned.close()


@pytest.fixture
async def clustered(cluster: NatsCluster, ray_session: None, tmp_path: Path) -> AsyncIterator[Engine]:
    """An engine whose NATS is the cluster (every node listed in its URL)."""
    await cluster.wait_for_jetstream()
    config = engine_config(
        tmp_path / "data",
        cluster.url,
        num_shards=4,
        scripted_tokens=6,
        scripted_token_delay_s=0.01,
        embedding_model="hash",
        long_term_memory=False,
    )
    async with running_engine(config) as engine:
        yield engine


@dataclass
class Load:
    """What the clients saw: turns acknowledged to them (accepted or completed), completions, statuses."""

    acknowledged: dict[str, str] = field(default_factory=dict)
    """turn id -> session id, for every turn a client saw accepted or completed."""
    completed_at: list[float] = field(default_factory=list)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    refused: list[str] = field(default_factory=list)
    """Statuses or turn errors that say "do not retry": there must be none."""
    sent_after: dict[int, float] = field(default_factory=dict)
    """Per client, when it first completed a turn it started after the kill (monotonic)."""


async def _client(
    stub: cs_grpc.ConversationServiceStub,
    session_id: str,
    index: int,
    *,
    load: Load,
    stop: asyncio.Event,
    kill: list[float],
) -> None:
    """Send turns one after another, each retried under its idempotency key until it completes."""
    number = 0
    while not stop.is_set():
        key = f"c{index}-t{number}"
        started = time.monotonic()
        delay = 0.05
        while True:
            request = cs_pb2.SendTurnRequest(session_id=session_id, text=f"turn {number}", idempotency_key=key)
            try:
                last = None
                # Long enough for JetStream to elect new leaders on a busy machine: the engine's own statuses are
                # judged, not this client's patience.
                async for response in stub.SendTurn(request, timeout=90):
                    last = response.event
                    if last.HasField("accepted") or last.HasField("completed"):
                        load.acknowledged[last.turn_id] = session_id
                assert last is not None
                if last.HasField("completed"):
                    load.completed_at.append(time.monotonic())
                    if kill and started > kill[0]:
                        load.sent_after.setdefault(index, time.monotonic())
                    break
                error = last.error
                load.statuses[f"turn error {error.reason}"] += 1
                if not error.retryable:
                    load.refused.append(f"turn error {error.reason}")
                    break
                key = f"{key}r"  # a failed turn keeps its key: the retry is a new turn
            except grpc.aio.AioRpcError as exc:
                reason = dict(exc.trailing_metadata() or ()).get("salon-error-reason", "")
                load.statuses[f"{exc.code().name} {reason}"] += 1
                if exc.code() not in RETRYABLE:
                    load.refused.append(f"{exc.code().name} {reason}")
                    return
            await asyncio.sleep(delay)  # wait-ok: the client's backoff between retries
            delay = min(delay * 2, 1.0)
        number += 1


async def _history(stub: cs_grpc.ConversationServiceStub, session_id: str) -> set[str]:
    turn_ids: set[str] = set()
    token = ""
    while True:
        request = cs_pb2.GetHistoryRequest(session_id=session_id, page_token=token)
        page = await _retrying(functools.partial(stub.GetHistory, request, timeout=30))
        turn_ids.update(t.turn_id for t in page.turns)
        token = page.next_page_token
        if not token:
            return turn_ids


async def _retrying(call: Callable[[], Awaitable[_T]], timeout_s: float = 60.0) -> _T:
    """``call()``, sent again after a retryable status as a client does (another of the cluster's streams, the
    session registry's, may still be electing its leader after the kill), until ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            return await call()
        except grpc.aio.AioRpcError as error:
            if error.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
        await asyncio.sleep(delay)  # wait-ok: the client's backoff between retries, bounded by the deadline
        delay = min(delay * 2, 1.0)


async def _run_kill(engine: Engine, cluster: NatsCluster, pick_victim: str) -> None:
    js_client = await connect(cluster.url, name="cluster-test-observer")
    try:
        js = js_client.jetstream()
        assert engine.replicas == NODES
        for stream in (engine.names.turns_stream, engine.names.events_stream, engine.names.ledger_stream):
            assert (await js.stream_info(stream)).config.num_replicas == NODES, stream
        assert (await js.stream_info(f"KV_{engine.names.sessions_bucket}")).config.num_replicas == NODES

        load = Load()
        stop = asyncio.Event()
        kill: list[float] = []
        async with grpc.aio.insecure_channel(engine.target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            sessions = [await create_session(stub) for _ in range(SESSIONS)]
            clients = [
                asyncio.create_task(_client(stub, s, i, load=load, stop=stop, kill=kill), name=f"cluster-client-{i}")
                for i, s in enumerate(sessions)
            ]
            try:

                async def warmed_up() -> bool:
                    assert not load.refused, load.refused
                    return len(load.completed_at) >= 2 * SESSIONS

                await wait_for(warmed_up, timeout_s=60, what="turns to flow before the kill")
                if pick_victim == "gateway":
                    victim = cluster.node(engine._nc._server_info["server_name"])
                else:
                    info = await js.stream_info(engine.names.turns_stream)
                    assert info.cluster is not None and info.cluster.leader
                    victim = cluster.node(info.cluster.leader)
                before = len(load.completed_at)
                kill.append(time.monotonic())
                cluster.kill(victim)

                async def every_client_recovered() -> bool:
                    assert not load.refused, load.refused
                    return len(load.sent_after) == SESSIONS

                await wait_for(every_client_recovered, timeout_s=90, what="every client to complete a turn again")
                recovered = max(load.sent_after.values()) - kill[0]
                first = min(load.sent_after.values()) - kill[0]
                stop.set()
                await asyncio.wait_for(asyncio.gather(*clients), 60)
            finally:
                stop.set()
                for task in clients:
                    task.cancel()
                await asyncio.gather(*clients, return_exceptions=True)

            if pick_victim == "leader":
                new_leader = (await js.stream_info(engine.names.turns_stream)).cluster
                assert new_leader is not None and new_leader.leader not in (None, victim.name)
            print(
                f"killed {victim.name} ({pick_victim}): first turn completed {first:.2f} s after the kill, every "
                f"client completing turns again after {recovered:.2f} s; {before} turns before the kill, "
                f"{len(load.completed_at)} in all; statuses seen: {dict(load.statuses) or 'none'}"
            )
            assert not load.refused, f"clients saw statuses that are not retryable: {load.refused}"
            stored: set[str] = set()
            for session_id in sessions:
                stored |= await _history(stub, session_id)
            lost = sorted(set(load.acknowledged) - stored)
            assert not lost, f"acknowledged turns missing from history: {lost}"
    finally:
        await close_connection(js_client)


async def test_killing_the_gateways_node_under_load_loses_no_acknowledged_turn(
    clustered: Engine, cluster: NatsCluster
) -> None:
    await _run_kill(clustered, cluster, "gateway")


async def test_killing_the_turn_streams_leader_under_load_loses_no_acknowledged_turn(
    clustered: Engine, cluster: NatsCluster
) -> None:
    await _run_kill(clustered, cluster, "leader")


def _start_single(directory: Path, *, sync_always: bool) -> tuple[subprocess.Popen[bytes], str]:
    """One nats-server with a system account user (``sys``) and an application user (``app``)."""
    directory.mkdir(parents=True)
    config = directory / "nats-server.conf"
    config.write_text(
        "\n".join(
            [
                'server_name: "solo"',
                'listen: "127.0.0.1:-1"',
                f'ports_file_dir: "{directory}"',
                "accounts {",
                "  SYS { users: [{user: sys, password: sys}] }",
                "  APP { jetstream: enabled, users: [{user: app, password: app}] }",
                "}",
                "system_account: SYS",
                "jetstream {",
                f'  store_dir: "{directory / "jetstream"}"',
                *(["  sync_interval: always"] if sync_always else []),
                "}",
                "",
            ]
        )
    )
    binary = Path(sys.executable).with_name("nats-server")
    with open(directory / "nats-server.log", "wb") as log_file:
        process = subprocess.Popen([str(binary), "-c", str(config)], stdout=log_file, stderr=subprocess.STDOUT)
    ports_file = directory / f"{binary.name}_{process.pid}.ports"
    deadline = time.monotonic() + 30
    while True:
        assert process.poll() is None and time.monotonic() < deadline, "nats-server did not start"
        with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
            return process, json.loads(ports_file.read_text())["nats"][0].removeprefix("nats://")
        time.sleep(0.01)  # wait-ok: polls the server's ports file, with a deadline


@pytest.mark.parametrize("sync_always", [True, False])
async def test_a_server_that_does_not_fsync_every_write_is_reported(
    tmp_path: Path, sync_always: bool, caplog: pytest.LogCaptureFixture
) -> None:
    process, address = _start_single(tmp_path / "solo", sync_always=sync_always)
    try:
        system = await connect(f"nats://sys:sys@{address}", name="sync-check-system")
        application = await connect(f"nats://app:app@{address}", name="sync-check-app")
        try:
            assert await servers_without_sync_always(system) == ([] if sync_always else ["solo"])
            assert await servers_without_sync_always(application) is None, "an application user cannot tell"
            with caplog.at_level(logging.INFO, logger="salon.storage.jetstream.client"):
                await warn_unless_synced(system)
            warned = [r for r in caplog.records if r.levelno == logging.WARNING and "fsync" in r.getMessage()]
            assert bool(warned) is not sync_always
            assert stream_replicas(application) == 1, "a server outside a cluster: one replica"
        finally:
            await close_connection(system)
            await close_connection(application)
    finally:
        process.kill()
        process.wait()
