"""A gateway's token counts: summed in memory per tenant and day as turns report their usage, and recorded in
the shared :class:`~salon.storage.usage.TokenCounters` at a short interval (and when the gateway stops).

Nothing is counted on a turn's path (a dict update), and however many turns of a tenant finish at once, the
store sees one write per tenant and interval from each gateway. The writes are this gateway run's running
totals, so a write is retried until it lands without ever counting anything twice; a gateway that crashes
loses at most the tokens of its last interval. Budget checks read the tenant's total over every gateway as last
read (read again at most every interval) plus this gateway's tokens not yet recorded: another gateway's tokens
show up within about two intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from salon.otel import stop_tasks
from salon.storage.errors import SalonError
from salon.storage.ids import uuid7
from salon.storage.usage import TokenCounters

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.5
"""How often counted tokens are recorded in the shared store (and how stale a read total may be)."""
CLOSE_GRACE_S = 5.0
"""How long stopping keeps trying to record the last tokens."""

_Key = tuple[str, int]


class TokenMeter:
    """Counts tokens per (tenant, day) and records them in ``counters``.

    Lifecycle: :meth:`start` runs the recorder, :meth:`flush` records now, :meth:`close` (idempotent) stops it
    after a last flush. Without :meth:`start` nothing is recorded until :meth:`flush` is called (unit tests)."""

    def __init__(
        self,
        counters: TokenCounters,
        *,
        writer: str | None = None,
        interval_s: float = FLUSH_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._counters = counters
        self.writer = writer or uuid7()
        """This gateway run's name in the store (new at every start: totals of earlier runs stay theirs)."""
        self._interval_s = interval_s
        self._clock = clock
        self._counted: dict[_Key, int] = {}
        """This run's tokens per key so far."""
        self._recorded: dict[_Key, int] = {}
        """Of those, what the store holds."""
        self._shared: dict[_Key, tuple[int, float]] = {}
        """The total over every writer as last read or written, and when."""
        self._reads: dict[_Key, asyncio.Future[None]] = {}
        self._flushing: asyncio.Lock | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._failing = False
        self._closed = False

    def add(self, tenant_id: str, day: int, tokens: int) -> None:
        """Count ``tokens`` (recorded with the next flush)."""
        if tokens > 0:
            key = (tenant_id, day)
            self._counted[key] = self._counted.get(key, 0) + tokens

    def unrecorded(self) -> int:
        """Tokens counted here that the store does not hold yet."""
        return sum(total - self._recorded.get(key, 0) for key, total in self._counted.items())

    async def total(self, tenant_id: str, day: int) -> int:
        """The tenant's tokens on ``day`` over every gateway: as last read (at most an interval ago) plus this
        gateway's not yet recorded."""
        key = (tenant_id, day)
        shared = self._shared.get(key)
        if shared is None or self._clock() - shared[1] >= self._interval_s:
            reading = self._reads.get(key)
            if reading is None:
                # One read per key at a time: the turns of a busy tenant share it.
                reading = self._reads[key] = asyncio.ensure_future(self._read(key))
            await asyncio.shield(reading)
            shared = self._shared[key]
        return shared[0] + self._counted.get(key, 0) - self._recorded.get(key, 0)

    async def _read(self, key: _Key) -> None:
        recorded_before = self._recorded.get(key, 0)
        started = self._clock()
        try:
            total = await self._counters.get(*key)
        finally:
            self._reads.pop(key, None)
        if self._recorded.get(key, 0) != recorded_before and key in self._shared:
            # A flush landed meanwhile: the read may predate it, the figure the flush returned does not.
            return
        self._shared[key] = (total, started)

    async def flush(self) -> bool:
        """Record every count the store does not hold yet; whether all landed (a failure is logged once and
        tried again at the next flush)."""
        if self._flushing is None:
            self._flushing = asyncio.Lock()
        async with self._flushing:
            pending = [(key, total) for key, total in self._counted.items() if total > self._recorded.get(key, 0)]
            results = await asyncio.gather(
                *(self._record(key, total) for key, total in pending), return_exceptions=True
            )
            failed = [r for r in results if isinstance(r, BaseException)]
            for result in failed:
                if not isinstance(result, SalonError):
                    raise result
            if failed and not self._failing:
                log.warning("token counts not recorded yet (%s); trying again", failed[0])
            elif not failed and self._failing:
                log.info("token counts recorded again")
            self._failing = bool(failed)
            self._forget_old_days()
            return not failed

    async def _record(self, key: _Key, total: int) -> None:
        started = self._clock()
        shared = await self._counters.record(key[0], key[1], self.writer, total)
        self._recorded[key] = max(self._recorded.get(key, 0), total)
        self._shared[key] = (shared, started)

    def _forget_old_days(self) -> None:
        """Drop fully recorded totals older than yesterday (no budget check asks for them again)."""
        if not self._counted:
            return
        latest = max(day for _, day in self._counted)
        for key in [k for k in self._counted if k[1] < latest - 1 and self._counted[k] == self._recorded.get(k, 0)]:
            del self._counted[key]
            self._recorded.pop(key, None)
            self._shared.pop(key, None)

    def start(self) -> None:
        """Record counts every interval, in the background."""
        if self._task is None and not self._closed:
            self._task = asyncio.create_task(self._run(), name="salon-token-meter")

    async def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval_s)
            try:
                await self.flush()
            except Exception:
                log.exception("recording token counts failed; trying again")

    async def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Stop the recorder and record what is left, trying for ``grace_s``. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            await stop_tasks([task])
        deadline = self._clock() + grace_s
        delay = 0.05
        while not await self.flush():
            if self._clock() + delay > deadline:
                log.warning("%d tokens were not recorded in the usage counters before shutdown", self.unrecorded())
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        for reading in list(self._reads.values()):
            reading.cancel()
