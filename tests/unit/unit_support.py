"""Shared helpers of the unit tests: condition waiting and fakes of the bus (no sockets, no processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import session_pb2, turn_pb2
from storage.bus import TurnEnvelope

DEFAULT_TIMEOUT_S = 5.0


async def wait_for(predicate: Callable[[], bool], limit_s: float = DEFAULT_TIMEOUT_S, what: str = "") -> None:
    """Poll ``predicate`` every 5 ms until it is true; fail the test if ``limit_s`` passes first."""
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {limit_s} s: {what or predicate}")
        await asyncio.sleep(0.005)


def kind(event: turn_pb2.TurnEvent) -> str:
    """The event's kind (accepted, delta, usage, completed, error, cancelled)."""
    return str(event.WhichOneof("kind"))


def terminal(event: turn_pb2.TurnEvent) -> bool:
    """Whether the event ends its turn."""
    return kind(event) in {"completed", "error", "cancelled"}


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
    """The host's event sender: records (tenant, event), and ``kind:turn`` in ``timeline``."""

    def __init__(self, timeline: list[str] | None = None) -> None:
        self.published: list[tuple[str, turn_pb2.TurnEvent]] = []
        self.log = EventLog()
        self.timeline = timeline if timeline is not None else []

    async def publish(self, tenant_id: str, event: turn_pb2.TurnEvent) -> None:
        self.published.append((tenant_id, event))
        self.timeline.append(f"{kind(event)}:{event.turn_id}")
        await self.log(event)


class FakeMsg:
    """A bus message whose ack/in_progress/term calls are recorded (acks also as ``ack:turn`` in ``timeline``)."""

    def __init__(self, data: bytes, headers: dict[str, str] | None, timeline: list[str] | None = None) -> None:
        self.data = data
        self.headers = headers
        self.calls: list[str] = []
        self.timeline = timeline if timeline is not None else []

    async def ack(self) -> None:
        self.calls.append("ack")
        self.timeline.append(f"ack:{(self.headers or {}).get('Salon-Turn-Id', '')}")

    async def in_progress(self) -> None:
        self.calls.append("in_progress")

    async def term(self) -> None:
        self.calls.append("term")

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
) -> FakeMsg:
    """A turn message as the gateway publishes it."""
    envelope = TurnEnvelope(
        tenant_id=tenant_id,
        turn_id=turn_id,
        request=cs_pb2.SendTurnRequest(session_id=session_id, text=text),
        incarnation=incarnation,
    )
    return FakeMsg(envelope.request.SerializeToString(), envelope.headers(), timeline)
