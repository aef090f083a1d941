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

from engine.providers import scripted_reply
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


async def test_sigterm_lets_the_running_turn_finish_and_leaves_no_process(tmp_path: Path) -> None:
    data_dir = tmp_path / "serve-data"
    raylets_before = _processes_matching("raylet")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALON_", "RAY_ADDRESS"))}
    env.update(
        SALON_MODEL_PROVIDER="scripted",
        SALON_SCRIPTED_TOKENS="30",
        SALON_SCRIPTED_TOKEN_DELAY_S="0.05",
        SALON_SHUTDOWN_GRACE_S="20",
    )
    proc = await asyncio.create_subprocess_exec(
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
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert not _alive(nats_pid), "the embedded nats-server is stopped"
    deadline = time.monotonic() + 30
    while _processes_matching("raylet") - raylets_before:
        assert time.monotonic() < deadline, "the engine's Ray processes are gone"
        await asyncio.sleep(0.1)
