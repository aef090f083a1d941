"""The batch writer between a fake ledger and a real LanceDB store: batching, ack-after-write, retries."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from unit_support import wait_for

from salon.storage.errors import Unavailable
from salon.storage.records import KIND_SNAPSHOT, KIND_TURN, RECORD_HEADER, SnapshotRecord, TurnRecord
from salon.storage.tables import SNAPSHOTS, TRANSCRIPTS, TranscriptStore
from salon.storage.writer import BatchWriter

INCARNATION = "1700000000000000000"


class FakeEntry:
    """A ledger entry whose acks are counted (and noted in ``timeline`` as ``ack:<seq>``)."""

    def __init__(self, data: bytes, headers: dict[str, str] | None, seq: int, timeline: list[str]) -> None:
        self.data = data
        self.headers = headers
        self.seq = seq
        self.acks = 0
        self._timeline = timeline

    async def ack(self) -> None:
        self.acks += 1
        self._timeline.append(f"ack:{self.seq}")


class QueueSource:
    """A ledger source backed by a queue: hands out the entries the test puts in."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[FakeEntry] = asyncio.Queue()
        self.timeline: list[str] = []
        self.entries: list[FakeEntry] = []

    def put(self, data: bytes, headers: dict[str, str] | None, seq: int) -> FakeEntry:
        entry = FakeEntry(data, headers, seq, self.timeline)
        self.entries.append(entry)
        self.queue.put_nowait(entry)
        return entry

    def put_turn(self, record: TurnRecord, seq: int | None = None) -> FakeEntry:
        """Deliver ``record``; redelivering it means calling this again with the same ``seq``."""
        return self.put(record.to_json(), {RECORD_HEADER: KIND_TURN}, record.turn_index if seq is None else seq)

    def put_snapshot(self, record: SnapshotRecord, seq: int) -> FakeEntry:
        return self.put(record.to_json(), {RECORD_HEADER: KIND_SNAPSHOT}, seq)

    async def fetch(self, batch: int, timeout_s: float) -> list[FakeEntry]:
        try:
            first = await asyncio.wait_for(self.queue.get(), timeout=timeout_s)
        except TimeoutError:
            return []
        entries = [first]
        while len(entries) < batch and not self.queue.empty():
            entries.append(self.queue.get_nowait())
        return entries

    def acked(self) -> bool:
        """Whether every entry put so far has been acked."""
        return all(e.acks for e in self.entries)


class ControlledStore:
    """A real store behind switches: fail writes (``failing`` or ``fail_next``), hold them at ``gate``."""

    def __init__(self, inner: TranscriptStore, timeline: list[str]) -> None:
        self.inner = inner
        self.timeline = timeline
        self.failing = False
        self.fail_next = 0
        self.fail_optimize = False
        self.gate = asyncio.Event()
        self.gate.set()
        self.attempts = 0
        self.writes: list[tuple[int, int]] = []
        self.optimizes = 0

    async def write(self, turns: Sequence[TurnRecord], snapshots: Sequence[SnapshotRecord]) -> None:
        self.attempts += 1
        await self.gate.wait()
        if self.failing or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            raise Unavailable("cannot write to the transcript store", reason="STORE_UNWRITABLE", retry_after_s=1.0)
        await self.inner.write(turns, snapshots)
        self.writes.append((len(turns), len(snapshots)))
        self.timeline.append(f"write:{len(turns)}")

    async def optimize(self) -> None:
        self.optimizes += 1
        if self.fail_optimize:
            raise Unavailable("cannot optimize the transcript store", reason="STORE_UNWRITABLE")
        await self.inner.optimize()


def turn(index: int, session: str = "s1", tenant: str = "acme") -> TurnRecord:
    return TurnRecord(
        tenant_id=tenant,
        session_id=session,
        turn_id=f"t{index}",
        incarnation=INCARNATION,
        turn_index=index,
        status="completed",
        user_text=f"question {index}",
        reply_text=f"answer {index}",
        deltas=("answer ", str(index)),
    )


