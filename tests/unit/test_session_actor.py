"""The session actor: turns one at a time, gap-free events, memory, the ledger before the terminal event and
the ack, replay from the ledger, continuation after a dead host, fencing, snapshots and failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from unit_support import EventLog, ProbedJournal, ProbedLog, from_protos, kind, local, prior_events, wait_for

from salon.actors.model import Message, ModelChunk, ModelRequest, TextDelta
from salon.actors.session import SessionActor, SessionKey, SessionSettings, SessionState, Turn
from salon.providers import ScriptedProvider, scripted_reply
from salon.storage import TurnRecord
from salon.v1 import turn_pb2

KEY = SessionKey("acme", "s1")
INCARNATION = "1700000000000000000"


class TimelineLog(EventLog):
    """An event sink that also notes ``kind:turn`` in a shared timeline."""

    def __init__(self, timeline: list[str]) -> None:
        super().__init__()
        self.timeline = timeline

    async def __call__(self, event: turn_pb2.TurnEvent) -> None:
        self.timeline.append(f"{kind(event)}:{event.turn_id}")
        await super().__call__(event)


class RecordingProvider(ScriptedProvider):
    """The scripted provider, keeping every request it was given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.requests.append(request)
        async for chunk in super().stream(request):
            yield chunk


class Rig:
    """Actors on one session of a probed in-memory journal, with one timeline of events, records and acks."""

    def __init__(self, provider: ScriptedProvider, settings: SessionSettings | None = None) -> None:
        self.provider = provider
        self.settings = settings or SessionSettings()
        self.timeline: list[str] = []
        self.journal = ProbedJournal(self.timeline)
        self.sink = TimelineLog(self.timeline)

    async def activate(self, holder: str = "host-a") -> SessionActor:
        """A new activation of the session, as the host makes it: load, take over, restore."""
        loaded, log = await self.journal.open(KEY.tenant_id, KEY.session_id, INCARNATION, holder)
        state = SessionState.restore(loaded, INCARNATION, self.settings.window_max_messages)
        return SessionActor(KEY, self.settings, state, self.provider, log, max_retry_delay_s=0.05)

    @property
    def log(self) -> ProbedLog:
        """The ledger handle of the latest activation."""
        return self.journal.logs[-1]

    def on_done(self, turn_id: str) -> Callable[[], Awaitable[None]]:
        """An on_done callback noting the ack of ``turn_id``."""

        async def done() -> None:
            self.timeline.append(f"ack:{turn_id}")

        return done

    def acks(self, turn_id: str) -> int:
        return self.timeline.count(f"ack:{turn_id}")

    def records(self) -> list[TurnRecord]:
        return self.journal.records(KEY.tenant_id, KEY.session_id)

    async def submit(self, actor: SessionActor, turn_id: str, text: str, sink: EventLog | None = None) -> bool:
        return await actor.submit(local(Turn(turn_id, text), sink or self.sink, self.on_done(turn_id)))

    async def run_turn(self, actor: SessionActor, turn_id: str, text: str, sink: EventLog | None = None) -> None:
        """Submit a turn and wait until it is acknowledged."""
        before = self.acks(turn_id)
        await self.submit(actor, turn_id, text, sink)
        await wait_for(lambda: self.acks(turn_id) > before, what=f"ack of {turn_id}")


def shape(events: list[turn_pb2.TurnEvent]) -> list[tuple[int, str, str]]:
    """Events as (seq, kind, payload) with times and the accepted event's details left out."""
    out = []
    for e in events:
        payload = "" if kind(e) == "accepted" else str(getattr(e, kind(e)))
        out.append((e.seq, kind(e), payload))
    return out


def deltas(events: list[turn_pb2.TurnEvent]) -> list[str]:
    return [e.delta.text for e in events if kind(e) == "delta"]


