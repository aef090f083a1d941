"""The session actor: turns one at a time, gap-free events, memory, snapshots before acks, replay, failures."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from unit_support import EventLog, kind, wait_for

from actors.model import Message, ModelChunk, ModelRequest
from actors.session import SessionActor, SessionKey, SessionSettings, SessionState, Turn, TurnOutcome
from engine.providers import ScriptedProvider, scripted_reply

KEY = SessionKey("acme", "s1")


class Recorder:
    """Keeps saved snapshots and acks in one ordered log."""

    def __init__(self, fail_saves: int = 0) -> None:
        self.log: list[tuple[str, str]] = []
        self.snapshots: list[dict[str, Any]] = []
        self.fail_saves = fail_saves

    async def save(self, key: SessionKey, data: dict[str, Any]) -> None:
        assert key == KEY
        if self.fail_saves:
            self.fail_saves -= 1
            raise OSError("storage down")
        self.snapshots.append(data)
        last = data["recent"][-1][0] if data["recent"] else ""
        self.log.append(("save", last))

    def on_done(self, turn_id: str) -> Callable[[], Awaitable[None]]:
        """An on_done callback recording the ack of ``turn_id``."""

        async def done() -> None:
            self.log.append(("ack", turn_id))

        return done

    def acked(self, turn_id: str) -> bool:
        return ("ack", turn_id) in self.log


class RecordingProvider(ScriptedProvider):
    """The scripted provider, keeping every request it was given."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.requests: list[ModelRequest] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.requests.append(request)
        async for chunk in super().stream(request):
            yield chunk


def make_actor(provider: ScriptedProvider, recorder: Recorder, settings: SessionSettings | None = None) -> SessionActor:
    return SessionActor(KEY, settings or SessionSettings(), SessionState(), provider, recorder.save)


async def run_turn(actor: SessionActor, sink: EventLog, recorder: Recorder, turn_id: str, text: str) -> None:
    await actor.submit(Turn(turn_id, text, on_done=recorder.on_done(turn_id)), sink)
    await wait_for(lambda: recorder.acked(turn_id), what=f"ack of {turn_id}")


async def test_a_turn_emits_gap_free_events_in_order() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=5), Recorder(), EventLog()
    actor = make_actor(provider, recorder)
    try:
        await run_turn(actor, sink, recorder, "t1", "hello there world")
    finally:
        await actor.close()
    events = sink.of("t1")
    assert [kind(e) for e in events] == ["accepted"] + ["delta"] * 5 + ["usage", "completed"]
    assert [e.seq for e in events] == list(range(1, 9))
    assert all(e.session_id == "s1" and e.turn_id == "t1" for e in events)
    accepted = events[0].accepted
    assert (accepted.queue_position, accepted.replayed) == (0, False)
    assert [e.delta.text for e in events[1:6]] == scripted_reply("hello there world", 5)
    assert sink.text("t1") == "".join(scripted_reply("hello there world", 5)) == "hello there world hello there "
    assert events[6].usage.output_tokens == 5
    assert events[6].usage.provider == "scripted"
    assert events[7].completed.stop_reason == 1  # STOP_REASON_END_TURN
    assert provider.calls == 1


async def test_two_turns_run_one_after_the_other() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=6, token_delay_s=0.001), Recorder(), EventLog()
    actor = make_actor(provider, recorder)
    try:
        await actor.submit(Turn("t1", "first turn", on_done=recorder.on_done("t1")), sink)
        await actor.submit(Turn("t2", "second turn", on_done=recorder.on_done("t2")), sink)
        assert actor.pending_turns == 2
        await wait_for(lambda: recorder.acked("t2"))
    finally:
        await actor.close()
    first, second = sink.of("t1"), sink.of("t2")
    assert first[0].accepted.queue_position == 0
    assert second[0].accepted.queue_position == 1
    for events in (first, second):
        assert [e.seq for e in events] == list(range(1, 10))
        assert [kind(e) for e in events] == ["accepted"] + ["delta"] * 6 + ["usage", "completed"]
    index = {id(e): i for i, e in enumerate(sink.events)}
    first_terminal = index[id(first[-1])]
    second_deltas = [index[id(e)] for e in second if kind(e) == "delta"]
    assert min(second_deltas) > first_terminal
    assert sink.text("t1") == "".join(scripted_reply("first turn", 6))
    assert sink.text("t2") == "".join(scripted_reply("second turn", 6))
    assert [a for a in recorder.log if a[0] == "ack"] == [("ack", "t1"), ("ack", "t2")]
    assert not actor.busy