@pytest.fixture
async def lance(tmp_path: Path) -> AsyncIterator[TranscriptStore]:
    opened = await TranscriptStore.open(str(tmp_path / "lance"))
    yield opened
    await opened.close()


@pytest.fixture
def source() -> QueueSource:
    return QueueSource()


@pytest.fixture
def store(lance: TranscriptStore, source: QueueSource) -> ControlledStore:
    return ControlledStore(lance, source.timeline)


@pytest.fixture
async def writers() -> AsyncIterator[list[BatchWriter]]:
    """Writers the test starts; each is closed at the end, whatever the test did."""
    started: list[BatchWriter] = []
    yield started
    for writer in started:
        await writer.close()


async def start(writers: list[BatchWriter], writer: BatchWriter) -> BatchWriter:
    writers.append(writer)
    await writer.start()
    return writer


async def test_flushes_when_flush_rows_are_held(
    source: QueueSource, store: ControlledStore, writers: list[BatchWriter]
) -> None:
    writer = await start(writers, BatchWriter(source, store, flush_rows=4, flush_interval_s=3600))
    for i in range(1, 9):
        source.put_turn(turn(i))
    await wait_for(source.acked, what="all 8 entries acked")
    assert store.writes == [(4, 0), (4, 0)]
    assert await store.inner.count(TRANSCRIPTS) == 8
    status = writer.status()
    assert (status["flushes"], status["flushed_rows"], status["buffered"]) == (2, 8, 0)
    assert status["healthy"]


async def test_flushes_when_the_interval_passes(
    source: QueueSource, store: ControlledStore, writers: list[BatchWriter]
) -> None:
    await start(writers, BatchWriter(source, store, flush_rows=1000, flush_interval_s=0.02))
    source.put_turn(turn(1))
    source.put_turn(turn(2))
    await wait_for(source.acked, what="both entries acked")
    assert await store.inner.history("acme", "s1") == [
        dataclasses.replace(turn(1), ledger_seq=1),
        dataclasses.replace(turn(2), ledger_seq=2),
    ]


async def test_close_flushes_what_is_buffered(source: QueueSource, store: ControlledStore) -> None:
    writer = BatchWriter(source, store, flush_rows=1000, flush_interval_s=3600)
    await writer.start()
    for i in range(1, 4):
        source.put_turn(turn(i))
    await wait_for(lambda: writer.status()["buffered"] == 3, what="3 entries buffered")
    assert not any(e.acks for e in source.entries)
    await writer.close()
    assert source.acked()
    assert await store.inner.count(TRANSCRIPTS) == 3
    await writer.close()  # idempotent
    assert store.writes == [(3, 0)]


async def test_acks_only_after_the_write_and_in_order(
    source: QueueSource, store: ControlledStore, writers: list[BatchWriter]
) -> None:
    store.gate.clear()  # hold the write
    await start(writers, BatchWriter(source, store, flush_rows=3, flush_interval_s=3600))
    for i in (5, 3, 9):
        source.put_turn(turn(i))
    await wait_for(lambda: store.attempts == 1, what="write started")
    assert not any(e.acks for e in source.entries)
    store.gate.set()
    await wait_for(source.acked, what="entries acked")
    assert source.timeline == ["write:3", "ack:5", "ack:3", "ack:9"]


async def test_redelivered_entries_make_one_row(
    source: QueueSource, store: ControlledStore, writers: list[BatchWriter]
) -> None:
    writer = await start(writers, BatchWriter(source, store, flush_rows=2, flush_interval_s=3600))
    source.put_turn(turn(1), seq=11)
    source.put_turn(turn(1), seq=11)  # redelivered into the same flush
    await wait_for(source.acked, what="first flush acked")
    source.put_turn(turn(1), seq=11)  # and again in a later flush
    source.put_turn(turn(2), seq=12)
    await wait_for(source.acked, what="second flush acked")
    assert await store.inner.count(TRANSCRIPTS) == 2
    assert [e.acks for e in source.entries] == [1, 1, 1, 1]
    assert [t.ledger_seq for t in await store.inner.history("acme", "s1")] == [11, 12]
    assert writer.status()["flushes"] == 2


