"""A full disk does not wedge the engine: while the data directory has no room, health says NOT_SERVING and
turns are refused with UNAVAILABLE and a reason; once space returns the engine serves again by itself.

Needs a small filesystem of its own (a tmpfs, mounted as root); skipped otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from conftest import collect_turn, create_session, wait_for
from grpc_health.v1 import health_pb2, health_pb2_grpc

from salon.engine import Engine
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

TMPFS_SIZE = "256m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of its own, as the engine's data directory; unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("the disk-full test mounts a tmpfs, which needs root")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({done.stderr.decode(errors='replace').strip()})")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount)], check=False)


def _fill(path: Path) -> None:
    """Write zeros to ``path`` until the filesystem has no room left."""
    block = b"\0" * (1 << 20)
    with path.open("wb") as out:
        try:
            while True:
                out.write(block)
                out.flush()
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    with contextlib.suppress(OSError), path.open("ab") as out:  # top up what a 1 MiB block could not take
        while True:
            out.write(b"\0" * 4096)
            out.flush()


def _reason(error: grpc.aio.AioRpcError) -> str:
    return str(dict(error.trailing_metadata() or ()).get("salon-error-reason", ""))


async def test_a_full_disk_refuses_turns_and_the_engine_recovers_when_space_returns(
    small_disk: Path, make_engine: object
) -> None:
    engine: Engine = await make_engine(  # type: ignore[operator]
        nats_url="", data_dir=str(small_disk / "data"), store_check_interval_s=0.1, flush_interval_s=0.1
    )
    try:
        async with grpc.aio.insecure_channel(engine.target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            session_id = await create_session(stub)
            acked = [(await collect_turn(stub, session_id, "before the disk fills"))[0].turn_id]

            filler = small_disk / "filler"
            await asyncio.to_thread(_fill, filler)
            filled_at = time.monotonic()

            unanswered: list[str] = []

            async def refusing() -> bool:
                key = str(uuid.uuid4())
                try:
                    events = await collect_turn(stub, session_id, "while full", timeout=30, idempotency_key=key)
                except grpc.aio.AioRpcError as exc:
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    # Refused outright, or taken in before the engine noticed and its stream ended with the
                    # retry hint: such a turn may still run once space returns (never twice).
                    unanswered.append(key)
                    return _reason(exc) == "STORAGE_FULL"
                acked.append(events[0].turn_id)  # it fit before the engine noticed
                return False

            await wait_for(refusing, timeout_s=60, what="turns to be refused with STORAGE_FULL")
            status = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.CreateSession(cs_pb2.CreateSessionRequest())
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert _reason(info.value) == "STORAGE_FULL"
            refused_s = time.monotonic() - filled_at

            filler.unlink()
            freed_at = time.monotonic()

            async def serving() -> bool:
                reply = await health.Check(health_pb2.HealthCheckRequest(service=""))
                return reply.status == health_pb2.HealthCheckResponse.SERVING

            await wait_for(serving, timeout_s=60, what="the engine to serve again")
            serving_s = time.monotonic() - freed_at
            after = await collect_turn(stub, session_id, "after space returned", timeout=60)
            assert after[-1].HasField("completed")
            first_turn_s = time.monotonic() - freed_at
            acked.append(after[0].turn_id)
            history = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id))
            stored = [t.turn_id for t in history.turns]
            assert [t for t in stored if t in acked] == acked, "every acknowledged turn, in order"
            assert len(set(stored)) == len(stored), "no turn twice"
            assert set(stored) <= set(acked) | set(unanswered), "nothing that was never sent"
        print(
            f"disk full: refused {refused_s:.2f} s after filling; SERVING {serving_s:.2f} s after freeing, "
            f"first turn completed {first_turn_s:.2f} s after freeing"
        )
    finally:
        await engine.close()  # before the fixture unmounts the disk under it