async def test_state_holds_the_conversation() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=2), Recorder(), EventLog()
    actor = make_actor(provider, recorder)
    try:
        await run_turn(actor, sink, recorder, "t1", "alpha beta")
        await run_turn(actor, sink, recorder, "t2", "gamma")
    finally:
        await actor.close()
    state = actor.state
    assert state.turn_count == 2
    assert [(m.role, m.text, m.turn_id) for m in state.messages] == [
        ("user", "alpha beta", "t1"),
        ("assistant", "alpha beta ", "t1"),
        ("user", "gamma", "t2"),
        ("assistant", "gamma gamma ", "t2"),
    ]
    assert list(state.recent) == ["t1", "t2"]
    assert state.recent["t2"].status == "completed"


async def test_the_window_is_sent_to_the_provider() -> None:
    provider, recorder, sink = RecordingProvider(tokens=1), Recorder(), EventLog()
    settings = SessionSettings(system_prompt="Be kind.", window_max_messages=3, max_tokens=77)
    actor = make_actor(provider, recorder, settings)
    try:
        for i in range(3):
            await run_turn(actor, sink, recorder, f"t{i}", f"message{i}")
    finally:
        await actor.close()
    last = provider.requests[-1]
    assert last.system == "Be kind."
    assert last.max_tokens == 77
    # Room for 2 history messages plus the new one: the last exchange, whole.
    assert [(m.role, m.text) for m in last.messages] == [
        ("user", "message1"),
        ("assistant", "message1 "),
        ("user", "message2"),
    ]


async def test_snapshot_is_saved_before_every_ack() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=3), Recorder(), EventLog()
    actor = make_actor(provider, recorder)
    try:
        for turn_id in ["t1", "t2", "t3"]:
            await run_turn(actor, sink, recorder, turn_id, f"text of {turn_id}")
    finally:
        await actor.close()
    assert recorder.log == [
        ("save", "t1"),
        ("ack", "t1"),
        ("save", "t2"),
        ("ack", "t2"),
        ("save", "t3"),
        ("ack", "t3"),
    ]
    assert [s["turn_count"] for s in recorder.snapshots] == [1, 2, 3]
    assert recorder.snapshots[-1]["messages"][-1] == ["assistant", "text of t3 ", "t3"]


async def test_duplicate_of_a_finished_turn_is_replayed_without_the_model() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=4), Recorder(), EventLog()
    actor = make_actor(provider, recorder)
    replay = EventLog()
    try:
        await run_turn(actor, sink, recorder, "t1", "say it twice")
        assert provider.calls == 1
        acks_before = recorder.log.count(("ack", "t1"))
        await actor.submit(Turn("t1", "say it twice", on_done=recorder.on_done("t1")), replay)
        await wait_for(lambda: recorder.log.count(("ack", "t1")) == acks_before + 1)
    finally:
        await actor.close()
    assert provider.calls == 1
    events = replay.of("t1")
    assert [kind(e) for e in events] == ["accepted", "delta", "completed"]
    assert [e.seq for e in events] == [1, 2, 3]
    assert events[0].accepted.replayed is True
    assert replay.text("t1") == sink.text("t1") == "".join(scripted_reply("say it twice", 4))
    assert actor.state.turn_count == 1


async def test_duplicate_of_a_queued_turn_is_ignored() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=3, token_delay_s=0.001), Recorder(), EventLog()
    actor = make_actor(provider, recorder)
    try:
        await actor.submit(Turn("t1", "one", on_done=recorder.on_done("t1")), sink)
        await actor.submit(Turn("t2", "two", on_done=recorder.on_done("t2")), sink)
        assert actor.knows_turn("t2")
        await actor.submit(Turn("t2", "two", on_done=recorder.on_done("t2")), sink)
        await wait_for(lambda: recorder.acked("t2"))
    finally:
        await actor.close()
    assert provider.calls == 2
    assert [e.seq for e in sink.of("t2")] == [1, 2, 3, 4, 5, 6]
    assert actor.state.turn_count == 2


async def test_failure_before_the_first_token_is_retryable() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=4, fail_after=0), Recorder(), EventLog()
    actor = make_actor(provider, recorder)
    try:
        await run_turn(actor, sink, recorder, "t1", "doomed")
    finally:
        await actor.close()
    events = sink.of("t1")
    assert [kind(e) for e in events] == ["accepted", "error"]
    assert [e.seq for e in events] == [1, 2]
    error = events[-1].error
    assert (error.reason, error.retryable, error.partial) == ("MODEL_UNAVAILABLE", True, False)
    assert actor.state.recent["t1"].status == "failed"
    # The user's message is remembered; no empty assistant message is.
    assert [(m.role, m.text) for m in actor.state.messages] == [("user", "doomed")]
    assert recorder.log == [("save", "t1"), ("ack", "t1")]