async def test_a_failing_store_holds_entries_stops_fetching_and_recovers(
    source: QueueSource, store: ControlledStore, writers: list[BatchWriter]
) -> None:
    store.failing = True
    writer = await start(writers, BatchWriter(source, store, flush_rows=2, flush_interval_s=0.05, max_backoff_s=0.02))
    first = [source.put_turn(turn(i)) for i in (1, 2)]
    await wait_for(lambda: writer.status()["failures"] >= 2, what="write retried")
    status = writer.status()
    assert not status["healthy"]
    assert status["last_error"].startswith("STORE_UNWRITABLE")
    assert status["buffered"] == 2
    assert not any(e.acks for e in first)

    later = source.put_turn(turn(3))
    seen = writer.status()["failures"]
    await wait_for(lambda: writer.status()["failures"] >= seen + 2, what="more retries")
    assert source.queue.qsize() == 1  # not fetched while the store fails
    assert later.acks == 0

    store.failing = False
    await wait_for(source.acked, what="all acked after recovery")
    assert await store.inner.history("acme", "s1") == [dataclasses.replace(turn(i), ledger_seq=i) for i in (1, 2, 3)]
    status = writer.status()
    assert status["healthy"]
    assert status["buffered"] == 0
    assert [e.acks for e in source.entries] == [1, 1, 1]


async def test_a_store_failing_n_times_loses_nothing_and_duplicates_nothing(
    source: QueueSource, store: ControlledStore, writers: list[BatchWriter]
) -> None:
    store.fail_next = 3
    writer = await start(writers, BatchWriter(source, store, flush_rows=5, flush_interval_s=3600, max_backoff_s=0.01))
    for i in range(1, 11):
        source.put_turn(turn(i))
    await wait_for(source.acked, what="all acked")
    assert await store.inner.count(TRANSCRIPTS) == 10
    assert [e.acks for e in source.entries] == [1] * 10
    assert store.attempts == 2 + 3  # two batches, three failed attempts
    status = writer.status()
    assert (status["failures"], status["flushes"], status["flushed_rows"]) == (3, 2, 10)
    assert status["healthy"]


async def test_close_while_the_store_fails_returns_and_leaves_entries_unacked(
    source: QueueSource, store: ControlledStore
) -> None:
    store.failing = True
    writer = BatchWriter(source, store, flush_rows=1, flush_interval_s=3600, max_backoff_s=60)
    await writer.start()
    entry = source.put_turn(turn(1))
    await wait_for(lambda: writer.status()["failures"] >= 1, what="write failed")
    await asyncio.wait_for(writer.close(), timeout=10)  # does not sit out the 60 s backoff
    assert entry.acks == 0
    assert not writer.status()["healthy"]


async def test_records_of_deleted_sessions_are_acked_not_written(
    source: QueueSource, store: ControlledStore, writers: list[BatchWriter]
) -> None:
    asked: list[tuple[str, str, str]] = []

    async def session_exists(tenant: str, session: str, incarnation: str) -> bool:
        asked.append((tenant, session, incarnation))
        return session != "gone"

    writer = await start(
        writers, BatchWriter(source, store, flush_rows=4, flush_interval_s=3600, session_exists=session_exists)
    )
    source.put_turn(turn(1, session="live"), seq=1)
    source.put_turn(turn(1, session="gone"), seq=2)
    source.put_turn(turn(2, session="gone"), seq=3)
    snapshot = SnapshotRecord("acme", "gone", INCARNATION, turn_index=2, ledger_seq=3, state={"turn_count": 2})
    source.put_snapshot(snapshot, seq=4)
    await wait_for(source.acked, what="all acked")
    assert await store.inner.count(TRANSCRIPTS) == 1
    assert await store.inner.count(SNAPSHOTS) == 0
    assert [t.session_id for t in await store.inner.history("acme", "live")] == ["live"]
    assert sorted(asked) == [("acme", "gone", INCARNATION), ("acme", "live", INCARNATION)]  # once per session
    assert writer.status()["dropped"] == 3


