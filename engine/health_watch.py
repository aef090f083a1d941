"""Keeping the engine's :class:`~salon.engine.gates.Availability` and its health status current, and repairing what
can be repaired without an operator.

Three inputs: the gateway's NATS connection (lost: the bus is down; back: the bus is restored, since a
restarted server has lost the in-memory events stream), the batch writer's health (the transcript store takes
writes or not) and the data directory's free space (:class:`~salon.engine.disk.DiskGuard`). Health says SERVING only
while all three allow new turns. When a full disk has room again, the embedded nats-server is restarted (a
JetStream store that failed a write takes no more until then) and the writer is asked to retry at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from salon.engine.disk import DiskGuard
from salon.engine.gates import Availability
from salon.otel import stop_tasks
from salon.storage.writer import WriterStatus

log = logging.getLogger(__name__)

RESTORE_BACKOFF_S = (0.1, 2.0)
WRITER_CALL_TIMEOUT_S = 5.0


class Writer(Protocol):
    """What the watch needs of the batch writer (:class:`~salon.engine.ray_runtime.WriterHandle`)."""

    async def started(self) -> object:
        """Wait until the writer has started; raises what its start raised."""
        ...

    async def status(self) -> WriterStatus:
        """The writer's health and figures."""
        ...

    async def flush(self) -> None:
        """Write what it holds now."""
        ...


class Restartable(Protocol):
    """The embedded NATS server (:class:`~salon.engine.nats_server.EmbeddedNats`)."""

    async def restart(self) -> None:
        """Stop the server and let its supervision start it again."""
        ...


class HealthWatch:
    """See the module documentation. Lifecycle: :meth:`start`, then :meth:`close` (idempotent).

    ``set_serving`` reports health; ``live()`` says whether health may still change (not before the engine
    runs, nor once it drains). ``restore_bus`` makes the streams and consumers on the current connection and
    ``connected()`` says whether that connection is up. ``writer()`` and ``nats_server()`` give the batch
    writer and the embedded NATS server once started (None: there is none in this process).
    """

    def __init__(
        self,
        availability: Availability,
        *,
        set_serving: Callable[[bool], Awaitable[None]],
        live: Callable[[], bool],
        restore_bus: Callable[[], Awaitable[None]],
        connected: Callable[[], bool],
        disk: DiskGuard,
        interval_s: float,
        writer: Callable[[], Writer | None] = lambda: None,
        nats_server: Callable[[], Restartable | None] = lambda: None,
    ) -> None:
        self._availability = availability
        self._set_serving = set_serving
        self._live = live
        self._restore_bus = restore_bus
        self._connected = connected
        self._disk = disk
        self._interval_s = interval_s
        self._writer = writer
        self._nats_server = nats_server
        self._tasks: list[asyncio.Task[None]] = []
        self._restore: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Look at the disk once now, then watch the disk and the writer in tasks owned here."""
        self._disk.check()
        self._availability.disk_full = self._disk.full
        if not self._tasks:
            self._tasks.append(asyncio.create_task(self._watch_disk(), name="salon-disk-watch"))
            writer = self._writer()
            if writer is not None:
                self._tasks.append(asyncio.create_task(self._watch_store(writer), name="salon-store-watch"))

    async def close(self) -> None:
        """Stop watching. Idempotent."""
        tasks, self._tasks = [*self._tasks, *([self._restore] if self._restore else [])], []
        self._restore = None
        await stop_tasks(tasks)

    async def refresh(self) -> None:
        """Report health as :attr:`Availability.serving` says (while live)."""
        if self._live():
            await self._set_serving(self._availability.serving)

    async def on_nats_state(self, connected: bool) -> None:
        """The gateway's NATS connection was lost (False) or is back (True)."""
        if not connected:
            self._availability.bus_ready = False
            await self.refresh()
            return
        # Run as a task: the client's reconnect callback must not wait on requests itself.
        if self._live() and (self._restore is None or self._restore.done()):
            self._restore = asyncio.create_task(self._restore_until_done(), name="salon-restore-bus")

    async def _restore_until_done(self) -> None:
        delay = RESTORE_BACKOFF_S[0]
        while self._live():
            try:
                await self._restore_bus()
            except Exception as exc:
                log.warning("restoring the turn bus after reconnect failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTORE_BACKOFF_S[1])
                continue
            self._availability.bus_ready = self._connected()
            if self._availability.bus_ready:
                log.warning("NATS connection and turn bus restored; accepting calls")
            await self.refresh()
            return

    async def _watch_store(self, writer: Writer) -> None:
        # The engine refuses new turns while it cannot keep them: the ledger still holds every accepted one.
        try:
            await writer.started()  # the engine serves while the writer starts; turns wait in the ledger
        except Exception as exc:
            log.error("the batch writer did not start (%s); refusing new turns until it does", type(exc).__name__)
            self._availability.store_healthy = False
            await self.refresh()
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                # asyncio.timeout, not wait_for: in Python 3.11 wait_for can swallow a cancellation that
                # meets the call's completion, and close() would then wait for this loop forever.
                async with asyncio.timeout(WRITER_CALL_TIMEOUT_S):
                    status = await writer.status()
            except Exception:
                continue  # the writer is restarting; turns wait safely in the ledger meanwhile
            healthy = bool(status["healthy"])
            if healthy != self._availability.store_healthy:
                self._availability.store_healthy = healthy
                if healthy:
                    log.warning("transcript store writable again; accepting turns")
                else:
                    log.error("transcript store failing (%s); refusing new turns", status["last_error"])
                await self.refresh()

    async def _watch_disk(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            if not self._disk.check():
                continue
            if not self._disk.full:
                await self._recover_from_full_disk()
            self._availability.disk_full = self._disk.full
            await self.refresh()

    async def _recover_from_full_disk(self) -> None:
        nats_server, writer = self._nats_server(), self._writer()
        if nats_server is not None:
            # The bus is down from here until the reconnect restores it.
            self._availability.bus_ready = False
            await nats_server.restart()
        if writer is not None:
            # The writer retries a failed write with a backoff of up to seconds: try it now.
            with contextlib.suppress(Exception):
                async with asyncio.timeout(WRITER_CALL_TIMEOUT_S):
                    await writer.flush()