async def test_failure_after_some_tokens_is_partial_and_not_retryable() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=6, fail_after=3), Recorder(), EventLog()
    actor = make_actor(provider, recorder)
    try:
        await run_turn(actor, sink, recorder, "t1", "one two three four")
    finally:
        await actor.close()
    events = sink.of("t1")
    assert [kind(e) for e in events] == ["accepted", "delta", "delta", "delta", "error"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert sink.text("t1") == "one two three "
    error = events[-1].error
    assert (error.retryable, error.partial) == (False, True)
    assert actor.state.recent["t1"].status == "partial"
    assert actor.state.messages[-1].text == "one two three "


async def test_failed_turn_is_replayed_as_its_recorded_error() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=6, fail_after=2), Recorder(), EventLog()
    actor = make_actor(provider, recorder)
    replay = EventLog()
    try:
        await run_turn(actor, sink, recorder, "t1", "a b c")
        await actor.submit(Turn("t1", "a b c"), replay)
    finally:
        await actor.close()
    events = replay.of("t1")
    assert [kind(e) for e in events] == ["accepted", "delta", "error"]
    assert replay.text("t1") == "a b "
    assert (events[-1].error.partial, events[-1].error.retryable) == (True, False)
    assert provider.calls == 1


async def test_close_mid_turn_emits_cancelled_and_acks() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=10_000, token_delay_s=0.002), Recorder(), EventLog()
    actor = make_actor(provider, recorder)
    await actor.submit(Turn("t1", "long answer", on_done=recorder.on_done("t1")), sink)
    await actor.submit(Turn("t2", "queued", on_done=recorder.on_done("t2")), sink)
    await wait_for(lambda: len([e for e in sink.of("t1") if kind(e) == "delta"]) >= 3)
    await actor.close()
    events = sink.of("t1")
    assert kind(events[-1]) == "cancelled"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert recorder.log == [("save", "t1"), ("ack", "t1")]  # the queued turn stays unacknowledged
    assert actor.state.recent["t1"].status == "cancelled"
    assert actor.state.recent["t1"].reply == sink.text("t1")
    assert [kind(e) for e in sink.of("t2")] == ["accepted"]
    assert not actor.busy
    await actor.close()  # idempotent
    assert recorder.log == [("save", "t1"), ("ack", "t1")]


async def test_save_failure_keeps_the_turn_unacknowledged_and_redelivery_is_answered_from_memory() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=2), Recorder(fail_saves=1), EventLog()
    actor = make_actor(provider, recorder)
    replay = EventLog()
    try:
        await actor.submit(Turn("t1", "keep me", on_done=recorder.on_done("t1")), sink)
        await wait_for(lambda: sink.finished("t1"))
        await wait_for(lambda: not actor.busy)
        assert recorder.log == []  # not saved, so not acked
        await actor.submit(Turn("t1", "keep me", on_done=recorder.on_done("t1")), replay)
        await wait_for(lambda: recorder.acked("t1"))
    finally:
        await actor.close()
    assert provider.calls == 1
    assert replay.of("t1")[0].accepted.replayed is True
    assert replay.text("t1") == "keep me "


async def test_an_acked_turn_is_in_a_saved_snapshot_even_after_a_failed_save() -> None:
    provider, recorder, sink = ScriptedProvider(tokens=2), Recorder(fail_saves=1), EventLog()
    actor = make_actor(provider, recorder)
    try:
        await actor.submit(Turn("t1", "keep me", on_done=recorder.on_done("t1")), sink)
        await wait_for(lambda: sink.finished("t1") and not actor.busy)
        await actor.submit(Turn("t1", "keep me", on_done=recorder.on_done("t1")), EventLog())
        await wait_for(lambda: recorder.acked("t1"))
    finally:
        await actor.close()
    saved_turns = [turn_id for s in recorder.snapshots for turn_id, *_ in s["recent"]]
    assert "t1" in saved_turns


async def test_submit_after_close_is_refused() -> None:
    provider = ScriptedProvider(tokens=1)
    actor = make_actor(provider, Recorder())
    await actor.close()
    with pytest.raises(RuntimeError, match="closed"):
        await actor.submit(Turn("t1", "late"), EventLog())
    assert provider.calls == 0


def test_state_round_trip() -> None:
    state = SessionState(turn_count=3, incarnation="1700000000000000000")
    state.messages = [Message("user", "hi", "t1"), Message("assistant", "hello", "t1")]
    state.recent["t1"] = TurnOutcome("t1", "completed", "hello", stop_reason="end_turn")
    state.recent["t2"] = TurnOutcome("t2", "partial", "hel", error_reason="MODEL_UNAVAILABLE")
    data = state.to_dict()
    restored = SessionState.from_dict(json.loads(json.dumps(data)))
    assert restored == state
    assert list(restored.recent) == ["t1", "t2"]
    assert restored.to_dict() == data
    assert SessionState.from_dict({}) == SessionState()
