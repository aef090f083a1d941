"""Turn events on the events stream: their packing, reading them back in order, and the publisher that stores
each turn's events in order, several to a message, retrying a message until the stream has it."""

from __future__ import annotations

import asyncio
from typing import Any

import nats.errors
import nats.js.errors
import pytest
from unit_support import wait_for

from salon.storage import Names, Unavailable
from salon.storage.bus import H_MSG_ID
from salon.storage.jetstream.events import (
    H_EVENTS,
    MAX_JOINED_CHARS,
    EventPublisher,
    in_order,
    pack_events,
    unpack_events,
)
from salon.v1 import turn_pb2

NAMES = Names("t")


def delta(seq: int, text: str = "x", turn_id: str = "u1") -> turn_pb2.TurnEvent:
    return turn_pb2.TurnEvent(session_id="s1", turn_id=turn_id, seq=seq, delta=turn_pb2.TokenDelta(text=text))


def accepted(turn_id: str = "u1") -> turn_pb2.TurnEvent:
    return turn_pb2.TurnEvent(session_id="s1", turn_id=turn_id, seq=1, accepted=turn_pb2.TurnAccepted())


def completed(seq: int, turn_id: str = "u1") -> turn_pb2.TurnEvent:
    return turn_pb2.TurnEvent(session_id="s1", turn_id=turn_id, seq=seq, completed=turn_pb2.TurnCompleted())


def test_events_survive_packing_in_order() -> None:
    events = [accepted(), *(delta(i, "é" * (i * 40)) for i in range(2, 9)), completed(9)]
    payload = pack_events(e.SerializeToString() for e in events)
    assert unpack_events(payload, {H_EVENTS: "1-9"}) == events


def test_a_message_without_the_header_is_one_event() -> None:
    assert unpack_events(delta(3).SerializeToString(), None) == [delta(3)]


@pytest.mark.parametrize("cut", [1, 2, 7])
def test_a_truncated_message_is_refused(cut: int) -> None:
    payload = pack_events([delta(2, "hello").SerializeToString()])
    with pytest.raises(ValueError):
        unpack_events(payload[:-cut], {H_EVENTS: "2-2"})


def test_read_back_in_order_from_one_without_gaps_or_repeats() -> None:
    assert [e.seq for e in in_order([delta(2), accepted(), delta(2, "other"), delta(3), delta(5)])] == [1, 2, 3]
    assert in_order([delta(2, "first"), accepted(), delta(2, "second")])[1].delta.text == "first"
    assert in_order([delta(2), delta(3)]) == []  # no first event: nothing is known to the client


class FakeJetStream:
    """Records stored messages; ``gate`` holds each store until released; ``failures`` fail the next stores."""

    def __init__(self) -> None:
        self.stored: list[tuple[str, dict[str, str], list[turn_pb2.TurnEvent]]] = []
        self.attempts: list[str] = []
        self.failures = 0
        self.gate: asyncio.Event | None = None

    async def publish(self, subject: str, payload: bytes, **kwargs: Any) -> None:
        headers = kwargs["headers"]
        self.attempts.append(headers[H_MSG_ID])
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise nats.errors.TimeoutError
        self.stored.append((subject, headers, unpack_events(payload, headers)))

    async def get_last_msg(self, stream: str, subject: str, direct: bool = False) -> Any:
        raise nats.js.errors.NotFoundError

    def events(self) -> list[turn_pb2.TurnEvent]:
        return [e for _, _, events in self.stored for e in events]


class FakeNats:
    def __init__(self, js: FakeJetStream) -> None:
        self._js = js

    def jetstream(self, **kwargs: Any) -> FakeJetStream:
        return self._js


def publisher(js: FakeJetStream, **kwargs: Any) -> EventPublisher:
    return EventPublisher(FakeNats(js), NAMES, **kwargs)  # type: ignore[arg-type]


async def test_a_turns_events_are_stored_in_order_several_to_a_message_while_one_is_in_flight() -> None:
    js = FakeJetStream()
    js.gate = asyncio.Event()
    events = publisher(js)
    await events.publish("acme", accepted())
    await events.publish("acme", delta(2))
    await wait_for(lambda: len(js.attempts) == 1, what="the first message on its way")
    for seq in range(3, 12):
        await events.publish("acme", delta(seq))
    js.gate.set()
    await events.flush("acme", "s1", "u1")
    assert [e.seq for e in js.events()] == list(range(1, 12))
    # accepted waited for the first token; the rest waited for that message to be stored.
    assert [h[H_EVENTS] for _, h, _ in js.stored] == ["1-2", "3-11"]
    assert {s for s, _, _ in js.stored} == {NAMES.event_subject("acme", "s1", "u1")}