async def test_unknown_and_undecodable_entries_are_acked_and_skipped(
    source: QueueSource, store: ControlledStore, writers: list[BatchWriter]
) -> None:
    writer = await start(writers, BatchWriter(source, store, flush_rows=5, flush_interval_s=3600))
    source.put(b'{"whatever": 1}', {RECORD_HEADER: "mystery"}, seq=1)
    source.put(turn(9).to_json(), None, seq=2)
    source.put(b"{not json", {RECORD_HEADER: KIND_TURN}, seq=3)
    source.put(b"{}", {RECORD_HEADER: "activation"}, seq=4)  # a fencing marker: expected, not stored
    source.put_turn(turn(5), seq=5)
    await wait_for(source.acked, what="all acked")
    assert [t.turn_index for t in await store.inner.history("acme", "s1")] == [5]
    assert source.timeline == ["write:1", "ack:1", "ack:2", "ack:3", "ack:4", "ack:5"]
    assert writer.status()["skipped"] == 3


async def test_records_that_do_not_fit_the_schema_are_set_aside(
    source: QueueSource, store: ControlledStore, writers: list[BatchWriter]
) -> None:
    # Decodable JSON with a wrong type and a null: LanceDB could never store them; they must not block the rest.
    writer = await start(writers, BatchWriter(source, store, flush_rows=3, flush_interval_s=3600, max_backoff_s=0.01))
    wrong_type = turn(1).to_json().replace(b'"turn_index":1', b'"turn_index":"one"')
    null = turn(2).to_json().replace(b'"status":"completed"', b'"status":null')
    source.put(wrong_type, {RECORD_HEADER: KIND_TURN}, seq=1)
    source.put(null, {RECORD_HEADER: KIND_TURN}, seq=2)
    source.put_turn(turn(3), seq=3)
    await wait_for(source.acked, what="all acked")
    assert [t.turn_index for t in await store.inner.history("acme", "s1")] == [3]
    assert source.timeline == ["write:1", "ack:1", "ack:2", "ack:3"]
    status = writer.status()
    assert (status["skipped"], status["failures"], status["healthy"]) == (2, 1, True)
    assert status["last_error"].startswith("RECORD_DOES_NOT_FIT")


async def test_a_flush_of_skipped_entries_only_does_not_write(
    source: QueueSource, store: ControlledStore, writers: list[BatchWriter]
) -> None:
    await start(writers, BatchWriter(source, store, flush_rows=1, flush_interval_s=3600))
    source.put(b"{}", {RECORD_HEADER: "mystery"}, seq=1)
    await wait_for(source.acked, what="acked")
    assert store.attempts == 0


async def test_snapshots_are_written(source: QueueSource, store: ControlledStore, writers: list[BatchWriter]) -> None:
    await start(writers, BatchWriter(source, store, flush_rows=2, flush_interval_s=3600))
    record = SnapshotRecord("acme", "s1", INCARNATION, turn_index=3, ledger_seq=30, state={"turn_count": 3})
    source.put_turn(turn(3), seq=30)
    source.put_snapshot(record, seq=31)
    await wait_for(source.acked, what="acked")
    assert await store.inner.latest_snapshot("acme", "s1") == record
    assert store.writes == [(1, 1)]


