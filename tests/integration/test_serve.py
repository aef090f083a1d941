"""`salon serve` as an operator runs it: it says where it listens, listens on loopback only, and SIGTERM drains
it cleanly.

Each test starts `salon serve` in a session of its own and judges only the processes of that session and
their descendants (the engine, its nats-server, its Ray): other Ray clusters and engines on the machine are
none of its business."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from conftest import create_session, reply_text
from serve_support import (
    alive,
    clean_env,
    engine_processes,
    is_loopback,
    listening_sockets,
    read_target,
    serve,
    socket_inodes,
    stat_of,
    stop,
    wait_gone,
)

from salon.providers import scripted_reply
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import knowledge_service_pb2_grpc as ks_grpc

# Ray's per-node agents outlive a raylet killed outright by about a minute: they report its death to the GCS,
# which died with it, and wait for that call to time out. They hold no data and take no turns; the clean-up
# stops the ones the test's engine left.
RAY_AGENTS = ("ray::DashboardA", "ray::RuntimeEnv")  # process names are cut at 15 characters


def _has_ray(processes: dict[int, str]) -> bool:
    return any(name in {"raylet", "gcs_server"} for name in processes.values())


async def test_sigterm_lets_the_running_turn_finish_and_leaves_no_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "serve-data"
    proc = await serve(
        data_dir,
        SALON_MODEL_PROVIDER="scripted",
        SALON_SCRIPTED_TOKENS="30",
        SALON_SCRIPTED_TOKEN_DELAY_S="0.05",
        SALON_SHUTDOWN_GRACE_S="20",
    )
    try:
        target = await read_target(proc, 120)
        nats_pid = int((data_dir / "nats" / "run" / "nats-server.pid").read_text())
        started = engine_processes(proc.pid)
        assert _has_ray(started) and nats_pid in started, f"the engine's own processes are found: {started}"
        async with grpc.aio.insecure_channel(target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            session_id = await create_session(stub)
            call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="finish me"))
            events = []
            signalled = False
            async for response in call:
                events.append(response.event)
                if response.event.HasField("delta") and not signalled:
                    signalled = True  # mid-turn: the first of 30 tokens 50 ms apart
                    started |= engine_processes(proc.pid)
                    proc.send_signal(signal.SIGTERM)
            assert events[-1].HasField("completed"), "the running turn finishes within the grace period"
            assert reply_text(events) == "".join(scripted_reply("finish me", 30))
            with_new_calls_refused = True
            try:
                await stub.CreateSession(cs_pb2.CreateSessionRequest(), timeout=5)
                with_new_calls_refused = False
            except grpc.aio.AioRpcError:
                pass
            assert with_new_calls_refused, "intake stops on SIGTERM"
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        assert not alive(nats_pid), "the embedded nats-server is stopped"
        await wait_gone(set(started) | set(engine_processes(proc.pid)), "the engine's processes are gone")
    finally:
        await stop(proc)  # clean-up after the checks: it would stop what they look for


async def test_sigterm_during_start_stops_what_was_started_and_leaves_no_process(tmp_path: Path) -> None:
    # Ray starts on a thread of its own while the engine imports its stack and starts NATS: SIGTERM arriving then
    # must still end in a clean shutdown (the engine closes what it started, Ray included), not in a process
    # killed outright that leaves its nats-server behind.
    data_dir = tmp_path / "serve-data"
    proc = await serve(data_dir, SALON_MODEL_PROVIDER="scripted")
    try:
        deadline = time.monotonic() + 120
        seen: dict[int, str] = {}
        while not (_has_ray(seen) and any(name == "nats-server" for name in seen.values())):
            assert proc.returncode is None, "salon serve is starting"
            assert time.monotonic() < deadline, f"Ray and NATS never appeared under salon serve: {seen}"
            await asyncio.sleep(0.05)  # wait-ok: polls a condition with a deadline
            seen = engine_processes(proc.pid)
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 120)
        await wait_gone(set(seen) | set(engine_processes(proc.pid)), "the engine's processes are gone")
    finally:
        await stop(proc)


async def test_engine_killed_outright_loses_no_acknowledged_turn(tmp_path: Path) -> None:
    data_dir = tmp_path / "crash-data"
    proc = await serve(data_dir, SALON_MODEL_PROVIDER="scripted")
    try:
        target = await read_target(proc, 120)
        nats_pid = int((data_dir / "nats" / "run" / "nats-server.pid").read_text())
        async with grpc.aio.insecure_channel(target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            session_id = await create_session(stub)
            acked = []
            for i in range(6):
                events = [
                    r.event async for r in stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text=f"n{i}"))
                ]
                assert events[-1].HasField("completed")
                acked.append(events[0].turn_id)
        started = engine_processes(proc.pid)
        assert _has_ray(started), f"the engine's own processes are found: {started}"
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        # Nothing of the killed engine may linger (and hold the data directory or keep pulling turns). Its
        # orphans are still members of its session.
        await wait_gone({nats_pid}, "the killed engine's nats-server is stopped")
        left = {**started, **engine_processes(proc.pid)}
        agents = {pid for pid, name in left.items() if name.startswith(RAY_AGENTS)}
        await wait_gone(set(left) - agents, "the killed engine's processes are gone")
    finally:
        await stop(proc)  # clean-up after the checks (and of the Ray agents still waiting on the dead GCS)

    proc = await serve(data_dir, SALON_MODEL_PROVIDER="scripted")
    try:
        target = await read_target(proc, 120)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            history = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id, page_size=100))
            ids = [t.turn_id for t in history.turns]
            assert ids == acked, "all acknowledged turns present, in order, none twice"
            events = [r.event async for r in stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="after"))]
            assert events[-1].HasField("completed")
            got = await stub.GetSession(cs_pb2.GetSessionRequest(session_id=session_id))
            assert got.session.turn_count == 7, "the session picks up where it left off"
    finally:
        await stop(proc)


async def test_the_first_turn_after_a_start_retrieves_from_the_tables_still_opening(tmp_path: Path) -> None:
    # A host reports ready before its LanceDB tables are open (they open in the background): a turn sent the
    # moment the engine serves must wait for them and cite the document, not go on without passages.
    data_dir = tmp_path / "first-turn-data"
    settings = {"SALON_MODEL_PROVIDER": "scripted", "SALON_EMBEDDING_MODEL": "hash"}
    proc = await serve(data_dir, **settings)
    try:
        target = await read_target(proc, 120)
        async with grpc.aio.insecure_channel(target) as channel:
            text = "The office wifi password is heliotrope-42. The coffee machine is descaled on Fridays."
            document = ks_pb2.Document(document_id="handbook", text=text, title="Office handbook")

            async def requests() -> AsyncIterator[ks_pb2.IngestDocumentsRequest]:
                yield ks_pb2.IngestDocumentsRequest(documents=[document])

            results = [r.result async for r in ks_grpc.KnowledgeServiceStub(channel).IngestDocuments(requests())]
            assert [(r.document_id, r.code) for r in results if r.document_id] == [("handbook", 0)]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        await stop(proc)
    proc = await serve(data_dir, **settings)
    try:
        target = await read_target(proc, 120)
        async with grpc.aio.insecure_channel(target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            session_id = await create_session(stub)
            request = cs_pb2.SendTurnRequest(session_id=session_id, text="What is the office wifi password?")
            events = [r.event async for r in stub.SendTurn(request)]
            assert events[-1].HasField("completed")
            cited = [c.document_id for e in events if e.HasField("citations") for c in e.citations.citations]
            assert cited and cited[0] == "handbook", f"the first turn after the start cites the document: {events}"
    finally:
        await stop(proc)


# Listeners the embedded deployment cannot keep on loopback (Ray offers no setting for them): none today. A
# Ray upgrade that adds one must name it here and in the README's "Ports" section, with how to protect it.
KNOWN_EVERY_INTERFACE_LISTENERS: frozenset[str] = frozenset()


async def test_embedded_engine_listens_on_loopback_only_and_logs_json_without_noise(tmp_path: Path) -> None:
    data_dir = tmp_path / "loopback-data"
    # The default embedder (not the tests' hash one) so the first turn makes the memories' indexes as a new
    # user's does; JSON logs, which Ray's messages and prefixes used to break; a custom Ray resource every actor
    # needs, which the Ray that Salon starts must have (else no host would ever be placed).
    proc = await serve(
        data_dir,
        SALON_MODEL_PROVIDER="scripted",
        SALON_METRICS_PORT="0",
        SALON_LOG_FORMAT="json",
        SALON_RAY_RESOURCES="salon=1",
    )
    lines: list[str] = []
    try:
        target = await read_target(proc, 120, lines)
        async with grpc.aio.insecure_channel(target) as channel:
            # A turn, so that every process of the turn path (hosts, writer) is up and listening, and the
            # writer has made the tables' indexes.
            stub = cs_grpc.ConversationServiceStub(channel)
            session_id = await create_session(stub)
            events = [r.event async for r in stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="hi"))]
            assert events[-1].HasField("completed")
            deadline = time.monotonic() + 60
            while not (await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id))).turns:
                assert time.monotonic() < deadline, "the turn reaches the tables"
                await asyncio.sleep(0.1)  # wait-ok: polls a condition with a deadline
        processes = engine_processes(proc.pid)
        assert _has_ray(processes), f"the engine's own processes are found: {processes}"
        sockets = listening_sockets()
        listeners = [
            (name, pid, *sockets[inode])
            for pid, name in processes.items()
            for inode in socket_inodes(pid)
            if inode in sockets
        ]
        gateway_port = int(target.rsplit(":", 1)[1])
        assert any(port == gateway_port for *_, port in listeners), f"the gateway's listener is seen: {listeners}"
        assert any(name == "raylet" for name, *_ in listeners), f"Ray's listeners are seen: {listeners}"
        exposed = [
            listener
            for listener in listeners
            if not is_loopback(listener[2]) and listener[0] not in KNOWN_EVERY_INTERFACE_LISTENERS
        ]
        assert not exposed, f"listening beyond loopback (process, pid, address, port): {exposed}"
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        rest = await asyncio.wait_for(proc.stderr.read(), 60)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        await stop(proc)
    lines += rest.decode().splitlines()
    not_json = []
    for line in filter(str.strip, lines):
        try:
            json.loads(line)
        except ValueError:
            not_json.append(line)
    assert not not_json, f"every line on stderr is a JSON object: {not_json[:5]}"
    text = "\n".join(lines)
    for noise in ("Token authentication", "8.8.8.8", "will retry", "SIGTERM handler"):
        assert noise not in text, f"{noise!r} reached the operator's terminal"
    assert "gRPC gateway on" in text and "stopped" in text


def _can_isolate_network() -> bool:
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("ip")):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True, check=False).returncode == 0


@pytest.mark.skipif(not _can_isolate_network(), reason="needs root and unshare to start without a network")
async def test_a_start_without_network_prints_no_address_probe(tmp_path: Path) -> None:
    # Ray in cluster mode routes towards public addresses to find the machine's own, and says so on stderr
    # when there is no route: started here in a network namespace holding only loopback.
    command = [
        sys.executable,
        "-m",
        "salon.engine.cli",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(tmp_path / "offline"),
    ]
    env = {**clean_env(), "SALON_MODEL_PROVIDER": "scripted"}
    proc = await asyncio.create_subprocess_exec(
        "unshare",
        "-n",
        "--fork",
        "--kill-child",  # should the test die, the engine goes with it
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "sh",
        *command,
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    lines: list[str] = []
    try:
        await read_target(proc, 120, lines)
        # unshare does not pass SIGTERM on: the engine (its child) is asked to stop directly.
        for pid in engine_processes(proc.pid):
            if (stat := stat_of(pid)) is not None and stat[1] == proc.pid:
                os.kill(pid, signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        await stop(proc)
    text = "".join(lines)
    assert "8.8.8.8" not in text and "external connectivity" not in text, text
    assert "Token authentication" not in text, text