async def test_a_turn_emits_gap_free_events_in_order_and_is_recorded() -> None:
    rig = Rig(ScriptedProvider(tokens=5))
    actor = await rig.activate()
    try:
        await actor.submit(local(Turn("t1", "hello there world", enqueued_at_ns=123), rig.sink, rig.on_done("t1")))
        await wait_for(lambda: rig.acks("t1") == 1)
    finally:
        await actor.close()
    events = rig.sink.of("t1")
    assert [kind(e) for e in events] == ["accepted"] + ["delta"] * 5 + ["usage", "completed"]
    assert [e.seq for e in events] == list(range(1, 9))
    assert all(e.session_id == "s1" and e.turn_id == "t1" for e in events)
    accepted = events[0].accepted
    assert (accepted.queue_position, accepted.replayed) == (0, False)
    assert deltas(events) == scripted_reply("hello there world", 5)
    assert rig.sink.text("t1") == "hello there world hello there "
    assert events[6].usage.output_tokens == 5
    assert events[6].usage.provider == "scripted"
    assert events[7].completed.stop_reason == turn_pb2.STOP_REASON_END_TURN
    assert rig.provider.calls == 1
    [record] = rig.records()
    assert (record.turn_id, record.turn_index, record.status) == ("t1", 1, "completed")
    assert (record.tenant_id, record.session_id, record.incarnation) == ("acme", "s1", INCARNATION)
    assert (record.user_text, record.reply_text) == ("hello there world", "hello there world hello there ")
    assert record.deltas == tuple(scripted_reply("hello there world", 5))
    assert (record.stop_reason, record.output_tokens, record.provider) == ("end_turn", 5, "scripted")
    assert record.enqueued_at_ns == 123
    # The state points at the record in the ledger.
    [appended] = rig.log.appended
    assert appended.ledger_seq > 0
    assert actor.state.ledger_seq == actor.state.recent["t1"] == appended.ledger_seq


async def test_two_turns_run_one_after_the_other() -> None:
    rig = Rig(ScriptedProvider(tokens=6, token_delay_s=0.001))
    actor = await rig.activate()
    try:
        assert await rig.submit(actor, "t1", "first turn")
        assert await rig.submit(actor, "t2", "second turn")
        assert actor.pending_turns == 2
        assert actor.busy
        await wait_for(lambda: rig.acks("t2") == 1)
    finally:
        await actor.close()
    first, second = rig.sink.of("t1"), rig.sink.of("t2")
    assert first[0].accepted.queue_position == 0
    assert second[0].accepted.queue_position == 1
    for events in (first, second):
        assert [e.seq for e in events] == list(range(1, 10))
        assert [kind(e) for e in events] == ["accepted"] + ["delta"] * 6 + ["usage", "completed"]
    index = {id(e): i for i, e in enumerate(rig.sink.events)}
    first_terminal = index[id(first[-1])]
    assert min(index[id(e)] for e in second if kind(e) == "delta") > first_terminal
    assert rig.sink.text("t1") == "".join(scripted_reply("first turn", 6))
    assert rig.sink.text("t2") == "".join(scripted_reply("second turn", 6))
    assert [e for e in rig.timeline if e.startswith("ack")] == ["ack:t1", "ack:t2"]
    assert [(r.turn_id, r.turn_index) for r in rig.records()] == [("t1", 1), ("t2", 2)]
    assert not actor.busy


async def test_each_turn_is_recorded_before_its_terminal_event_which_comes_before_its_ack() -> None:
    rig = Rig(ScriptedProvider(tokens=3))
    actor = await rig.activate()
    try:
        for turn_id in ["t1", "t2", "t3"]:
            await rig.run_turn(actor, turn_id, f"text of {turn_id}")
    finally:
        await actor.close()
    assert [e for e in rig.timeline if e.startswith(("record", "completed", "ack"))] == [
        "record:t1",
        "completed:t1",
        "ack:t1",
        "record:t2",
        "completed:t2",
        "ack:t2",
        "record:t3",
        "completed:t3",
        "ack:t3",
    ]
    assert [r.turn_index for r in rig.records()] == [1, 2, 3]
    assert rig.records()[-1].reply_text == "text of t3 "


