"""`salon serve` as an operator runs it: it says where it listens, and SIGTERM drains it cleanly."""

from __future__ import annotations

import asyncio
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


def _processes_matching(fragment: str) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if fragment.encode() in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _read_target(proc: asyncio.subprocess.Process, timeout_s: float) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(proc.stderr.readline(), deadline - time.monotonic())
        if not line:
            break
        match = re.search(r"gRPC gateway on (\S+)", line.decode())
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
    )


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def _wait_gone(pids: set[int], what: str) -> None:
    deadline = time.monotonic() + 30
    while any(_alive(pid) for pid in pids):
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)  # wait-ok: polls a condition with a deadline


async def test_sigterm_lets_the_running_turn_finish_and_leaves_no_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "serve-data"
    raylets_before = _processes_matching("raylet")
    proc = await _serve(
        data_dir, SALON_SCRIPTED_TOKENS="30", SALON_SCRIPTED_TOKEN_DELAY_S="0.05", SALON_SHUTDOWN_GRACE_S="20"
    )
    try:
        target = await _read_target(proc, 120)
        nats_pid = int((data_dir / "nats" / "run" / "nats-server.pid").read_text())
        async with grpc.aio.insecure_channel(target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            session_id = await create_session(stub)
            call = stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text="finish me"))
            events = []
            async for response in call:
                events.append(response.event)
                if response.event.HasField("delta") and len(events) == 3:
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
    finally:
        await _stop(proc)
    assert not _alive(nats_pid), "the embedded nats-server is stopped"
    await _wait_gone(_processes_matching("raylet") - raylets_before, "the engine's Ray processes are gone")


async def test_engine_killed_outright_loses_no_acknowledged_turn(tmp_path: Path) -> None:
    data_dir = tmp_path / "crash-data"
    raylets_before = _processes_matching("raylet")
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
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    finally:
        await _stop(proc)
    # Nothing of the killed engine may linger (and hold the data directory or keep pulling turns).
    await _wait_gone({nats_pid}, "the killed engine's nats-server is stopped")
    await _wait_gone(_processes_matching("raylet") - raylets_before, "the killed engine's Ray processes are gone")

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
