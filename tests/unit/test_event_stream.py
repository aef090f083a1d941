"""A turn's event stream ends with a clear error, instead of hanging or skipping, when its NATS connection
is lost or some of its events are gone (storage.bus.EventStream, on a scripted subscription)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import nats.errors
import pytest

from salon.storage.bus import EventsLost
from salon.storage.errors import Unavailable
from salon.storage.jetstream.bus import EventStream
from salon.v1 import turn_pb2


class Msg:
    """A stored message of one event (no ``Salon-Events`` header: a single serialized event)."""

    def __init__(self, seq: int, *, last: bool = False) -> None:
        event = turn_pb2.TurnEvent(seq=seq, turn_id="t")
        if last:
            event.completed.SetInParent()
        self.data = event.SerializeToString()
        self.headers: dict[str, str] | None = None
        self.metadata = SimpleNamespace(sequence=SimpleNamespace(stream=seq))


class Subscription:
    """Delivers the given sequence numbers, then nothing (a wait that times out)."""

    def __init__(self, *seqs: int, last: int = 0) -> None:
        self.queue: asyncio.Queue[Msg] = asyncio.Queue()
        for seq in seqs:
            self.queue.put_nowait(Msg(seq, last=seq == last))
        self.unsubscribed = False

    async def next_msg(self, timeout: float) -> Msg:  # noqa: ASYNC109 - nats-py's signature
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            raise nats.errors.TimeoutError from None

    async def unsubscribe(self) -> None:
        self.unsubscribed = True


class Connection:
    def __init__(self) -> None:
        self.is_connected = True
        self.stats = {"reconnects": 0}


async def _collect(stream: EventStream, into: list[int], timeout_s: float = 30.0) -> None:
    async for event in stream.iterate(timeout_s):
        into.append(event.seq)


async def test_a_gap_in_the_sequence_ends_the_stream_with_events_lost() -> None:
    sub = Subscription(1, 2, 2, 4)
    seen: list[int] = []
    with pytest.raises(EventsLost) as info:
        await _collect(EventStream(Any, sub, 0), seen)  # type: ignore[arg-type]
    assert seen == [1, 2]
    assert info.value.reason == "EVENTS_LOST" and info.value.retry_after_s
    assert sub.unsubscribed


async def test_a_resumed_stream_starting_later_than_asked_is_a_gap() -> None:
    with pytest.raises(EventsLost):
        await _collect(EventStream(Any, Subscription(7, 8), 5), [])  # type: ignore[arg-type]
    connection = Connection()
    events = EventStream(Any, Subscription(3, 6, 7), 5, connection=connection).iterate(30)  # type: ignore[arg-type]
    assert [(await anext(events)).seq for _ in range(2)] == [6, 7]
    connection.is_connected = False  # the connection drops after the events it had
    with pytest.raises(Unavailable):
        await anext(events)


async def test_a_lost_connection_ends_a_waiting_stream_with_nats_unavailable() -> None:
    connection = Connection()
    events = EventStream(Any, Subscription(1), 0, connection=connection).iterate(30)  # type: ignore[arg-type]
    assert (await anext(events)).seq == 1
    connection.stats["reconnects"] += 1  # reconnected meanwhile: the subscription did not survive
    with pytest.raises(Unavailable) as info:
        await anext(events)
    assert info.value.reason == "NATS_UNAVAILABLE" and info.value.retry_after_s


class Republished(Msg):
    """A republished copy: no consumer metadata, its stream sequence in a header."""

    def __init__(self, seq: int, *, last: bool = False) -> None:
        super().__init__(seq, last=last)
        self.headers = {"Nats-Sequence": str(100 + seq)}


class Live(Subscription):
    def __init__(self, *items: int | None, last: int = 0) -> None:
        super().__init__()
        for item in items:
            self.queue.put_nowait(None if item is None else Republished(item, last=item == last))  # type: ignore[arg-type]


async def _live(live: Live, stored: Subscription, into: list[int]) -> list[str]:
    """Read a live stream that catches up from ``stored``; which subscriptions it used."""
    used = ["live"]

    async def catch_up() -> Subscription:
        used.append("stored")
        return stored

    stream = EventStream(Any, live, 0, catch_up=catch_up)  # type: ignore[arg-type]
    async for event in stream.iterate(30):
        into.append(event.seq)
        if not stream.live:
            assert stream.stream_seq == event.seq  # from the consumer's metadata
        else:
            assert stream.stream_seq == 100 + event.seq  # from the republished header
    return used


async def test_a_live_stream_reads_republished_events_without_a_consumer() -> None:
    seen: list[int] = []
    live = Live(1, 2, 3, last=3)
    assert await _live(live, Subscription(), seen) == ["live"]
    assert seen == [1, 2, 3] and live.unsubscribed


async def test_a_live_stream_that_started_late_or_missed_one_reads_on_from_the_stored_events() -> None:
    seen: list[int] = []
    live = Live(1, 3)  # 2 was lost on the way
    assert await _live(live, Subscription(1, 2, 3, 4, last=4), seen) == ["live", "stored"]
    assert seen == [1, 2, 3, 4] and live.unsubscribed
    seen = []
    assert await _live(Live(4, 5, last=5), Subscription(1, 2, 3, 4, 5, last=5), seen) == ["live", "stored"]
    assert seen == [1, 2, 3, 4, 5]


async def test_a_live_stream_that_overflowed_reads_on_from_the_stored_events() -> None:
    seen: list[int] = []
    assert await _live(Live(1, None), Subscription(1, 2, last=2), seen) == ["live", "stored"]
    assert seen == [1, 2]


async def test_a_live_subscription_queues_up_to_its_bound_then_says_it_overflowed() -> None:
    from salon.storage.jetstream.events import LiveSubscription

    live = LiveSubscription(buffer=2)
    with pytest.raises(nats.errors.TimeoutError):
        await live.next_msg(timeout=0.01)
    for seq in (1, 2, 3, 4):
        await live._arrived(Msg(seq))
    assert [(await live.next_msg(timeout=1)).data for _ in range(2)] == [Msg(1).data, Msg(2).data]
    assert await live.next_msg(timeout=1) is None and live.overflowed
    await live.unsubscribe()  # never subscribed: nothing to do