async def test_state_holds_the_conversation() -> None:
    rig = Rig(ScriptedProvider(tokens=2))
    actor = await rig.activate()
    try:
        await rig.run_turn(actor, "t1", "alpha beta")
        await rig.run_turn(actor, "t2", "gamma")
        state = actor.state
        assert state.turn_count == 2
        assert [(m.role, m.text, m.turn_id) for m in state.messages] == [
            ("user", "alpha beta", "t1"),
            ("assistant", "alpha beta ", "t1"),
            ("user", "gamma", "t2"),
            ("assistant", "gamma gamma ", "t2"),
        ]
        assert list(state.recent) == ["t1", "t2"]
        recorded = await rig.log.read_turn(state.recent["t2"])
        assert recorded is not None
        assert (recorded.turn_id, recorded.status) == ("t2", "completed")
    finally:
        await actor.close()


async def test_the_window_is_sent_to_the_provider() -> None:
    provider = RecordingProvider(tokens=1)
    rig = Rig(provider, SessionSettings(system_prompt="Be kind.", window_max_messages=3, max_tokens=77))
    actor = await rig.activate()
    try:
        for i in range(3):
            await rig.run_turn(actor, f"t{i}", f"message{i}")
    finally:
        await actor.close()
    last = provider.requests[-1]
    # The session's instructions, then the engine's canary line (guardrails are on by default).
    assert last.system == f"Be kind.\n\n{last.canary_line}"
    assert "salon-canary-" in last.canary_line
    assert last.max_tokens == 77
    assert last.prefill == ""
    # Room for 2 history messages plus the new one: the last exchange, whole.
    assert [(m.role, m.text) for m in last.messages] == [
        ("user", "message1"),
        ("assistant", "message1 "),
        ("user", "message2"),
    ]
    assert rig.records()[-1].context_turn_ids == ("t1",)


async def test_no_terminal_event_and_no_ack_until_the_record_is_in_the_ledger() -> None:
    rig = Rig(ScriptedProvider(tokens=4))
    actor = await rig.activate()
    gate = asyncio.Event()
    rig.log.gate = gate
    try:
        await rig.submit(actor, "t1", "wait for the ledger")
        await wait_for(lambda: rig.log.attempts == 1, what="the append to start")
        for _ in range(50):  # let anything that would wrongly run ahead of the ledger do so
            await asyncio.sleep(0)  # wait-ok: yields to the event loop once
        assert [kind(e) for e in rig.sink.of("t1")] == ["accepted"] + ["delta"] * 4
        assert rig.acks("t1") == 0
        assert rig.records() == []
        assert actor.state.turn_count == 0
        gate.set()
        await wait_for(lambda: rig.acks("t1") == 1)
    finally:
        await actor.close()
    assert [kind(e) for e in rig.sink.of("t1")][-2:] == ["usage", "completed"]
    order = [e for e in rig.timeline if e.endswith(":t1") and not e.startswith(("accepted", "delta"))]
    assert order == ["record:t1", "usage:t1", "completed:t1", "ack:t1"]


