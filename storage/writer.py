"""The batch writer: moves ledger entries into the transcript store, acknowledging each only once it is stored.

Entries are buffered and written in batches (one ``store.write`` per flush) when ``flush_rows`` are held,
when the oldest has waited ``flush_interval_s``, or on close. A flush acknowledges its entries, in order,
only after the write succeeded; if the write fails the entries stay buffered and unacknowledged, the
writer stops fetching (memory stays bounded by ``flush_rows``) and retries with jittered exponential
backoff until a write succeeds. Because the store's writes are idempotent, an entry redelivered by the
ledger (after a crash, or after its ack wait ran out during an outage) is written once and acked again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol, TypedDict

from salon import otel
from salon.storage.errors import InvalidArgument, SalonError
from salon.storage.lance.schemas import record_fits
from salon.storage.records import (
    KIND_ACTIVATION,
    KIND_PROGRESS,
    KIND_SNAPSHOT,
    KIND_TURN,
    RECORD_HEADER,
    SnapshotRecord,
    TurnRecord,
)

log = logging.getLogger(__name__)

NOT_STORED_KINDS: Final = frozenset({KIND_ACTIVATION, KIND_PROGRESS})
"""Kinds the ledger carries for its own use (fencing markers, steps of running turns): acked without a word, not
written."""

INITIAL_BACKOFF_S: Final = 0.1

Record = TurnRecord | SnapshotRecord
SessionRef = tuple[str, str, str]
"""(tenant id, session id, incarnation)."""
SessionExists = Callable[[str, str, str], Awaitable[bool]]
"""Whether (tenant id, session id, incarnation) still exists; False for a deleted session."""


class LedgerEntry(Protocol):
    """One ledger entry as the source delivers it."""

    data: bytes
    headers: dict[str, str] | None
    seq: int
    """Ledger stream sequence."""

    async def ack(self) -> None:
        """Tell the ledger the entry is stored; it will not be delivered again."""
        ...


class LedgerSource(Protocol):
    """Where the writer gets ledger entries (a durable JetStream consumer in production)."""

    async def fetch(self, batch: int, timeout_s: float) -> Sequence[LedgerEntry]:
        """Up to ``batch`` entries; waits at most ``timeout_s`` for the first, and returns [] on timeout."""
        ...


class RecordStore(Protocol):
    """What the writer needs of :class:`salon.storage.tables.TranscriptStore`."""

    async def write(self, turns: Sequence[TurnRecord], snapshots: Sequence[SnapshotRecord]) -> None:
        """Store the records idempotently (a record already stored is not stored again)."""
        ...

    async def optimize(self) -> None:
        """Compact the store."""
        ...


class WriterStatus(TypedDict):
    """The writer's health and counters, for the engine's status report."""

    healthy: bool
    """False while the store fails writes (from a failed write to the next successful one). Failures on the
    ledger's side (fetching entries, the deleted-session check: a NATS outage the engine watches itself) are
    counted and named in ``last_error`` but leave the store healthy."""
    last_error: str
    """Reason and message of the last failure (never record content); empty if none yet."""
    buffered: int
    flushed_rows: int
    """Records handed to successful writes (a redelivered record counts again; the store keeps one row)."""
    flushes: int
    last_flush_ms: float
    failures: int
    skipped: int
    """Entries of an unknown kind, that could not be decoded, or whose record does not fit the table schema:
    acked and not written (activation markers, expected and not stored, are not counted)."""
    dropped: int
    """Records of sessions that no longer exist: acked and not written."""


class _Skip(enum.Enum):
    """Why an entry carries nothing to write."""

    NOT_STORED = "not stored"
    UNUSABLE = "unusable"
    """Of an unknown kind, undecodable, or not fitting the table schema."""


@dataclass(slots=True)
class _Pending:
    entry: LedgerEntry
    record: Record | _Skip
    """A skipped entry is acked with its flush, in order, but not written."""
    buffered_at: float = field(default_factory=time.monotonic)


class BatchWriter:
    """Persists ledger entries from ``source`` into ``store`` in batches; see the module documentation.

    ``session_exists``, if given, is asked once per distinct session in a flush; the records of a session it
    denies are acked without being written, so entries still in flight cannot resurrect a deleted session.
    ``optimize_every``: call ``store.optimize()`` after this many flushes (0: never).
    """

    def __init__(
        self,
        source: LedgerSource,
        store: RecordStore,
        *,
        flush_rows: int = 512,
        flush_interval_s: float = 1.0,
        optimize_every: int = 50,
        max_backoff_s: float = 5.0,
        session_exists: SessionExists | None = None,
    ) -> None:
        if flush_rows < 1 or flush_interval_s <= 0 or optimize_every < 0 or max_backoff_s <= 0:
            raise ValueError("flush_rows >= 1, flush_interval_s > 0, optimize_every >= 0 and max_backoff_s > 0")
        self._source = source
        self._store = store
        self._flush_rows = flush_rows
        self._flush_interval_s = flush_interval_s
        self._optimize_every = optimize_every
        self._max_backoff_s = max_backoff_s
        self._session_exists = session_exists
        self._pending: list[_Pending] = []
        self._flush_lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._write_failing = False
        """A flush failed (on either side): the loop only retries it."""
        self._store_failing = False
        self._consecutive_failures = 0
        self._flushes_since_optimize = 0
        self._last_error = ""
        self._flushed_rows = 0
        self._flushes = 0
        self._last_flush_ms = 0.0
        self._failures = 0
        self._skipped = 0
        self._dropped = 0

    async def start(self) -> None:
        """Start fetching and writing in a task owned by the writer. Starting twice does nothing."""
        if self._closed:
            raise RuntimeError("the batch writer is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="salon-batch-writer")

    async def close(self) -> None:
        """Stop fetching, flush what is buffered (one attempt), then return. Idempotent.

        Entries a failed final flush leaves unacknowledged are delivered again by the ledger. To bound the
        wait (a write in progress is let finish), wrap in ``asyncio.wait_for``: cancelling ``close`` cancels
        the loop task it is awaiting.
        """
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._task is not None:
            # The loop wakes at once: its fetch and its backoff both race the stop event.
            await self._task
        try:
            await self.flush()
        except Exception:
            log.warning("final flush failed; %d entries left to ledger redelivery", len(self._pending))

    async def flush(self) -> None:
        """Write and acknowledge every buffered entry now; raise the store's error if the write fails."""
        async with self._flush_lock:
            try:
                await self._flush_pending()
            except Exception as exc:
                self._note_write_failure(exc)
                if isinstance(exc, InvalidArgument):
                    self._set_aside_unfit()
                raise

    def status(self) -> WriterStatus:
        """The writer's health and counters."""
        return WriterStatus(
            healthy=not self._store_failing,
            last_error=self._last_error,
            buffered=len(self._pending),
            flushed_rows=self._flushed_rows,
            flushes=self._flushes,
            last_flush_ms=self._last_flush_ms,
            failures=self._failures,
            skipped=self._skipped,
            dropped=self._dropped,
        )

    # The loop: fetch until a flush is due, flush; while the store fails, only retry the flush.

    async def _run(self) -> None:
        try:
            while not self._stop.is_set():
                if self._write_failing:
                    await self._retry_flush()
                else:
                    await self._fetch_then_flush()
        except Exception:
            # A bug: report it rather than let the task die silently. Buffered entries stay unacked.
            log.exception("batch writer loop stopped")
            self._write_failing = True
            self._last_error = "INTERNAL: batch writer loop stopped"

    async def _fetch_then_flush(self) -> None:
        wait_s = self._seconds_until_due()
        if wait_s > 0 and len(self._pending) < self._flush_rows:
            self._buffer(await self._fetch(wait_s))
        if self._flush_due():
            await self._flush_in_loop()

    async def _retry_flush(self) -> None:
        if await self._stopped_within(self._backoff_s()):
            return
        await self._flush_in_loop()

    async def _flush_in_loop(self) -> None:
        # Failures are recorded by flush(); the loop carries on in retry mode.
        with contextlib.suppress(Exception):
            await self.flush()

    async def _fetch(self, timeout_s: float) -> Sequence[LedgerEntry]:
        """Entries from the source, or [] on timeout, on stop, or on a source failure (after a backoff)."""
        fetch = asyncio.ensure_future(
            self._source.fetch(batch=self._flush_rows - len(self._pending), timeout_s=timeout_s)
        )
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            done, _ = await asyncio.wait({fetch, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # On stop, an interrupted fetch's entries are never acked: the ledger delivers them again. Both
            # are awaited so neither outlives this call.
            stop.cancel()
            fetch.cancel()
            await asyncio.wait({fetch, stop})
        if fetch not in done:
            return []
        try:
            entries = fetch.result()
        except Exception as exc:
            await self._note_fetch_failure(exc)
            return []
        return entries

    async def _note_fetch_failure(self, exc: Exception) -> None:
        self._failures += 1
        self._consecutive_failures += 1
        self._last_error = _describe(exc)
        log.warning("fetching ledger entries failed: %s", self._last_error)
        await self._stopped_within(self._backoff_s())

    def _buffer(self, entries: Sequence[LedgerEntry]) -> None:
        self._pending.extend(_Pending(entry, _decode(entry)) for entry in entries)

    def _seconds_until_due(self) -> float:
        if not self._pending:
            return self._flush_interval_s
        return self._pending[0].buffered_at + self._flush_interval_s - time.monotonic()

    def _flush_due(self) -> bool:
        return bool(self._pending) and (len(self._pending) >= self._flush_rows or self._seconds_until_due() <= 0)

    async def _stopped_within(self, seconds: float) -> bool:
        """Wait ``seconds`` or until close; True if closing."""
        try:
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    def _backoff_s(self) -> float:
        ceiling = min(self._max_backoff_s, INITIAL_BACKOFF_S * 2 ** max(0, self._consecutive_failures - 1))
        # Jitter keeps many writers that failed together from retrying in step.
        return random.uniform(ceiling / 2, ceiling)

    # A flush: filter, write once, then ack in order.

    async def _flush_pending(self) -> None:
        batch = list(self._pending)
        if not batch:
            return
        started = time.perf_counter()
        records = [p.record for p in batch if not isinstance(p.record, _Skip)]
        live = await self._live(records)
        turns = [r for r in live if isinstance(r, TurnRecord)]
        snapshots = [r for r in live if isinstance(r, SnapshotRecord)]
        if live:
            # One span per write, in no turn's trace (a batch holds many turns): it names theirs instead.
            trace_ids = sorted({t.trace_id for t in turns if t.trace_id})
            batch_attrs = {otel.attributes.BATCH_ROWS: len(live), otel.attributes.BATCH_TRACE_IDS: trace_ids}
            # Linked to each turn's ledger append, whose context the entry's headers carry.
            links = [
                link
                for p in batch
                if isinstance(p.record, TurnRecord) and (link := otel.link_from(p.entry.headers)) is not None
            ]
            with otel.span(otel.attributes.SPAN_BATCH_WRITE, attributes=batch_attrs, links=links):
                try:
                    await self._store.write(turns, snapshots)
                except Exception as exc:
                    # A record that does not fit is set aside (see flush); anything else is the store failing.
                    self._store_failing = not isinstance(exc, InvalidArgument)
                    raise
        # Written: from here on nothing may fail the flush. Only the loop appends to the buffer, so the
        # flushed entries are still its first ones.
        del self._pending[: len(batch)]
        await _ack_all(batch)
        self._note_write_success(batch, records, live, started)
        if live:
            await self._maybe_optimize()

    async def _live(self, records: list[Record]) -> list[Record]:
        """``records`` minus those of sessions ``session_exists`` denies."""
        if self._session_exists is None or not records:
            return records
        check = self._session_exists
        sessions = list(dict.fromkeys(_session_of(r) for r in records))
        answers = await asyncio.gather(*(check(*s) for s in sessions))
        gone = {s for s, exists in zip(sessions, answers, strict=True) if not exists}
        if gone:
            log.info("dropping the records of %d deleted sessions", len(gone))
        return [r for r in records if _session_of(r) not in gone]

    def _note_write_success(
        self, batch: list[_Pending], records: list[Record], live: list[Record], started: float
    ) -> None:
        self._write_failing = self._store_failing = False
        self._consecutive_failures = 0
        self._flushes += 1
        self._flushed_rows += len(live)
        self._skipped += sum(p.record is _Skip.UNUSABLE for p in batch)
        self._dropped += len(records) - len(live)
        self._last_flush_ms = (time.perf_counter() - started) * 1000

    def _note_write_failure(self, exc: Exception) -> None:
        self._write_failing = True
        self._failures += 1
        self._consecutive_failures += 1
        self._last_error = _describe(exc)
        log.warning("writing %d buffered entries failed: %s", len(self._pending), self._last_error)

    def _set_aside_unfit(self) -> None:
        """Mark the buffered records that can never be stored as skipped, so the retry writes the others.

        Without this, one malformed ledger entry (a field of the wrong type or null) would fail every
        retry and stop persistence for good. The entry stays in the ledger for inspection.
        """
        for pending in self._pending:
            if not isinstance(pending.record, _Skip) and not record_fits(pending.record):
                log.error("skipping the record at ledger seq %d: it does not fit the table schema", pending.entry.seq)
                pending.record = _Skip.UNUSABLE

    async def _maybe_optimize(self) -> None:
        if not self._optimize_every:
            return
        self._flushes_since_optimize += 1
        if self._flushes_since_optimize < self._optimize_every:
            return
        self._flushes_since_optimize = 0
        try:
            await self._store.optimize()
        except Exception as exc:
            # Only performance suffers until the next attempt; the data is already safe.
            log.warning("optimizing the transcript store failed: %s", _describe(exc))


def _decode(entry: LedgerEntry) -> Record | _Skip:
    """The record an entry carries, or why there is none (logged unless expected)."""
    kind = (entry.headers or {}).get(RECORD_HEADER, "")
    try:
        if kind == KIND_TURN:
            return TurnRecord.from_json(entry.data, ledger_seq=entry.seq)
        if kind == KIND_SNAPSHOT:
            return SnapshotRecord.from_json(entry.data)
    except (ValueError, TypeError, KeyError) as exc:
        # A payload that cannot be decoded now never will be: skip it rather than block the ledger.
        log.error("skipping undecodable %s entry at ledger seq %d (%s)", kind, entry.seq, type(exc).__name__)
        return _Skip.UNUSABLE
    if kind in NOT_STORED_KINDS:
        return _Skip.NOT_STORED
    log.warning("skipping ledger entry at seq %d of unknown kind %r", entry.seq, kind[:32])
    return _Skip.UNUSABLE


async def _ack_all(batch: list[_Pending]) -> None:
    for pending in batch:
        try:
            await pending.entry.ack()
        except Exception as exc:
            # The record is stored; an entry whose ack is lost is delivered again and written as a no-op.
            log.warning("ack of ledger seq %d failed (%s)", pending.entry.seq, type(exc).__name__)


def _session_of(record: Record) -> SessionRef:
    return (record.tenant_id, record.session_id, record.incarnation)


def _describe(exc: BaseException) -> str:
    """A failure as reason and message; a SalonError's message is content-free by contract, others are not
    known to be, so only their type is kept."""
    if isinstance(exc, SalonError):
        return f"{exc.reason}: {exc.message}"
    return type(exc).__name__