async def test_optimizes_every_n_flushes_and_survives_its_failure(
    source: QueueSource, store: ControlledStore, writers: list[BatchWriter]
) -> None:
    store.fail_optimize = True
    writer = await start(writers, BatchWriter(source, store, flush_rows=1, flush_interval_s=3600, optimize_every=2))
    for i in range(1, 6):
        source.put_turn(turn(i))
        await wait_for(source.acked, what=f"entry {i} acked")
    assert store.optimizes == 2
    assert writer.status()["healthy"]
    assert await store.inner.count(TRANSCRIPTS) == 5


async def test_flush_on_demand_raises_the_store_error_and_keeps_entries(
    source: QueueSource, store: ControlledStore
) -> None:
    writer = BatchWriter(source, store, flush_rows=1000, flush_interval_s=3600, max_backoff_s=60)
    await writer.start()
    source.put_turn(turn(1))
    await wait_for(lambda: writer.status()["buffered"] == 1, what="buffered")
    store.failing = True
    with pytest.raises(Unavailable):
        await writer.flush()
    assert writer.status()["buffered"] == 1
    assert not writer.status()["healthy"]
    store.failing = False
    await writer.flush()
    assert source.acked()
    assert writer.status()["healthy"]
    await writer.close()


async def test_a_failing_fetch_is_reported_and_retried(store: ControlledStore, writers: list[BatchWriter]) -> None:
    class BrokenSource(QueueSource):
        def __init__(self) -> None:
            super().__init__()
            self.failures_left = 2

        async def fetch(self, batch: int, timeout_s: float) -> list[FakeEntry]:
            if self.failures_left:
                self.failures_left -= 1
                raise Unavailable("ledger unreachable", reason="LEDGER_UNAVAILABLE")
            return await super().fetch(batch, timeout_s)

    broken = BrokenSource()
    writer = await start(writers, BatchWriter(broken, store, flush_rows=1, flush_interval_s=3600, max_backoff_s=0.01))
    broken.put_turn(turn(1))
    await wait_for(broken.acked, what="acked after the source recovered")
    status = writer.status()
    assert status["failures"] == 2
    assert status["last_error"].startswith("LEDGER_UNAVAILABLE")
    assert status["healthy"]


def test_rejects_nonsense_settings(source: QueueSource, store: ControlledStore) -> None:
    with pytest.raises(ValueError):
        BatchWriter(source, store, flush_rows=0)
    with pytest.raises(ValueError):
        BatchWriter(source, store, flush_interval_s=0)


async def test_ledger_side_failures_are_retried_without_calling_the_store_unhealthy(
    store: ControlledStore, writers: list[BatchWriter]
) -> None:
    # A NATS outage fails the fetch and the deleted-session check; the store itself is fine, and the engine
    # must not refuse turns as if it were not (it watches NATS on its own).
    class BrokenSource(QueueSource):
        failing = True

        async def fetch(self, batch: int, timeout_s: float) -> list[FakeEntry]:
            if self.failing:
                raise Unavailable("ledger unreachable", reason="LEDGER_UNAVAILABLE")
            return await super().fetch(batch, timeout_s)

    registry_up = False

    async def session_exists(tenant: str, session: str, incarnation: str) -> bool:
        if not registry_up:
            raise Unavailable("session storage is not reachable", reason="STORAGE_UNAVAILABLE")
        return True

    source = BrokenSource()
    writer = await start(
        writers,
        BatchWriter(
            source, store, flush_rows=1, flush_interval_s=3600, max_backoff_s=0.01, session_exists=session_exists
        ),
    )
    source.put_turn(turn(1))
    await wait_for(lambda: writer.status()["failures"] >= 2, what="fetches failed")
    assert writer.status()["healthy"]
    source.failing = False
    await wait_for(lambda: writer.status()["last_error"].startswith("STORAGE_UNAVAILABLE"), what="check failed")
    assert writer.status()["healthy"]
    assert writer.status()["buffered"] == 1
    registry_up = True
    await wait_for(source.acked, what="written once the registry is back")
    assert writer.status()["healthy"]
