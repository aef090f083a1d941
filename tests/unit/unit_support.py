"""Shared helpers of the unit tests: condition waiting, fakes of the bus and probes of the ledger (no sockets,
no processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from salon.actors.events import TurnEvent
from salon.actors.turn import LocalInFlight, Turn
from salon.actors.wire import event_from_proto, event_to_proto
from salon.storage import (
    LoadedSession,
    ProgressRecord,
    SessionLog,
    SnapshotRecord,
    TurnEnvelope,
    TurnRecord,
    Unavailable,
)
from salon.storage.inmemory import InMemoryJournal
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import session_pb2, turn_pb2

DEFAULT_TIMEOUT_S = 5.0


async def wait_for(predicate: Callable[[], bool], limit_s: float = DEFAULT_TIMEOUT_S, what: str = "") -> None:
    """Poll ``predicate`` every 5 ms until it is true; fail the test if ``limit_s`` passes first."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {limit_s} s: {what or predicate}")
        await asyncio.sleep(0.005)  # wait-ok: polls a condition with a deadline


def kind(event: turn_pb2.TurnEvent) -> str:
    """The event's kind (accepted, delta, usage, completed, error, cancelled)."""
    return str(event.WhichOneof("kind"))


def terminal(event: turn_pb2.TurnEvent) -> bool:
    """Whether the event ends its turn."""
    return kind(event) in {"completed", "error", "cancelled"}


def local(
    turn: Turn,
    sink: Callable[[turn_pb2.TurnEvent], Awaitable[None]],
    on_done: Callable[[], Awaitable[None]] | None = None,
) -> LocalInFlight:
    """``turn`` in flight, to hand a session directly: its events reach ``sink`` in the API's form, converted
    as the host converts them before publishing."""

    async def emit(event: TurnEvent) -> None:
        await sink(event_to_proto(event))

    return LocalInFlight(turn, emit, on_done)


def from_protos(events: Sequence[turn_pb2.TurnEvent]) -> list[TurnEvent]:
    """Events an earlier attempt sent, as the host hands them to a session (read back from the bus)."""
    return [event_from_proto(e) for e in events]


class EventLog:
    """An event sink that keeps every event in arrival order."""

    def __init__(self) -> None:
        self.events: list[turn_pb2.TurnEvent] = []

    async def __call__(self, event: turn_pb2.TurnEvent) -> None:
        self.events.append(event)

    def of(self, turn_id: str) -> list[turn_pb2.TurnEvent]:
        """The events of one turn, in arrival order."""
        return [e for e in self.events if e.turn_id == turn_id]

    def finished(self, turn_id: str) -> bool:
        """Whether ``turn_id`` has had its terminal event."""
        return any(terminal(e) for e in self.of(turn_id))

    def text(self, turn_id: str) -> str:
        """The concatenated deltas of one turn."""
        return "".join(e.delta.text for e in self.of(turn_id) if kind(e) == "delta")


class FakeSender:
    """The host's event sender: records (tenant, event), and ``kind:turn`` in ``timeline``.

    ``sent`` reads back what the events stream still holds for a turn: ``retained`` (events an earlier,
    dead host sent, set by the test) followed by what this sender published, gap-free like the real one.
    """

    def __init__(self, timeline: list[str] | None = None) -> None:
        self.published: list[tuple[str, turn_pb2.TurnEvent]] = []
        self.log = EventLog()
        self.timeline = timeline if timeline is not None else []
        self.retained: dict[tuple[str, str, str], list[turn_pb2.TurnEvent]] = {}
        self.fail_sent = False
        self.sent_calls = 0
        self.flushed: list[str] = []
        self.closed = False

    async def publish(self, tenant_id: str, event: turn_pb2.TurnEvent) -> None:
        self.published.append((tenant_id, event))
        self.timeline.append(f"{kind(event)}:{event.turn_id}")
        await self.log(event)

    def join(self, tenant_id: str, session_id: str, turn_id: str, seq: int, text: str) -> bool:
        return False  # every piece is an event of its own: the tests count them

    async def flush(self, tenant_id: str, session_id: str, turn_id: str) -> None:
        self.flushed.append(turn_id)

    async def close(self) -> None:
        self.closed = True

    async def sent(self, tenant_id: str, session_id: str, turn_id: str) -> list[turn_pb2.TurnEvent]:
        self.sent_calls += 1
        if self.fail_sent:
            raise Unavailable("the event bus is not reachable", reason="NATS_UNAVAILABLE")
        held = [*self.retained.get((tenant_id, session_id, turn_id), [])]
        held += [e for t, e in self.published if (t, e.session_id, e.turn_id) == (tenant_id, session_id, turn_id)]
        events: list[turn_pb2.TurnEvent] = []
        for event in held:
            if event.seq == len(events) + 1:
                events.append(event)
        return events


@dataclass(frozen=True, slots=True)
class FakeMetadata:
    """The part of a JetStream message's metadata the host reads."""

    num_delivered: int = 1


class FakeMsg:
    """A bus message whose ack/in_progress/term calls are recorded (acks also as ``ack:turn`` in ``timeline``)."""

    def __init__(
        self,
        data: bytes,
        headers: dict[str, str] | None,
        timeline: list[str] | None = None,
        *,
        num_delivered: int = 1,
    ) -> None:
        self.data = data
        self.headers = headers
        self.calls: list[str] = []
        self.timeline = timeline if timeline is not None else []
        self.metadata = FakeMetadata(num_delivered)

    def redelivered(self, num_delivered: int = 2) -> FakeMsg:
        """The same message as the bus delivers it again (after its ack wait ran out)."""
        return FakeMsg(self.data, self.headers, self.timeline, num_delivered=num_delivered)

    async def ack(self) -> None:
        self.calls.append("ack")
        self.timeline.append(f"ack:{(self.headers or {}).get('Salon-Turn-Id', '')}")

    async def in_progress(self) -> None:
        self.calls.append("in_progress")

    async def term(self) -> None:
        self.calls.append("term")

    async def nak(self, delay: float | None = None) -> None:
        self.calls.append("nak")

    @property
    def acked(self) -> bool:
        return "ack" in self.calls