async def test_pieces_join_the_delta_waiting_for_its_store_never_one_in_a_message_already() -> None:
    js = FakeJetStream()
    js.gate = asyncio.Event()
    events = publisher(js)
    await events.publish("acme", accepted())
    await events.publish("acme", delta(2, "a "))
    await wait_for(lambda: len(js.attempts) == 1, what="the first message on its way")
    assert not events.join("acme", "s1", "u1", 2, "b "), "delta 2 is in the message being stored"
    await events.publish("acme", delta(3, "b "))
    assert events.join("acme", "s1", "u1", 3, "c ")
    assert events.join("acme", "s1", "u1", 3, "d ")
    assert not events.join("acme", "s1", "u1", 2, "e "), "only the last event queued grows"
    assert not events.join("acme", "s1", "other", 3, "e "), "another turn's"
    await events.publish("acme", completed(4))
    assert not events.join("acme", "s1", "u1", 3, "e "), "nothing follows the end"
    js.gate.set()
    await events.flush("acme", "s1", "u1")
    assert [(e.seq, e.delta.text) for e in js.events() if e.HasField("delta")] == [(2, "a "), (3, "b c d ")]
    assert [h[H_EVENTS] for _, h, _ in js.stored] == ["1-2", "3-4"]
    assert not events.join("acme", "s1", "u1", 3, "e "), "a stored turn takes nothing more"


async def test_a_joined_delta_stops_growing_at_its_limit() -> None:
    js = FakeJetStream()
    js.gate = asyncio.Event()
    events = publisher(js)
    await events.publish("acme", delta(1, "x"))
    await wait_for(lambda: len(js.attempts) == 1, what="the first message on its way")
    await events.publish("acme", delta(2, "y" * (MAX_JOINED_CHARS - 10)))
    assert events.join("acme", "s1", "u1", 2, "z" * 10)
    assert not events.join("acme", "s1", "u1", 2, "z")
    js.gate.set()
    await events.flush("acme", "s1", "u1")
    assert len(js.events()[-1].delta.text) == MAX_JOINED_CHARS


async def test_a_lone_accepted_is_stored_after_a_short_wait() -> None:
    js = FakeJetStream()
    events = publisher(js)
    await events.publish("acme", accepted())
    await wait_for(lambda: len(js.stored) == 1, what="accepted stored without anything behind it")
    assert [h[H_EVENTS] for _, h, _ in js.stored] == ["1-1"]


async def test_a_message_that_fails_is_retried_under_the_same_id_until_stored() -> None:
    js = FakeJetStream()
    js.failures = 3
    events = publisher(js)
    await events.publish("acme", accepted())
    await events.publish("acme", completed(2))
    await events.flush("acme", "s1", "u1")
    assert [e.seq for e in js.events()] == [1, 2]
    subject = NAMES.event_subject("acme", "s1", "u1")
    assert len(set(js.attempts[:4])) == 1 and js.attempts[0].startswith(f"{subject}:1:")


async def test_turns_are_stored_independently() -> None:
    js = FakeJetStream()
    events = publisher(js)
    for turn in ("a", "b"):
        await events.publish("acme", accepted(turn))
    await events.publish("acme", completed(2, "b"))
    await events.flush("acme", "s1", "b")
    await events.flush("acme", "s1", "a")
    by_turn = {t: [e.seq for e in js.events() if e.turn_id == t] for t in ("a", "b")}
    assert by_turn == {"a": [1], "b": [1, 2]}


async def test_a_linger_packs_deltas_but_never_holds_the_first_delta_or_the_end() -> None:
    js = FakeJetStream()
    events = publisher(js, linger_s=60.0)
    await events.publish("acme", accepted())
    await events.publish("acme", delta(2))
    await wait_for(lambda: len(js.stored) == 1, what="accepted and the first delta stored at once")
    for seq in range(3, 6):
        await events.publish("acme", delta(seq))
    await asyncio.sleep(0.05)  # wait-ok: shows the deltas are held back (the linger is a minute)
    assert len(js.stored) == 1
    await events.publish("acme", completed(6))
    await events.flush("acme", "s1", "u1")
    assert [h[H_EVENTS] for _, h, _ in js.stored] == ["1-2", "3-6"]


async def test_close_gives_up_after_its_grace_and_flush_then_refuses_to_vouch() -> None:
    js = FakeJetStream()
    js.failures = 10**9
    events = publisher(js)
    await events.publish("acme", accepted())
    await events.close(grace_s=0.05)
    with pytest.raises(Unavailable):
        await events.flush("acme", "s1", "u1")
    with pytest.raises(Unavailable):
        await events.publish("acme", delta(2))


async def test_nothing_sent_is_one_lookup() -> None:
    assert await publisher(FakeJetStream()).sent("acme", "s1", "u1") == []
