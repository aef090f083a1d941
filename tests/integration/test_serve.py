"""`salon serve` as an operator runs it: it says where it listens, listens on loopback only, and SIGTERM drains
it cleanly.

Each test starts `salon serve` in a session of its own and judges only the processes of that session and
their descendants (the engine, its nats-server, its Ray): other Ray clusters and engines on the machine are
none of its business."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import grpc
from conftest import create_session, reply_text

from providers import scripted_reply
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

ROOT = Path(__file__).resolve().parents[2]


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(command name, parent pid, session id) of ``pid``, or None once it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The name is in parentheses and may hold spaces; the fields after it are space separated.
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    state, ppid, _pgrp, session = fields[0], int(fields[1]), fields[2], int(fields[3])
    if state == "Z":  # a zombie holds nothing and is gone as far as the test is concerned
        return None
    return name, ppid, session


def _all_pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def engine_processes(root: int) -> dict[int, str]:
    """The processes the engine started as ``root`` owns: its session's members and its descendants (the
    embedded nats-server runs in a session of its own), by pid with their names."""
    stats = {pid: stat for pid in _all_pids() if (stat := _stat(pid)) is not None}
    found = {pid for pid, (_, _, session) in stats.items() if session == root}
    if root in stats:
        found.add(root)
    grew = True
    while grew:
        children = {pid for pid, (_, ppid, _) in stats.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return {pid: stats[pid][0] for pid in found}


def _alive(pid: int) -> bool:
    return _stat(pid) is not None


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[len("socket:[") : -1]))
    return inodes


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # /proc/net/tcp{,6} print addresses as 32-bit words in host (little-endian) byte order.
    raw = bytes.fromhex(hex_address)
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    return ipaddress.ip_address(b"".join(words))


def listening_sockets() -> dict[int, tuple[str, int]]:
    """Every TCP socket listening on this machine: inode → (address, port)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            if state == "0A":  # TCP_LISTEN
                address, port = local.split(":")
                found[inode] = (str(_address(address)), int(port, 16))
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


async def _read_target(proc: asyncio.subprocess.Process, timeout_s: float, seen: list[str] | None = None) -> str:
    """The gateway's address, from the line `salon serve` prints once it serves (lines read go to ``seen``)."""
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(proc.stderr.readline(), deadline - time.monotonic())
        if not line:
            break
        if seen is not None:
            seen.append(line.decode())
        match = re.search(r"gRPC gateway on ([^\s\"]+)", line.decode())
        if match:
            return match.group(1)
    raise AssertionError("salon serve never said where it listens")


async def _serve(data_dir: Path, **settings: str) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALON_", "RAY_ADDRESS"))}
    env.update(SALON_MODEL_PROVIDER="scripted", **settings)
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "engine.cli",
        "serve",
        "--port",
        "0",
        "--data-dir",
        str(data_dir),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,  # the engine and everything it starts are told apart from the rest by it
    )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Clean-up, not a check: stop the engine (SIGTERM, then SIGKILL) and whatever of its session is left."""
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 60)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    deadline = time.monotonic() + 10
    left = engine_processes(proc.pid)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # wait-ok: polls a condition with a deadline
        left = engine_processes(proc.pid)
    for pid in left:
        stat = _stat(pid)
        if stat is not None and stat[2] == proc.pid:  # still a member of the engine's session: ours
            os.kill(pid, signal.SIGKILL)


async def _wait_gone(pids: set[int], what: str) -> None:
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, f"{what}: still running {sorted(p for p in pids if _alive(p))}"
        await asyncio.sleep(0.1)  # wait-ok: polls a condition with a deadline


# Ray's per-node agents outlive a raylet killed outright by about a minute: they report its death to the GCS,
# which died with it, and wait for that call to time out. They hold no data and take no turns; the clean-up
# stops the ones the test's engine left.
RAY_AGENTS = ("ray::DashboardA", "ray::RuntimeEnv")  # process names are cut at 15 characters


def _has_ray(processes: dict[int, str]) -> bool:
    return any(name in {"raylet", "gcs_server"} for name in processes.values())


async def test_sigterm_lets_the_running_turn_finish_and_leaves_no_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "serve-data"
    proc = await _serve(
        data_dir, SALON_SCRIPTED_TOKENS="30", SALON_SCRIPTED_TOKEN_DELAY_S="0.05", SALON_SHUTDOWN_GRACE_S="20"
    )
    try:
        target = await _read_target(proc, 120)
        nats_pid = int((data_dir / "nats" / "run" / "nats-server.pid").read_text())
        started = engine_processes(proc.pid)
        assert _has_ray(started) and nats_pid in started, f"the engine's own processes are found: {started}"
        async with grpc.aio.insecure_channel(target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            session_id = await create_session(stub)
            call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="finish me"))
            events = []
            async for response in call:
                events.append(response.event)
                if response.event.HasField("delta") and len(events) == 3:
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
        assert not _alive(nats_pid), "the embedded nats-server is stopped"
        await _wait_gone(set(started) | set(engine_processes(proc.pid)), "the engine's processes are gone")
    finally:
        await _stop(proc)  # clean-up after the checks: it would stop what they look for


async def test_engine_killed_outright_loses_no_acknowledged_turn(tmp_path: Path) -> None:
    data_dir = tmp_path / "crash-data"
    proc = await _serve(data_dir)
    try:
        target = await _read_target(proc, 120)
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
        await _wait_gone({nats_pid}, "the killed engine's nats-server is stopped")
        left = {**started, **engine_processes(proc.pid)}
        agents = {pid for pid, name in left.items() if name.startswith(RAY_AGENTS)}
        await _wait_gone(set(left) - agents, "the killed engine's processes are gone")
    finally:
        await _stop(proc)  # clean-up after the checks (and of the Ray agents still waiting on the dead GCS)

    proc = await _serve(data_dir)
    try:
        target = await _read_target(proc, 120)
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
        await _stop(proc)


# Listeners the embedded deployment cannot keep on loopback (Ray offers no setting for them): none today. A
# Ray upgrade that adds one must name it here and in the README's "Ports" section, with how to protect it.
KNOWN_EVERY_INTERFACE_LISTENERS: frozenset[str] = frozenset()


async def test_embedded_engine_listens_on_loopback_only_and_logs_json_without_noise(tmp_path: Path) -> None:
    data_dir = tmp_path / "loopback-data"
    # The default embedder (not the tests' hash one) so the first turn makes the memories' indexes as a new
    # user's does; JSON logs, which Ray's messages and prefixes used to break.
    proc = await _serve(data_dir, SALON_METRICS_PORT="0", SALON_LOG_FORMAT="json")
    lines: list[str] = []
    try:
        target = await _read_target(proc, 120, lines)
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
            for inode in _socket_inodes(pid)
            if inode in sockets
        ]
        gateway_port = int(target.rsplit(":", 1)[1])
        assert any(port == gateway_port for *_, port in listeners), f"the gateway's listener is seen: {listeners}"
        assert any(name == "raylet" for name, *_ in listeners), f"Ray's listeners are seen: {listeners}"
        exposed = [
            listener
            for listener in listeners
            if not _is_loopback(listener[2]) and listener[0] not in KNOWN_EVERY_INTERFACE_LISTENERS
        ]
        assert not exposed, f"listening beyond loopback (process, pid, address, port): {exposed}"
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        rest = await asyncio.wait_for(proc.stderr.read(), 60)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
    finally:
        await _stop(proc)
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
