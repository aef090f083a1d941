"""The engine's health follows NATS, the transcript store and the disk, and repairs what it can
(engine.health_watch), driven here through fakes of the writer, the NATS server and the disk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from unit_support import wait_for

from salon.engine.disk import MIN_FREE_BYTES, DiskGuard
from salon.engine.gates import Availability
from salon.engine.health_watch import HealthWatch
from salon.storage import Unavailable
from salon.storage.writer import WriterStatus


class Writer:
    def __init__(self) -> None:
        self.healthy = True
        self.flushes = 0
        self.start_error: Exception | None = None

    async def started(self) -> dict[str, int]:
        if self.start_error is not None:
            raise self.start_error
        return {"pid": 1}

    async def status(self) -> WriterStatus:
        if self.start_error is not None:
            raise self.start_error  # a writer whose start failed answers nothing else either
        return {"healthy": self.healthy, "last_error": "" if self.healthy else "STORE_UNWRITABLE: x"}  # type: ignore[typeddict-item]

    async def flush(self) -> None:
        self.flushes += 1


class NatsServer:
    def __init__(self) -> None:
        self.restarts = 0

    async def restart(self) -> None:
        self.restarts += 1


class World:
    """What the watch looks at, and what it reported."""

    def __init__(self) -> None:
        self.reports: list[bool] = []
        self.connected = True
        self.restore_failures = 0
        self.restores = 0
        self.free = 10 * MIN_FREE_BYTES
        self.writer = Writer()
        self.nats = NatsServer()
        self.availability = Availability(("/svc/",), frozenset({"/svc/Write"}))

    async def set_serving(self, serving: bool) -> None:
        self.reports.append(serving)

    async def restore(self) -> None:
        if self.restore_failures:
            self.restore_failures -= 1
            raise Unavailable("not yet")
        self.restores += 1


def watch_of(w: World) -> HealthWatch:
    return HealthWatch(
        w.availability,
        set_serving=w.set_serving,
        live=lambda: True,
        restore_bus=w.restore,
        connected=lambda: w.connected,
        disk=DiskGuard([Path("/data")], free=lambda _: w.free),
        interval_s=0.01,
        writer=lambda: w.writer,
        nats_server=lambda: w.nats,
    )


@pytest.fixture
async def world() -> AsyncIterator[tuple[World, HealthWatch]]:
    w = World()
    watch = watch_of(w)
    watch.start()
    yield w, watch
    await watch.close()
    await watch.close()


def last(w: World) -> Any:
    return w.reports[-1] if w.reports else None


async def test_a_lost_connection_is_not_serving_until_the_bus_is_restored(world: tuple[World, HealthWatch]) -> None:
    w, watch = world
    await watch.on_nats_state(False)
    assert last(w) is False and not w.availability.bus_ready
    w.restore_failures = 2
    await watch.on_nats_state(True)
    await wait_for(lambda: last(w) is True, what="serving after the restore")
    assert w.restores == 1 and w.availability.bus_ready


async def test_a_failing_store_is_not_serving_until_it_writes_again(world: tuple[World, HealthWatch]) -> None:
    w, _ = world
    w.writer.healthy = False
    await wait_for(lambda: last(w) is False, what="not serving")
    assert not w.availability.store_healthy
    w.writer.healthy = True
    await wait_for(lambda: last(w) is True, what="serving again")


async def test_a_full_disk_is_not_serving_and_recovery_restarts_nats_and_nudges_the_writer(
    world: tuple[World, HealthWatch],
) -> None:
    w, watch = world
    w.free = 0
    await wait_for(lambda: last(w) is False, what="not serving")
    assert w.availability.disk_full and w.nats.restarts == 0
    assert w.availability.refusal("/svc/Write") is not None
    w.free = 10 * MIN_FREE_BYTES
    await wait_for(lambda: w.nats.restarts == 1 and w.writer.flushes == 1, what="the repair")
    assert not w.availability.disk_full
    assert not w.availability.bus_ready, "down until the reconnect restores the bus"
    await watch.on_nats_state(True)
    await wait_for(lambda: last(w) is True, what="serving again")


async def test_a_writer_whose_start_failed_is_not_serving_until_it_reports_healthy() -> None:
    w = World()
    w.writer.start_error = RuntimeError("cannot open the tables")
    watch = watch_of(w)
    watch.start()
    try:
        await wait_for(lambda: last(w) is False, what="not serving")
        assert not w.availability.store_healthy
        # Ray restarted it and it writes now.
        w.writer.start_error = None
        await wait_for(lambda: last(w) is True, what="serving again")
    finally:
        await watch.close()
