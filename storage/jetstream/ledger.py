"""The ledger on JetStream: every session's turn outcomes, written before the turn is acknowledged.

Each session has one subject for its turn records. Each activation of the session first appends an
activation marker, and every append names the sequence it expects to follow
(``Nats-Expected-Last-Subject-Sequence``): a host that was presumed dead, whose session has since been
activated elsewhere, finds its next append refused and stops (fencing). Snapshots (caches of the records
up to a turn) go to a second subject; activation loads the latest snapshot and the records after it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js.client import JetStreamContext

from salon import otel
from salon.storage.errors import InvalidArgument, Unavailable
from salon.storage.jetstream.read import read_subject
from salon.storage.ledger import Fenced, LoadedSession, SessionLog, unfinished
from salon.storage.reasons import Reason
from salon.storage.records import (
    KIND_ACTIVATION,
    KIND_PROGRESS,
    KIND_SNAPSHOT,
    KIND_TURN,
    RECORD_HEADER,
    ProgressRecord,
    SnapshotRecord,
    ToolCallEntry,
    TurnRecord,
)
from salon.storage.subjects import Names

log = logging.getLogger(__name__)

_WRONG_LAST_SEQUENCE = 10071
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


@dataclass(frozen=True, slots=True)
class LedgerSettings:
    """Ledger stream parameters (from the engine config)."""

    retention_s: float = 30 * 24 * 3600.0
    dedupe_window_s: float = 600.0
    writer_ack_wait_s: float = 60.0
    replicas: int = 1
    """Replicas of the ledger stream (its consumers take the stream's)."""


async def ensure_ledger(js: JetStreamContext, names: Names, settings: LedgerSettings) -> None:
    """Create or update the ledger stream and its two durable consumers: the batch writer's and the long-term
    memory indexer's. Idempotent."""
    config = api.StreamConfig(
        name=names.ledger_stream,
        subjects=[names.ledger_wildcard],
        retention=api.RetentionPolicy.LIMITS,
        storage=api.StorageType.FILE,
        max_age=settings.retention_s,
        duplicate_window=settings.dedupe_window_s,
        allow_direct=True,
        num_replicas=settings.replicas,
    )
    try:
        await js.add_stream(config)
    except nats.js.errors.BadRequestError:
        await js.update_stream(config)
    for durable, subjects in (
        (names.writer_consumer, names.ledger_wildcard),
        (names.memory_consumer, names.ledger_turns_wildcard),
    ):
        await js.add_consumer(
            names.ledger_stream,
            api.ConsumerConfig(
                durable_name=durable,
                filter_subject=subjects,
                ack_policy=api.AckPolicy.EXPLICIT,
                deliver_policy=api.DeliverPolicy.ALL,
                ack_wait=settings.writer_ack_wait_s,
                max_ack_pending=20_000,
            ),
        )


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable("the ledger is not reachable", reason="LEDGER_UNAVAILABLE", retry_after_s=1.0)


class _NatsSessionLog:
    def __init__(self, journal: NatsJournal, tenant_id: str, session_id: str, position: int) -> None:
        self._journal = journal
        self._js = journal.js
        self._names = journal.names
        self._tenant_id = tenant_id
        self._session_id = session_id
        self._position = position

    async def append_turn(self, record: TurnRecord) -> TurnRecord:
        payload = record.to_json()
        if len(payload) > self._journal.max_record_bytes:
            record = fit_record(record, self._journal.max_record_bytes)
            payload = record.to_json()
        seq = await _append(
            self._js,
            self._names.ledger_turns(self._tenant_id, self._session_id),
            payload,
            kind=KIND_TURN,
            msg_id=record.key,
            expected=self._position,
        )
        self._position = seq
        return record.with_seq(seq)

    async def append_progress(self, record: ProgressRecord) -> ProgressRecord:
        payload = record.to_json()
        if len(payload) > self._journal.max_record_bytes:
            # The server would refuse it every time: the turn cannot wait durably on this step.
            raise InvalidArgument("a step of the turn is too large to record", reason=Reason.PROGRESS_TOO_LARGE)
        seq = await _append(
            self._js,
            self._names.ledger_turns(self._tenant_id, self._session_id),
            payload,
            kind=KIND_PROGRESS,
            msg_id=record.key,
            expected=self._position,
        )
        self._position = seq
        return record.with_seq(seq)

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        await _append(
            self._js,
            self._names.ledger_snapshots(self._tenant_id, self._session_id),
            snapshot.to_json(),
            kind=KIND_SNAPSHOT,
            msg_id=snapshot.key,
            expected=None,
        )

    async def read_turn(self, seq: int) -> TurnRecord | None:
        record = await self._journal.read_turn(seq)
        # Sequences are the whole stream's: one of another session's entries is not this session's turn.
        if record is None or (record.tenant_id, record.session_id) != (self._tenant_id, self._session_id):
            return None
        return record


async def _append(
    js: JetStreamContext, subject: str, payload: bytes, *, kind: str, msg_id: str, expected: int | None
) -> int:
    headers = {RECORD_HEADER: kind, "Nats-Msg-Id": msg_id}
    # The appending span's context rides along: the batch write that persists the record links to it.
    otel.inject_current(headers)
    if expected is not None:
        headers[api.Header.EXPECTED_LAST_SUBJECT_SEQUENCE.value] = str(expected)
    try:
        ack = await js.publish(subject, payload, headers=headers)
    except nats.js.errors.APIError as exc:
        if exc.err_code == _WRONG_LAST_SEQUENCE:
            raise Fenced("the session was activated elsewhere", reason="SESSION_FENCED") from None
        raise _unavailable(exc) from exc
    except _NATS_ERRORS as exc:
        raise _unavailable(exc) from exc
    return int(ack.seq)


class NatsJournal:
    """:class:`~salon.storage.ledger.Journal` on the JetStream ledger stream."""

    def __init__(self, js: JetStreamContext, names: Names, *, max_record_bytes: int = 1024 * 1024) -> None:
        self.js = js
        self.names = names
        self.max_record_bytes = max_record_bytes
        """Records are shrunk to fit (the server refuses larger messages; retrying would never help)."""

    async def open(
        self, tenant_id: str, session_id: str, incarnation: str, holder: str
    ) -> tuple[LoadedSession, SessionLog]:
        for _ in range(5):
            loaded, position = await self._load(tenant_id, session_id, incarnation)
            marker = f'{{"holder":"{holder}","at_ns":{time.time_ns()}}}'.encode()
            try:
                position = await _append(
                    self.js,
                    self.names.ledger_turns(tenant_id, session_id),
                    marker,
                    kind=KIND_ACTIVATION,
                    msg_id=f"activation.{holder}.{time.time_ns()}",
                    expected=position,
                )
            except Fenced:
                continue  # another activation raced us between load and marker: load again
            return loaded, _NatsSessionLog(self, tenant_id, session_id, position)
        raise Unavailable("the session could not be activated", reason="ACTIVATION_CONTENDED", retry_after_s=1.0)

    async def peek(self, tenant_id: str, session_id: str, incarnation: str) -> LoadedSession:
        """The session as activation would load it, without taking it over."""
        loaded, _ = await self._load(tenant_id, session_id, incarnation)
        return loaded

    async def turns_after(self, tenant_id: str, session_id: str, incarnation: str, seq: int) -> list[TurnRecord]:
        """The session's turn records after ledger sequence ``seq``, in order."""
        try:
            msgs = await read_subject(
                self.js, self.names.ledger_stream, self.names.ledger_turns(tenant_id, session_id), start_seq=seq + 1
            )
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc
        return _turn_records(msgs, incarnation)

    async def _load(self, tenant_id: str, session_id: str, incarnation: str) -> tuple[LoadedSession, int]:
        stream = self.names.ledger_stream
        try:
            snapshot = await self._latest_snapshot(tenant_id, session_id, incarnation)
            start = snapshot.ledger_seq + 1 if snapshot else 0
            msgs = await read_subject(self.js, stream, self.names.ledger_turns(tenant_id, session_id), start_seq=start)
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc
        turns = _turn_records(msgs, incarnation)
        progress = unfinished(_progress_records(msgs, incarnation), turns)
        # The fencing position is the subject's last sequence; the snapshot's may have aged out since.
        position = msgs[-1].metadata.sequence.stream if msgs else await self._last_seq(tenant_id, session_id)
        return LoadedSession(snapshot, turns, progress), position

    async def _last_seq(self, tenant_id: str, session_id: str) -> int:
        try:
            raw = await self.js.get_last_msg(self.names.ledger_stream, self.names.ledger_turns(tenant_id, session_id))
        except nats.js.errors.NotFoundError:
            return 0
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc
        return int(raw.seq or 0)

    async def read_turn(self, seq: int) -> TurnRecord | None:
        """The turn record at ledger sequence ``seq`` (None if it aged out, or there is none)."""
        if seq <= 0:
            return None  # not a stream sequence: the server would refuse the request
        try:
            raw = await self.js.get_msg(self.names.ledger_stream, seq)
        except nats.js.errors.NotFoundError:
            return None
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc
        if (raw.headers or {}).get(RECORD_HEADER) != KIND_TURN:
            return None
        return TurnRecord.from_json(raw.data or b"{}", ledger_seq=seq)

    async def _latest_snapshot(self, tenant_id: str, session_id: str, incarnation: str) -> SnapshotRecord | None:
        try:
            raw = await self.js.get_last_msg(
                self.names.ledger_stream, self.names.ledger_snapshots(tenant_id, session_id)
            )
        except nats.js.errors.NotFoundError:
            return None
        snapshot = SnapshotRecord.from_json(raw.data or b"{}")
        return snapshot if snapshot.incarnation == incarnation else None

    async def purge(self, tenant_id: str, session_id: str) -> None:
        try:
            await self.js.purge_stream(
                self.names.ledger_stream, subject=self.names.ledger_session(tenant_id, session_id)
            )
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc


TRUNCATION_MARK = "\n[… answer truncated in the transcript: it exceeded the record size limit]"
RESULT_TRUNCATION_MARK = "\n[… tool result truncated in the transcript: the record exceeded its size limit]"
KEPT_RESULT_CHARS = 1024
"""What is kept of each tool result when a record must shrink (the model saw it whole; the record keeps a
preview)."""


def fit_record(record: TurnRecord, max_bytes: int) -> TurnRecord:
    """``record`` within ``max_bytes`` of JSON: first without the per-delta split (a replay then sends the
    answer as one delta), then with its tool results cut to a preview, then with the reply cut and marked.
    Ordinary answers are far below the limit."""
    if len(record.to_json()) <= max_bytes:
        return record
    slim = dataclasses.replace(record, deltas=())
    if len(slim.to_json()) > max_bytes and slim.tool_calls:
        slim = dataclasses.replace(slim, tool_calls=tuple(_cut_result(c) for c in slim.tool_calls))
    overshoot = len(slim.to_json()) - max_bytes
    if overshoot <= 0:
        return slim
    keep = max(len(slim.reply_text) - overshoot - len(TRUNCATION_MARK) * 4, 0)
    return dataclasses.replace(slim, reply_text=slim.reply_text[:keep] + TRUNCATION_MARK)


def _cut_result(call: ToolCallEntry) -> ToolCallEntry:
    if len(call.result) <= KEPT_RESULT_CHARS:
        return call
    return dataclasses.replace(call, result=call.result[:KEPT_RESULT_CHARS] + RESULT_TRUNCATION_MARK)


def _turn_records(msgs: list[Msg], incarnation: str) -> list[TurnRecord]:
    records = (
        TurnRecord.from_json(m.data, ledger_seq=m.metadata.sequence.stream)
        for m in msgs
        if (m.headers or {}).get(RECORD_HEADER) == KIND_TURN
    )
    return [r for r in records if r.incarnation == incarnation]


def _progress_records(msgs: list[Msg], incarnation: str) -> list[ProgressRecord]:
    records = (
        ProgressRecord.from_json(m.data, ledger_seq=m.metadata.sequence.stream)
        for m in msgs
        if (m.headers or {}).get(RECORD_HEADER) == KIND_PROGRESS
    )
    return [r for r in records if r.incarnation == incarnation]


class LedgerReader:
    """A batch writer's source: the ledger through a durable consumer (``durable``, default the transcript
    writer's)."""

    @dataclass(slots=True)
    class Entry:
        """One ledger message."""

        msg: Msg
        data: bytes
        headers: dict[str, str] | None
        seq: int

        async def ack(self) -> None:
            """Acknowledge: written to storage."""
            await self.msg.ack()

    def __init__(self, js: JetStreamContext, names: Names, durable: str = "") -> None:
        self._js = js
        self._names = names
        self._durable = durable or names.writer_consumer
        self._sub: JetStreamContext.PullSubscription | None = None

    async def fetch(self, batch: int, timeout_s: float) -> list[LedgerReader.Entry]:
        """Up to ``batch`` entries, or none after ``timeout_s``."""
        if self._sub is None:
            self._sub = await self._js.pull_subscribe_bind(durable=self._durable, stream=self._names.ledger_stream)
        try:
            msgs = await self._sub.fetch(batch, timeout=timeout_s)
        except (TimeoutError, nats.errors.TimeoutError):
            return []
        return [self.Entry(m, m.data, dict(m.headers or {}), m.metadata.sequence.stream) for m in msgs]

    async def close(self) -> None:
        """Stop reading. Idempotent."""
        sub, self._sub = self._sub, None
        if sub is not None:
            await sub.unsubscribe()