class FakePuller:
    """One shard's puller: hands out the messages the test puts in."""

    def __init__(self, shard: int = 0) -> None:
        self.shard = shard
        self._queue: asyncio.Queue[FakeMsg] = asyncio.Queue()
        self.closed = False

    def put(self, msg: FakeMsg) -> None:
        self._queue.put_nowait(msg)

    async def fetch(self, batch: int, timeout_s: float) -> list[FakeMsg]:
        try:
            first = await asyncio.wait_for(self._queue.get(), timeout=timeout_s)
        except TimeoutError:
            return []
        msgs = [first]
        while len(msgs) < batch and not self._queue.empty():
            msgs.append(self._queue.get_nowait())
        return msgs

    async def close(self) -> None:
        self.closed = True


def make_session(session_id: str, create_time_s: int = 1_700_000_000, **fields: object) -> session_pb2.Session:
    """A session definition as CreateSession stores it."""
    return session_pb2.Session(
        session_id=session_id,
        create_time=Timestamp(seconds=create_time_s),
        **fields,  # type: ignore[arg-type]
    )


def incarnation_of(session: session_pb2.Session) -> str:
    """The incarnation header value the gateway puts on turns of ``session``."""
    return str(session.create_time.ToNanoseconds())


def turn_msg(
    tenant_id: str,
    session_id: str,
    turn_id: str,
    text: str,
    incarnation: str = "",
    *,
    timeline: list[str] | None = None,
    num_delivered: int = 1,
) -> FakeMsg:
    """A turn message as the gateway publishes it (``num_delivered`` > 1: a redelivery)."""
    envelope = TurnEnvelope(
        tenant_id=tenant_id,
        turn_id=turn_id,
        request=cs_pb2.SendTurnRequest(session_id=session_id, text=text),
        incarnation=incarnation,
    )
    return FakeMsg(envelope.request.SerializeToString(), envelope.headers(), timeline, num_delivered=num_delivered)


def prior_events(session_id: str, turn_id: str, deltas: list[str]) -> list[turn_pb2.TurnEvent]:
    """What a host that died mid-turn had sent: ``accepted`` (seq 1) and ``deltas`` (seq 2, 3 …)."""
    events = [turn_pb2.TurnEvent(session_id=session_id, turn_id=turn_id, seq=1, accepted=turn_pb2.TurnAccepted())]
    for i, text in enumerate(deltas, start=2):
        events.append(
            turn_pb2.TurnEvent(session_id=session_id, turn_id=turn_id, seq=i, delta=turn_pb2.TokenDelta(text=text))
        )
    return events


class ProbedLog:
    """A :class:`SessionLog` wrapping another, to watch and steer the actor's use of the ledger.

    Counts append attempts; with ``gate`` set, an append waits for it before reaching the ledger; a record
    that made it into the ledger is noted as ``record:turn`` in ``timeline``; ``fail_snapshots`` makes
    snapshot saves raise.
    """

    def __init__(self, inner: SessionLog, timeline: list[str] | None = None) -> None:
        self.inner = inner
        self.timeline = timeline if timeline is not None else []
        self.gate: asyncio.Event | None = None
        self.attempts = 0
        self.appended: list[TurnRecord] = []
        self.progress: list[ProgressRecord] = []
        self.snapshots: list[SnapshotRecord] = []
        self.fail_snapshots = False
        self.fail_progress = False

    async def append_turn(self, record: TurnRecord) -> TurnRecord:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        stored = await self.inner.append_turn(record)
        self.appended.append(stored)
        self.timeline.append(f"record:{record.turn_id}")
        return stored

    async def append_progress(self, record: ProgressRecord) -> ProgressRecord:
        if self.fail_progress:
            raise Unavailable("the ledger is not reachable", reason="LEDGER_UNAVAILABLE")
        stored = await self.inner.append_progress(record)
        self.progress.append(stored)
        self.timeline.append(f"progress:{record.turn_id}")
        return stored

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        if self.fail_snapshots:
            raise Unavailable("the ledger is not reachable", reason="LEDGER_UNAVAILABLE")
        await self.inner.save_snapshot(snapshot)
        self.snapshots.append(snapshot)

    async def read_turn(self, seq: int) -> TurnRecord | None:
        return await self.inner.read_turn(seq)


class ProbedJournal(InMemoryJournal):
    """The in-memory journal handing out :class:`ProbedLog` handles (kept in ``logs``, newest last)."""

    def __init__(self, timeline: list[str] | None = None) -> None:
        super().__init__()
        self.timeline = timeline if timeline is not None else []
        self.logs: list[ProbedLog] = []

    async def open(
        self, tenant_id: str, session_id: str, incarnation: str, holder: str
    ) -> tuple[LoadedSession, SessionLog]:
        loaded, log = await super().open(tenant_id, session_id, incarnation, holder)
        probe = ProbedLog(log, self.timeline)
        self.logs.append(probe)
        return loaded, probe

    def records(self, tenant_id: str, session_id: str) -> list[TurnRecord]:
        """The session's turn records in ledger order (activation markers and progress left out)."""
        return [e for e in self.turns.get((tenant_id, session_id), []) if isinstance(e, TurnRecord)]