async def test_while_the_ledger_is_down_the_turn_waits_then_is_recorded_once_and_acked() -> None:
    rig = Rig(ScriptedProvider(tokens=3))
    actor = await rig.activate()
    rig.journal.fail_appends = True
    try:
        await rig.submit(actor, "t1", "keep me safe")
        await rig.submit(actor, "t2", "after it")
        await wait_for(lambda: rig.log.attempts >= 3, what="appends retried")
        assert [kind(e) for e in rig.sink.of("t1")] == ["accepted"] + ["delta"] * 3
        assert [kind(e) for e in rig.sink.of("t2")] == ["accepted"]
        assert rig.acks("t1") == rig.acks("t2") == 0
        assert rig.records() == []
        assert rig.provider.calls == 1  # the next turn waits for this one to be recorded
        assert actor.busy
        rig.journal.fail_appends = False
        await wait_for(lambda: rig.acks("t2") == 1)
    finally:
        await actor.close()
    assert rig.acks("t1") == 1
    assert [(r.turn_id, r.turn_index) for r in rig.records()] == [("t1", 1), ("t2", 2)]
    for turn_id in ["t1", "t2"]:
        events = rig.sink.of(turn_id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert [kind(e) for e in events].count("completed") == 1
    assert rig.sink.text("t1") == rig.records()[0].reply_text == "keep me safe "


async def test_close_while_the_ledger_is_down_leaves_the_turn_unacknowledged() -> None:
    rig = Rig(ScriptedProvider(tokens=2))
    actor = await rig.activate()
    rig.journal.fail_appends = True
    await rig.submit(actor, "t1", "unrecorded")
    await wait_for(lambda: rig.log.attempts >= 1)
    await actor.close()
    assert not any(kind(e) in {"completed", "error", "cancelled"} for e in rig.sink.of("t1"))
    assert rig.acks("t1") == 0  # the bus redelivers it to the next activation
    assert rig.records() == []
    assert not actor.busy


async def test_a_fenced_actor_stops_without_terminal_event_or_ack() -> None:
    rig = Rig(ScriptedProvider(tokens=3))
    old = await rig.activate("host-a")
    await rig.run_turn(old, "t1", "before the takeover")
    new = await rig.activate("host-b")  # another host took the session over
    try:
        await rig.submit(old, "t2", "lost race")
        await rig.submit(old, "t3", "queued behind")
        await wait_for(lambda: old.fenced, what="fencing")
        await old.wait_idle()
        assert [kind(e) for e in rig.sink.of("t2")] == ["accepted"] + ["delta"] * 3
        assert [kind(e) for e in rig.sink.of("t3")] == ["accepted"]
        assert rig.acks("t2") == rig.acks("t3") == 0
        assert rig.provider.calls == 2  # t3 never reached the model
        assert [r.turn_id for r in rig.records()] == ["t1"]
        assert old.state.turn_count == 1
        await old.passivate()
        assert rig.journal.snapshots == {}  # a fenced actor leaves no snapshot
        # The new owner has the memory up to the takeover and records the turn.
        assert [m.turn_id for m in new.state.messages] == ["t1", "t1"]
        await rig.run_turn(new, "t2", "lost race", sink=EventLog())
    finally:
        await new.close()
    assert [(r.turn_id, r.turn_index) for r in rig.records()] == [("t1", 1), ("t2", 2)]


async def test_duplicate_of_a_finished_turn_is_replayed_from_its_record_without_the_model() -> None:
    rig = Rig(ScriptedProvider(tokens=4))
    actor = await rig.activate()
    replay = EventLog()
    try:
        await rig.run_turn(actor, "t1", "say it twice")
        assert rig.provider.calls == 1
        await rig.run_turn(actor, "t1", "say it twice", sink=replay)
    finally:
        await actor.close()
    assert rig.provider.calls == 1
    assert rig.acks("t1") == 2
    original, again = rig.sink.of("t1"), replay.of("t1")
    assert again[0].accepted.replayed is True
    assert shape(again) == shape(original)  # same events, same numbers
    assert replay.text("t1") == "".join(scripted_reply("say it twice", 4))
    assert actor.state.turn_count == 1
    assert len(rig.records()) == 1


class JoiningLog(EventLog):
    """A sink whose last delta takes the next pieces until ``stored`` of them went by, as the host's publisher
    does while that delta waits for its store."""

    def __init__(self, stored: int) -> None:
        super().__init__()
        self.stored = stored
        self.joins = 0

    def join(self, seq: int, text: str) -> bool:
        last = self.events[-1] if self.events else None
        if last is None or last.seq != seq or kind(last) != "delta" or self.joins % self.stored == self.stored - 1:
            self.joins += 1
            return False
        self.joins += 1
        last.delta.text += text
        return True


async def test_pieces_joined_on_the_way_are_recorded_joined_and_replayed_under_the_same_numbers() -> None:
    rig = Rig(ScriptedProvider(tokens=12))
    actor = await rig.activate()
    live, replay = JoiningLog(stored=4), EventLog()
    try:
        turn = local(Turn("t1", "one two three"), live, rig.on_done("t1"))
        turn.join = live.join
        await actor.submit(turn)
        await wait_for(lambda: rig.acks("t1") == 1)
        await rig.run_turn(actor, "t1", "one two three", sink=replay)
    finally:
        await actor.close()
    original = live.of("t1")
    assert live.text("t1") == "".join(scripted_reply("one two three", 12))
    assert 1 < len(deltas(original)) < 12, "some pieces joined, some did not"
    assert [e.seq for e in original] == list(range(1, len(original) + 1))
    [record] = rig.records()
    assert record.deltas == tuple(deltas(original))
    assert shape(replay.of("t1")) == shape(original)


async def test_duplicate_of_a_queued_turn_is_not_taken() -> None:
    rig = Rig(ScriptedProvider(tokens=3, token_delay_s=0.001))
    actor = await rig.activate()
    try:
        assert await rig.submit(actor, "t1", "one")
        assert await rig.submit(actor, "t2", "two")
        assert not await rig.submit(actor, "t2", "two")
        assert actor.pending_turns == 2
        await wait_for(lambda: rig.acks("t2") >= 1)
        await actor.wait_idle()
    finally:
        await actor.close()
    assert rig.provider.calls == 2
    assert rig.acks("t2") == 1  # the refused copy's on_done is never called
    assert [e.seq for e in rig.sink.of("t2")] == [1, 2, 3, 4, 5, 6]
    assert actor.state.turn_count == 2


async def test_failure_before_the_first_token_is_retryable() -> None:
    rig = Rig(ScriptedProvider(tokens=4, fail_after=0))
    actor = await rig.activate()
    try:
        await rig.run_turn(actor, "t1", "doomed")
    finally:
        await actor.close()
    events = rig.sink.of("t1")
    assert [kind(e) for e in events] == ["accepted", "error"]
    assert [e.seq for e in events] == [1, 2]
    error = events[-1].error
    assert (error.reason, error.retryable, error.partial) == ("MODEL_UNAVAILABLE", True, False)
    [record] = rig.records()
    assert (record.status, record.retryable, record.reply_text, record.error_reason) == (
        "failed",
        True,
        "",
        "MODEL_UNAVAILABLE",
    )
    # The user's message is remembered; no empty assistant message is.
    assert [(m.role, m.text) for m in actor.state.messages] == [("user", "doomed")]
    assert [e for e in rig.timeline if e.startswith(("record", "error", "ack"))] == ["record:t1", "error:t1", "ack:t1"]


async def test_failure_after_some_tokens_is_partial_and_not_retryable() -> None:
    rig = Rig(ScriptedProvider(tokens=6, fail_after=3))
    actor = await rig.activate()
    try:
        await rig.run_turn(actor, "t1", "one two three four")
    finally:
        await actor.close()
    events = rig.sink.of("t1")
    assert [kind(e) for e in events] == ["accepted", "delta", "delta", "delta", "error"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert rig.sink.text("t1") == "one two three "
    error = events[-1].error
    assert (error.retryable, error.partial) == (False, True)
    [record] = rig.records()
    assert (record.status, record.retryable, record.reply_text) == ("partial", False, "one two three ")
    assert actor.state.messages[-1] == Message("assistant", "one two three ", "t1")


class BrokenProvider:
    """Streams one token, then fails with an engine bug (not a ModelError), or ends without a result."""

    name = "broken"

    def __init__(self, *, crash: bool) -> None:
        self.crash = crash

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        yield TextDelta("half ")
        if self.crash:
            raise RuntimeError("bug")

    async def aclose(self) -> None:
        """Nothing to release."""


@pytest.mark.parametrize(("crash", "reason"), [(True, "INTERNAL"), (False, "MODEL_PROTOCOL_ERROR")])
async def test_engine_failures_end_the_turn_with_a_partial_error(crash: bool, reason: str) -> None:
    rig = Rig(ScriptedProvider())
    loaded, log = await rig.journal.open(KEY.tenant_id, KEY.session_id, INCARNATION, "host-a")
    state = SessionState.restore(loaded, INCARNATION, 40)
    actor = SessionActor(KEY, SessionSettings(), state, BrokenProvider(crash=crash), log)
    try:
        await rig.run_turn(actor, "t1", "break")
    finally:
        await actor.close()
    events = rig.sink.of("t1")
    assert [kind(e) for e in events] == ["accepted", "delta", "error"]
    assert (events[-1].error.reason, events[-1].error.partial, events[-1].error.retryable) == (reason, True, False)
    assert [(r.status, r.error_reason) for r in rig.records()] == [("partial", reason)]


async def test_failed_turn_is_replayed_as_its_recorded_error() -> None:
    rig = Rig(ScriptedProvider(tokens=6, fail_after=2))
    actor = await rig.activate()
    replay = EventLog()
    try:
        await rig.run_turn(actor, "t1", "a b c")
        await rig.run_turn(actor, "t1", "a b c", sink=replay)
    finally:
        await actor.close()
    events = replay.of("t1")
    assert [kind(e) for e in events] == ["accepted", "delta", "delta", "error"]
    assert events[0].accepted.replayed is True
    assert replay.text("t1") == "a b "
    assert (events[-1].error.reason, events[-1].error.partial, events[-1].error.retryable) == (
        "MODEL_UNAVAILABLE",
        True,
        False,
    )
    assert shape(events) == shape(rig.sink.of("t1"))
    assert rig.provider.calls == 1


async def test_close_mid_turn_records_it_as_cancelled_and_acks() -> None:
    rig = Rig(ScriptedProvider(tokens=10_000, token_delay_s=0.002))
    actor = await rig.activate()
    await rig.submit(actor, "t1", "long answer")
    await rig.submit(actor, "t2", "queued")
    await wait_for(lambda: len(deltas(rig.sink.of("t1"))) >= 3)
    await actor.close()
    events = rig.sink.of("t1")
    assert kind(events[-1]) == "cancelled"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [e for e in rig.timeline if e.startswith(("record", "cancelled", "ack"))] == [
        "record:t1",
        "cancelled:t1",
        "ack:t1",
    ]  # the queued turn stays unacknowledged
    [record] = rig.records()
    assert record.status == "cancelled"
    assert record.reply_text == rig.sink.text("t1")
    assert [kind(e) for e in rig.sink.of("t2")] == ["accepted"]
    assert not actor.busy
    await actor.close()  # idempotent
    assert rig.acks("t1") == 1
    assert rig.acks("t2") == 0


async def test_submit_after_close_is_refused() -> None:
    rig = Rig(ScriptedProvider(tokens=1))
    actor = await rig.activate()
    await actor.close()
    with pytest.raises(RuntimeError, match="closed"):
        await actor.submit(local(Turn("t1", "late"), EventLog()))
    assert rig.provider.calls == 0


@pytest.mark.parametrize("already_sent", [0, 3, 8])
async def test_a_turn_with_prior_events_continues_after_them(already_sent: int) -> None:
    provider = RecordingProvider(tokens=8)
    rig = Rig(provider)
    actor = await rig.activate()
    text = "one two three four five"
    reply = scripted_reply(text, 8)
    prior = prior_events("s1", "t1", reply[:already_sent])
    try:
        await actor.submit(local(Turn("t1", text, prior_events=from_protos(prior)), rig.sink, rig.on_done("t1")))
        await wait_for(lambda: rig.acks("t1") == 1)
    finally:
        await actor.close()
    new = rig.sink.of("t1")
    assert [kind(e) for e in new] == ["delta"] * (8 - already_sent) + ["usage", "completed"]  # no second accepted
    assert [e.seq for e in new] == list(range(already_sent + 2, already_sent + 2 + len(new)))
    assert deltas(prior) + deltas(new) == reply  # what the client sees, across both attempts
    assert provider.requests[-1].prefill == "".join(reply[:already_sent])
    [record] = rig.records()
    assert record.reply_text == "".join(reply)
    assert record.deltas == tuple(reply)
    assert actor.state.messages[-1] == Message("assistant", "".join(reply), "t1")


async def test_a_recorded_turn_with_prior_events_is_finished_from_its_record() -> None:
    """The earlier host recorded the turn but died before its terminal event: the record finishes it."""
    rig = Rig(ScriptedProvider(tokens=5))
    actor = await rig.activate()
    rest = EventLog()
    reply = scripted_reply("a b c d e", 5)
    try:
        await rig.run_turn(actor, "t1", "a b c d e")
        prior = prior_events("s1", "t1", reply[:2])
        await actor.submit(local(Turn("t1", "a b c d e", prior_events=from_protos(prior)), rest, rig.on_done("t1")))
        await wait_for(lambda: rig.acks("t1") == 2)
    finally:
        await actor.close()
    events = rest.of("t1")
    assert [kind(e) for e in events] == ["delta"] * 3 + ["usage", "completed"]
    assert [e.seq for e in events] == [4, 5, 6, 7, 8]
    assert deltas(prior) + deltas(events) == reply
    assert shape(events) == shape(rig.sink.of("t1"))[3:]
    assert rig.provider.calls == 1


async def test_a_recorded_turn_whose_usage_was_already_sent_gets_no_second_usage() -> None:
    rig = Rig(ScriptedProvider(tokens=3))
    actor = await rig.activate()
    rest = EventLog()
    try:
        await rig.run_turn(actor, "t1", "x y z")
        original = rig.sink.of("t1")
        prior = original[:-1]  # the host died between the usage and the completed event
        await actor.submit(local(Turn("t1", "x y z", prior_events=from_protos(prior)), rest, rig.on_done("t1")))
        await wait_for(lambda: rig.acks("t1") == 2)
    finally:
        await actor.close()
    assert [kind(e) for e in [*prior, *rest.of("t1")]].count("usage") == 1
    assert shape(rest.of("t1")) == shape(original)[-1:]


async def test_duplicate_after_reactivation_from_a_snapshot_is_replayed_from_the_ledger() -> None:
    rig = Rig(ScriptedProvider(tokens=4))
    first = await rig.activate("host-a")
    await rig.run_turn(first, "t1", "remember this")
    await first.passivate()
    second = await rig.activate("host-b")
    replay = EventLog()
    try:
        assert "t1" in second.state.recent
        await rig.run_turn(second, "t1", "remember this", sink=replay)
    finally:
        await second.close()
    assert rig.provider.calls == 1
    events = replay.of("t1")
    assert events[0].accepted.replayed is True
    assert deltas(events) == deltas(rig.sink.of("t1")) == scripted_reply("remember this", 4)
    assert shape(events) == shape(rig.sink.of("t1"))
    assert len(rig.records()) == 1


async def test_duplicate_after_reactivation_from_records_is_replayed_from_the_ledger() -> None:
    rig = Rig(ScriptedProvider(tokens=4))
    first = await rig.activate("host-a")
    await rig.run_turn(first, "t1", "remember this")
    # host-a dies: no passivation, so no snapshot; the next activation replays the record.
    second = await rig.activate("host-b")
    replay = EventLog()
    try:
        assert rig.journal.snapshots == {}
        assert second.state.recent == first.state.recent
        await rig.run_turn(second, "t1", "remember this", sink=replay)
    finally:
        await second.close()
    assert rig.provider.calls == 1
    events = replay.of("t1")
    assert events[0].accepted.replayed is True
    assert shape(events) == shape(rig.sink.of("t1"))
    assert deltas(events) == scripted_reply("remember this", 4)


async def test_snapshots_every_n_turns_and_on_passivation() -> None:
    rig = Rig(ScriptedProvider(tokens=2), SessionSettings(snapshot_every_turns=3))
    actor = await rig.activate()
    for i in range(1, 8):
        await rig.run_turn(actor, f"t{i}", f"turn {i}")
    snapshots = rig.journal.snapshots[(KEY.tenant_id, KEY.session_id)]
    assert [s.turn_index for s in snapshots] == [3, 6]
    assert snapshots[-1].state["turn_count"] == 6
    await actor.passivate()
    assert [s.turn_index for s in snapshots] == [3, 6, 7]
    assert snapshots[-1].state == actor.state.to_dict()
    assert snapshots[-1].ledger_seq == actor.state.ledger_seq
    await actor.passivate()  # nothing new: no further snapshot
    assert len(snapshots) == 3
    # The next activation starts from the latest snapshot and has nothing to replay.
    loaded = await rig.journal.peek(KEY.tenant_id, KEY.session_id, INCARNATION)
    assert loaded.snapshot is not None
    assert loaded.snapshot.turn_index == 7
    assert loaded.turns == []
    again = await rig.activate("host-b")
    assert again.state == actor.state
    await again.close()


async def test_activation_replays_only_the_records_after_the_latest_snapshot() -> None:
    rig = Rig(ScriptedProvider(tokens=2), SessionSettings(snapshot_every_turns=3))
    actor = await rig.activate()
    try:
        for i in range(1, 8):
            await rig.run_turn(actor, f"t{i}", f"turn {i}")
    finally:
        await actor.close()  # a crash: no passivation snapshot
    loaded = await rig.journal.peek(KEY.tenant_id, KEY.session_id, INCARNATION)
    assert loaded.snapshot is not None
    assert loaded.snapshot.turn_index == 6
    assert [r.turn_id for r in loaded.turns] == ["t7"]
    again = await rig.activate("host-b")
    await again.close()
    assert again.state.turn_count == 7
    assert again.state.messages == actor.state.messages
    assert list(again.state.recent) == list(actor.state.recent)


async def test_a_failing_snapshot_does_not_hold_the_turn_back() -> None:
    rig = Rig(ScriptedProvider(tokens=2), SessionSettings(snapshot_every_turns=1))
    actor = await rig.activate()
    rig.log.fail_snapshots = True
    try:
        await rig.run_turn(actor, "t1", "no snapshot")
        await rig.run_turn(actor, "t2", "still none")
    finally:
        await actor.close()
    assert rig.journal.snapshots == {}
    assert [kind(e) for e in rig.sink.of("t2")][-1] == "completed"
    loaded = await rig.journal.peek(KEY.tenant_id, KEY.session_id, INCARNATION)
    assert [r.turn_id for r in loaded.turns] == ["t1", "t2"]  # the ledger alone restores the session


def test_state_round_trip() -> None:
    state = SessionState(incarnation=INCARNATION, turn_count=3, ledger_seq=9)
    state.messages = [Message("user", "hi", "t1"), Message("assistant", "hello", "t1"), Message("user", "x", "t3")]
    state.recent["t1"] = 2
    state.recent["t3"] = 9
    state.recent["t2"] = 5  # order is kept, whatever the values
    data = state.to_dict()
    restored = SessionState.from_dict(json.loads(json.dumps(data)))
    assert restored == state
    assert list(restored.recent.items()) == [("t1", 2), ("t3", 9), ("t2", 5)]
    assert restored.to_dict() == data
    assert SessionState.from_dict({}) == SessionState()
