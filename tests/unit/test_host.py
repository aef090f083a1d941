"""The session host with a fake bus: dispatch, acks, unknown sessions, malformed messages, passivation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from unit_support import (
    FakeMsg,
    FakePuller,
    FakeSender,
    incarnation_of,
    kind,
    make_session,
    turn_msg,
    wait_for,
)

from actors.host import HostSettings, SessionHost, session_settings
from actors.model import ModelChunk, ModelProvider, ModelRequest, ModelResult, TextDelta
from engine.providers import OfflineProvider, ScriptedProvider, scripted_reply
from salon.v1 import session_pb2
from storage.sessions import InMemorySessionRegistry, InMemorySnapshotStore

TENANT = "acme"


class GatedProvider:
    """Answers with one token, then waits for ``gate`` before finishing."""

    name = "gated"

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.calls = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.calls += 1
        yield TextDelta("first ")
        await self.gate.wait()
        yield ModelResult(stop_reason="end_turn", provider=self.name)

    async def aclose(self) -> None:
        """Nothing to release."""


class Rig:
    """A host wired to in-memory stores and a fake bus."""

    def __init__(self, provider: ModelProvider, settings: HostSettings) -> None:
        self.timeline: list[str] = []
        self.registry = InMemorySessionRegistry()
        self.snapshots = InMemorySnapshotStore()
        self.sender = FakeSender(self.timeline)
        self.puller = FakePuller(shard=3)
        self.host = SessionHost(
            name="host-test",
            pullers=[self.puller],
            events=self.sender,
            registry=self.registry,
            snapshots=self.snapshots,
            provider=provider,
            settings=settings,
        )

    async def create(self, session_id: str, create_time_s: int = 1_700_000_000, **fields: object) -> str:
        """Register a session; return its incarnation."""
        session = make_session(session_id, create_time_s, **fields)
        await self.registry.create(TENANT, session)
        return incarnation_of(session)

    def send(self, session_id: str, turn_id: str, text: str, incarnation: str = "") -> FakeMsg:
        msg = turn_msg(TENANT, session_id, turn_id, text, incarnation, timeline=self.timeline)
        self.puller.put(msg)
        return msg

    async def turn(self, session_id: str, turn_id: str, text: str, incarnation: str = "") -> FakeMsg:
        """Send a turn and wait until it is acknowledged."""
        msg = self.send(session_id, turn_id, text, incarnation)
        await wait_for(lambda: msg.acked, what=f"ack of {turn_id}")
        return msg


@asynccontextmanager
async def running(provider: ModelProvider | None = None, **settings: float) -> AsyncIterator[Rig]:
    values: dict[str, float] = {"fetch_timeout_s": 0.05}
    values.update(settings)
    rig = Rig(provider or ScriptedProvider(tokens=4), HostSettings(**values))  # type: ignore[arg-type]
    await rig.host.start()
    try:
        yield rig
    finally:
        await rig.host.close()
    assert rig.puller.closed


async def test_a_turn_produces_events_and_is_acked_after_its_terminal_event() -> None:
    async with running(ScriptedProvider(tokens=4)) as rig:
        incarnation = await rig.create("s1")
        msg = await rig.turn("s1", "t1", "hello host", incarnation)
        stats = rig.host.stats()
    events = rig.sender.log.of("t1")
    assert [kind(e) for e in events] == ["accepted", "delta", "delta", "delta", "delta", "usage", "completed"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5, 6, 7]
    assert all(e.session_id == "s1" for e in events)
    assert {tenant for tenant, _ in rig.sender.published} == {TENANT}
    assert rig.sender.log.text("t1") == "".join(scripted_reply("hello host", 4))
    assert rig.timeline[-2:] == ["completed:t1", "ack:t1"]
    assert msg.calls == ["ack"]
    assert stats["activations"] == 1
    assert stats["turns_started"] == 1
    assert stats["inflight_turns"] == 0
    assert stats["live_sessions"] == 1
    snapshot = await rig.snapshots.load(TENANT, "s1")
    assert snapshot is not None
    assert snapshot["turn_count"] == 1
    assert snapshot["incarnation"] == incarnation


async def test_session_definition_reaches_the_model() -> None:
    async with running(OfflineProvider(token_delay_s=0)) as rig:
        incarnation = await rig.create("s1", system_prompt="Answer like a pirate.")
        await rig.turn("s1", "t1", "ahoy", incarnation)
    text = rig.sender.log.text("t1")
    assert "My instructions for this session begin: “Answer like a pirate.”." in text
    assert "You just said: “ahoy”." in text


async def test_turns_of_a_session_run_in_order_with_memory() -> None:
    async with running(OfflineProvider(token_delay_s=0)) as rig:
        incarnation = await rig.create("s1")
        rig.send("s1", "t1", "my name is Ada", incarnation)
        last = rig.send("s1", "t2", "what is my name?", incarnation)
        await wait_for(lambda: last.acked)
    order = [entry for entry in rig.timeline if entry.startswith(("completed", "ack"))]
    assert order == ["completed:t1", "ack:t1", "completed:t2", "ack:t2"]
    assert "I remember 1 earlier message(s) of yours in this session, most recently “my name is Ada”." in (
        rig.sender.log.text("t2")
    )


async def test_unknown_session_gets_session_not_found_and_is_acked() -> None:
    async with running() as rig:
        msg = await rig.turn("ghost", "t1", "anyone there?")
        stats = rig.host.stats()
    events = rig.sender.log.of("t1")
    assert [kind(e) for e in events] == ["error"]
    error = events[0].error
    assert (events[0].seq, events[0].session_id) == (1, "ghost")
    assert (error.reason, error.retryable, error.partial) == ("SESSION_NOT_FOUND", False, False)
    assert rig.sender.published[0][0] == TENANT
    assert rig.timeline == ["error:t1", "ack:t1"]
    assert msg.calls == ["ack"]
    assert stats["live_sessions"] == 0
    assert stats["inflight_turns"] == 0


async def test_tenants_do_not_see_each_others_sessions() -> None:
    async with running() as rig:
        await rig.registry.create("other-tenant", make_session("s1"))
        await rig.turn("s1", "t1", "hello")  # sent as TENANT, which has no s1
    assert [e.error.reason for e in rig.sender.log.of("t1")] == ["SESSION_NOT_FOUND"]


async def test_malformed_messages_are_terminated() -> None:
    good = turn_msg(TENANT, "s1", "t1", "hi")
    no_headers = FakeMsg(good.data, None)
    no_tenant = FakeMsg(good.data, {k: v for k, v in (good.headers or {}).items() if k != "Salon-Tenant"})
    garbage = FakeMsg(b"\xff\xff\xff not protobuf", good.headers)
    async with running() as rig:
        await rig.create("s1")
        for msg in (no_headers, no_tenant, garbage):
            rig.puller.put(msg)
        await wait_for(lambda: all(m.calls for m in (no_headers, no_tenant, garbage)))
        # The host keeps working after them.
        ok = await rig.turn("s1", "t2", "still alive")
        stats = rig.host.stats()
    assert no_headers.calls == ["term"]
    assert no_tenant.calls == ["term"]
    assert garbage.calls == ["term"]
    assert ok.calls == ["ack"]
    assert [e.turn_id for _, e in rig.sender.published] == ["t2"] * len(rig.sender.published)
    assert stats["turns_started"] == 1


async def test_idle_session_is_passivated_and_reactivated_from_its_snapshot() -> None:
    async with running(OfflineProvider(token_delay_s=0), session_idle_s=0.05) as rig:
        incarnation = await rig.create("s1")
        await rig.turn("s1", "t1", "remember the word teapot", incarnation)
        await wait_for(lambda: rig.host.stats()["passivations"] >= 1, what="passivation")
        assert rig.host.stats()["live_sessions"] == 0
        await rig.turn("s1", "t2", "which word?", incarnation)
        stats = rig.host.stats()
    assert stats["activations"] == 2
    snapshot = await rig.snapshots.load(TENANT, "s1")
    assert snapshot is not None
    assert snapshot["turn_count"] == 2
    assert [turn_id for role, _, turn_id in snapshot["messages"] if role == "user"] == ["t1", "t2"]
    assert "most recently “remember the word teapot”." in rig.sender.log.text("t2")


async def test_redelivered_turn_after_passivation_is_replayed_from_the_snapshot() -> None:
    provider = ScriptedProvider(tokens=3)
    async with running(provider, session_idle_s=0.05) as rig:
        incarnation = await rig.create("s1")
        await rig.turn("s1", "t1", "once only", incarnation)
        await wait_for(lambda: rig.host.stats()["passivations"] >= 1)
        msg = await rig.turn("s1", "t1", "once only", incarnation)
    assert provider.calls == 1
    replay = [e for e in rig.sender.log.of("t1") if e.seq == 1][-1]
    assert replay.accepted.replayed is True
    assert msg.calls == ["ack"]


async def test_recreated_session_does_not_inherit_memory_after_passivation() -> None:
    async with running(OfflineProvider(token_delay_s=0), session_idle_s=0.05) as rig:
        old = await rig.create("s1", create_time_s=1_700_000_000)
        await rig.turn("s1", "t1", "secret of the old session", old)
        await wait_for(lambda: rig.host.stats()["passivations"] >= 1)
        await rig.registry.delete(TENANT, "s1")
        new = await rig.create("s1", create_time_s=1_700_000_500)
        assert new != old
        await rig.turn("s1", "t2", "hello again", new)
    text = rig.sender.log.text("t2")
    assert "This is the first message of the session that I can see." in text
    assert "secret" not in text
    snapshot = await rig.snapshots.load(TENANT, "s1")
    assert snapshot is not None
    assert (snapshot["turn_count"], snapshot["incarnation"]) == (1, new)


async def test_recreated_session_does_not_inherit_memory_while_live() -> None:
    async with running(OfflineProvider(token_delay_s=0)) as rig:  # never idle long enough to passivate
        old = await rig.create("s1", create_time_s=1_700_000_000)
        await rig.turn("s1", "t1", "secret of the old session", old)
        assert rig.host.stats()["live_sessions"] == 1
        await rig.registry.delete(TENANT, "s1")
        new = await rig.create("s1", create_time_s=1_700_000_500)
        await rig.turn("s1", "t2", "hello again", new)
        stats = rig.host.stats()
    assert "This is the first message of the session that I can see." in rig.sender.log.text("t2")
    assert stats["activations"] == 2
    assert stats["live_sessions"] == 1
    snapshot = await rig.snapshots.load(TENANT, "s1")
    assert snapshot is not None
    assert (snapshot["turn_count"], snapshot["incarnation"]) == (1, new)


async def test_least_recent_idle_session_is_passivated_over_the_limit() -> None:
    async with running(max_sessions=2) as rig:
        incarnations = {sid: await rig.create(sid) for sid in ["s1", "s2", "s3"]}
        for sid, incarnation in incarnations.items():
            await rig.turn(sid, f"{sid}-t1", "hi", incarnation)
        after_three = rig.host.stats()
        await rig.turn("s3", "s3-t2", "still here?", incarnations["s3"])  # live: no activation
        assert rig.host.stats()["activations"] == 3
        await rig.turn("s1", "s1-t2", "back again", incarnations["s1"])  # was passivated: activated again
        assert rig.host.stats()["activations"] == 4
    assert after_three["passivations"] == 1
    assert after_three["live_sessions"] == 2
    snapshot = await rig.snapshots.load(TENANT, "s1")
    assert snapshot is not None
    assert snapshot["turn_count"] == 2


async def test_long_turn_is_kept_in_progress() -> None:
    provider = ScriptedProvider(tokens=100_000, token_delay_s=0.001)
    async with running(provider, ack_wait_s=0.15) as rig:
        incarnation = await rig.create("s1")
        msg = rig.send("s1", "t1", "talk forever", incarnation)
        await wait_for(lambda: msg.calls.count("in_progress") >= 2, what="two heartbeats")
        assert not msg.acked
        assert rig.host.stats()["inflight_turns"] == 1
        assert rig.host.stats()["busy_sessions"] == 1


async def test_close_cancels_the_running_turn_and_acks_it() -> None:
    provider = ScriptedProvider(tokens=100_000, token_delay_s=0.001)
    async with running(provider) as rig:
        incarnation = await rig.create("s1")
        msg = rig.send("s1", "t1", "talk forever", incarnation)
        await wait_for(lambda: len(rig.sender.log.of("t1")) >= 4)
    events = rig.sender.log.of("t1")
    assert kind(events[-1]) == "cancelled"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert msg.calls[-1] == "ack"
    assert rig.timeline[-2:] == ["cancelled:t1", "ack:t1"]
    snapshot = await rig.snapshots.load(TENANT, "s1")
    assert snapshot is not None
    assert snapshot["recent"][-1][:2] == ["t1", "cancelled"]


async def test_drain_lets_running_turns_finish() -> None:
    provider = ScriptedProvider(tokens=20, token_delay_s=0.001)
    async with running(provider) as rig:
        incarnation = await rig.create("s1")
        msg = rig.send("s1", "t1", "finish me", incarnation)
        await wait_for(lambda: len(rig.sender.log.of("t1")) >= 2)
        await rig.host.drain(grace_s=5.0)
        assert msg.acked
    assert kind(rig.sender.log.of("t1")[-1]) == "completed"


def test_session_settings_fall_back_to_host_defaults() -> None:
    defaults = HostSettings(window_max_messages=11, window_token_budget=222, max_tokens=33)
    plain = session_settings(session_pb2.Session(session_id="s"), defaults)
    assert (plain.window_max_messages, plain.window_token_budget, plain.max_tokens) == (11, 222, 33)
    assert plain.temperature is None
    own = session_pb2.Session(session_id="s", system_prompt="p")
    own.memory.window_max_messages = 5
    own.model.max_tokens = 9
    own.model.temperature = 0.0
    own.model.stop_sequences.append("END")
    custom = session_settings(own, defaults)
    assert (custom.system_prompt, custom.window_max_messages, custom.max_tokens) == ("p", 5, 9)
    assert custom.temperature == 0.0
    assert custom.stop_sequences == ("END",)


async def test_activation_over_the_limit_while_other_sessions_are_busy() -> None:
    provider = GatedProvider()
    async with running(provider, max_sessions=1) as rig:
        a, b = await rig.create("a"), await rig.create("b")
        rig.send("a", "ta", "long", a)
        await wait_for(lambda: rig.sender.log.text("ta") == "first ")
        rig.send("b", "tb", "hello", b)
        await wait_for(lambda: rig.host.stats()["turns_started"] == 2)
        accepted_b = [kind(e) for e in rig.sender.log.of("tb")]
        provider.gate.set()
        await wait_for(lambda: kind(rig.sender.log.of("tb")[-1]) == "completed")
    assert accepted_b[0] == "accepted"


async def test_redelivery_of_a_running_turn_is_settled_when_the_turn_ends() -> None:
    provider = GatedProvider()
    async with running(provider) as rig:
        incarnation = await rig.create("s1")
        first = rig.send("s1", "t1", "slow", incarnation)
        await wait_for(lambda: rig.sender.log.text("t1") == "first ")
        again = rig.send("s1", "t1", "slow", incarnation)
        await wait_for(lambda: rig.host.stats()["duplicates"] == 1)
        assert not again.acked, "the copy must not be acked before the turn is done"
        provider.gate.set()
        await wait_for(lambda: first.acked)
        await wait_for(lambda: rig.host.stats()["inflight_turns"] == 0, limit_s=0.5)
    assert provider.calls == 1
    assert again.calls and again.calls[-1] == "ack"
