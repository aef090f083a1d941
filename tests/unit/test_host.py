"""The session host with a fake bus and the in-memory ledger: dispatch, record-then-ack, unknown sessions,
malformed messages, passivation, redelivery (replay and continuation) and fencing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from unit_support import (
    FakeMsg,
    FakePuller,
    FakeSender,
    ProbedJournal,
    incarnation_of,
    kind,
    make_session,
    prior_events,
    terminal,
    turn_msg,
    wait_for,
)

from salon.actors.host import HostSettings, SessionHost, session_settings
from salon.actors.model import ModelChunk, ModelProvider, ModelRequest, ModelResult, TextDelta
from salon.providers import OfflineProvider, ScriptedProvider, scripted_reply
from salon.storage import TurnRecord
from salon.storage.inmemory import InMemorySessionRegistry
from salon.v1 import session_pb2

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
    """A host wired to the in-memory registry and ledger and a fake bus, with one timeline of published
    events (``kind:turn``), ledger records (``record:turn``) and acks (``ack:turn``)."""

    def __init__(self, provider: ModelProvider, settings: HostSettings, clock: Callable[[], float]) -> None:
        self.timeline: list[str] = []
        self.registry = InMemorySessionRegistry()
        self.journal = ProbedJournal(self.timeline)
        self.sender = FakeSender(self.timeline)
        self.puller = FakePuller(shard=3)
        self.host = SessionHost(
            name="host-test",
            pullers=[self.puller],
            events=self.sender,
            registry=self.registry,
            journal=self.journal,
            provider=provider,
            settings=settings,
            clock=clock,
        )

    async def create(self, session_id: str, create_time_s: int = 1_700_000_000, **fields: object) -> str:
        """Register a session; return its incarnation."""
        session = make_session(session_id, create_time_s, **fields)
        await self.registry.create(TENANT, session)
        return incarnation_of(session)

    def send(self, session_id: str, turn_id: str, text: str, incarnation: str = "", num_delivered: int = 1) -> FakeMsg:
        msg = turn_msg(TENANT, session_id, turn_id, text, incarnation, timeline=self.timeline)
        if num_delivered > 1:
            msg = msg.redelivered(num_delivered)
        self.puller.put(msg)
        return msg

    async def turn(
        self, session_id: str, turn_id: str, text: str, incarnation: str = "", num_delivered: int = 1
    ) -> FakeMsg:
        """Send a turn and wait until it is acknowledged."""
        msg = self.send(session_id, turn_id, text, incarnation, num_delivered)
        await wait_for(lambda: msg.acked, what=f"ack of {turn_id}")
        return msg

    def records(self, session_id: str) -> list[TurnRecord]:
        return self.journal.records(TENANT, session_id)


@asynccontextmanager
async def running(
    provider: ModelProvider | None = None, clock: Callable[[], float] | None = None, **settings: float
) -> AsyncIterator[Rig]:
    values: dict[str, float] = {"fetch_timeout_s": 0.05}
    values.update(settings)
    rig = Rig(
        provider or ScriptedProvider(tokens=4),
        HostSettings(**values),  # type: ignore[arg-type]
        clock or time.monotonic,
    )
    await rig.host.start()
    try:
        yield rig
    finally:
        await rig.host.close()
    assert rig.puller.closed


async def test_a_turn_is_recorded_then_completed_then_acked() -> None:
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
    assert [e for e in rig.timeline if e.startswith(("record", "completed", "ack"))] == [
        "record:t1",
        "completed:t1",
        "ack:t1",
    ]
    assert rig.timeline[-1] == "ack:t1"
    assert msg.calls == ["ack"]
    assert rig.sender.flushed == ["t1"]  # its events stored before the ack
    assert rig.sender.sent_calls == 1  # every delivery looks for an earlier attempt's events
    assert stats["activations"] == 1
    assert stats["turns_started"] == 1
    assert stats["inflight_turns"] == 0
    assert stats["live_sessions"] == 1
    [record] = rig.records("s1")
    assert (record.turn_id, record.turn_index, record.status, record.incarnation) == ("t1", 1, "completed", incarnation)
    assert record.reply_text == rig.sender.log.text("t1")
    assert record.enqueued_at_ns > 0  # carried from the bus message


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
    assert "I remember 1 earlier message(s) of yours in this session, most recent first: “my name is Ada”." in (
        rig.sender.log.text("t2")
    )
    assert [(r.turn_id, r.turn_index) for r in rig.records("s1")] == [("t1", 1), ("t2", 2)]


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
    assert rig.journal.turns == {}  # nothing activated, nothing written


async def test_tenants_do_not_see_each_others_sessions() -> None:
    async with running() as rig:
        await rig.registry.create("other-tenant", make_session("s1"))
        await rig.turn("s1", "t1", "hello")  # sent as TENANT, which has no s1
    assert [e.error.reason for e in rig.sender.log.of("t1")] == ["SESSION_NOT_FOUND"]
    assert rig.journal.turns == {}


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
    assert [r.turn_id for r in rig.records("s1")] == ["t2"]


async def test_idle_session_is_passivated_with_a_snapshot_and_reactivated_with_its_memory() -> None:
    async with running(OfflineProvider(token_delay_s=0), session_idle_s=0.05) as rig:
        incarnation = await rig.create("s1")
        await rig.turn("s1", "t1", "remember the word teapot", incarnation)
        await wait_for(lambda: rig.host.stats()["passivations"] >= 1, what="passivation")
        assert rig.host.stats()["live_sessions"] == 0
        [snapshot] = rig.journal.snapshots[(TENANT, "s1")]
        assert (snapshot.turn_index, snapshot.incarnation) == (1, incarnation)
        await rig.turn("s1", "t2", "which word?", incarnation)
        stats = rig.host.stats()
    assert stats["activations"] == 2
    assert "most recent first: “remember the word teapot”." in rig.sender.log.text("t2")
    assert [(r.turn_id, r.turn_index) for r in rig.records("s1")] == [("t1", 1), ("t2", 2)]
    assert rig.records("s1")[-1].context_turn_ids == ("t1",)


async def test_redelivered_turn_after_passivation_is_answered_from_the_ledger() -> None:
    provider = ScriptedProvider(tokens=3)
    async with running(provider, session_idle_s=0.05) as rig:
        incarnation = await rig.create("s1")
        await rig.turn("s1", "t1", "once only", incarnation)
        first_run = list(rig.sender.log.of("t1"))
        await wait_for(lambda: rig.host.stats()["passivations"] >= 1)
        # Its events are all still retained: the client has them, nothing is sent again.
        kept = await rig.turn("s1", "t1", "once only", incarnation, num_delivered=2)
        assert rig.sender.log.of("t1") == first_run
        await wait_for(lambda: rig.host.stats()["passivations"] >= 2)
        # Its events expired: the record is replayed with the same numbering.
        rig.sender.published.clear()
        expired = await rig.turn("s1", "t1", "once only", incarnation, num_delivered=3)
    assert provider.calls == 1
    replay = rig.sender.log.of("t1")[len(first_run) :]
    assert replay[0].accepted.replayed is True
    assert [(e.seq, kind(e)) for e in replay] == [(e.seq, kind(e)) for e in first_run]
    assert [e.delta.text for e in replay if kind(e) == "delta"] == scripted_reply("once only", 3)
    assert kept.calls == ["ack"] and expired.calls == ["ack"]
    assert len(rig.records("s1")) == 1


async def test_redelivered_turn_continues_after_the_events_a_dead_host_sent() -> None:
    provider = ScriptedProvider(tokens=8)
    text = "stream me across hosts"
    reply = scripted_reply(text, 8)
    async with running(provider) as rig:
        incarnation = await rig.create("s1")
        prior = prior_events("s1", "t1", reply[:3])  # accepted + 3 deltas, then the host died
        rig.sender.retained[(TENANT, "s1", "t1")] = prior
        msg = await rig.turn("s1", "t1", text, incarnation, num_delivered=2)
    new = rig.sender.log.of("t1")
    assert [kind(e) for e in new] == ["delta"] * 5 + ["usage", "completed"]  # no second accepted
    assert [e.seq for e in new] == list(range(5, 12))
    client_view = [e.delta.text for e in [*prior, *new] if kind(e) == "delta"]
    assert client_view == reply
    [record] = rig.records("s1")
    assert record.reply_text == "".join(reply)
    assert msg.calls == ["ack"]
    assert rig.timeline[-4:] == ["record:t1", "usage:t1", "completed:t1", "ack:t1"]


async def test_a_first_delivery_with_events_already_stored_continues_after_them() -> None:
    # A nats-server killed right after handing the turn out forgot it had: the copy arrives as a first delivery.
    provider = ScriptedProvider(tokens=6)
    text = "the server forgot"
    reply = scripted_reply(text, 6)
    async with running(provider) as rig:
        incarnation = await rig.create("s1")
        prior = prior_events("s1", "t1", reply[:2])
        rig.sender.retained[(TENANT, "s1", "t1")] = prior
        msg = await rig.turn("s1", "t1", text, incarnation, num_delivered=1)
    new = rig.sender.log.of("t1")
    assert [kind(e) for e in new] == ["delta"] * 4 + ["usage", "completed"]
    assert [e.seq for e in new] == list(range(4, 10))
    assert [e.delta.text for e in [*prior, *new] if kind(e) == "delta"] == reply
    assert msg.calls == ["ack"]


async def test_redelivered_turn_with_nothing_sent_starts_over() -> None:
    async with running(ScriptedProvider(tokens=2)) as rig:
        incarnation = await rig.create("s1")
        await rig.turn("s1", "t1", "from the top", incarnation, num_delivered=2)
    events = rig.sender.log.of("t1")
    assert rig.sender.sent_calls == 1
    assert [kind(e) for e in events] == ["accepted", "delta", "delta", "usage", "completed"]
    assert [e.seq for e in events] == [1, 2, 3, 4, 5]
    assert events[0].accepted.replayed is False


async def test_while_the_ledger_is_down_the_turn_is_kept_in_progress_and_not_acked() -> None:
    async with running(ScriptedProvider(tokens=2), ack_wait_s=0.15) as rig:
        incarnation = await rig.create("s1")
        rig.journal.fail_appends = True
        msg = rig.send("s1", "t1", "hold on", incarnation)
        await wait_for(lambda: msg.calls.count("in_progress") >= 2, what="two heartbeats while the ledger is down")
        assert rig.journal.logs[-1].attempts >= 2
        assert not msg.acked
        assert not any(terminal(e) for e in rig.sender.log.of("t1"))
        assert rig.records("s1") == []
        rig.journal.fail_appends = False
        await wait_for(lambda: msg.acked)
    assert [r.turn_id for r in rig.records("s1")] == ["t1"]
    assert [kind(e) for e in rig.sender.log.of("t1")].count("completed") == 1
    assert rig.timeline[-4:] == ["record:t1", "usage:t1", "completed:t1", "ack:t1"]


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
    record = rig.records("s1")[-1]
    assert (record.turn_id, record.turn_index, record.incarnation) == ("t2", 1, new)


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
    record = rig.records("s1")[-1]
    assert (record.turn_id, record.turn_index, record.incarnation) == ("t2", 1, new)


async def test_least_recent_idle_session_is_passivated_over_the_limit() -> None:
    async with running(max_sessions=2) as rig:
        incarnations = {sid: await rig.create(sid) for sid in ["s1", "s2", "s3"]}
        for sid, incarnation in incarnations.items():
            await rig.turn(sid, f"{sid}-t1", "hi", incarnation)
        after_three = rig.host.stats()
        assert (TENANT, "s1") in rig.journal.snapshots  # the evicted one left a snapshot
        assert (TENANT, "s3") not in rig.journal.snapshots  # the newcomer was not evicted
        await rig.turn("s3", "s3-t2", "still here?", incarnations["s3"])  # live: no activation
        assert rig.host.stats()["activations"] == 3
        await rig.turn("s1", "s1-t2", "back again", incarnations["s1"])  # was passivated: activated again
        assert rig.host.stats()["activations"] == 4
    assert after_three["passivations"] == 1
    assert after_three["live_sessions"] == 2
    assert [(r.turn_id, r.turn_index) for r in rig.records("s1")] == [("s1-t1", 1), ("s1-t2", 2)]


async def test_long_turn_is_kept_in_progress() -> None:
    provider = ScriptedProvider(tokens=100_000, token_delay_s=0.001)
    async with running(provider, ack_wait_s=0.15) as rig:
        incarnation = await rig.create("s1")
        msg = rig.send("s1", "t1", "talk forever", incarnation)
        await wait_for(lambda: msg.calls.count("in_progress") >= 2, what="two heartbeats")
        assert not msg.acked
        assert rig.host.stats()["inflight_turns"] == 1
        assert rig.host.stats()["busy_sessions"] == 1


async def test_close_cancels_the_running_turn_records_and_acks_it() -> None:
    provider = ScriptedProvider(tokens=100_000, token_delay_s=0.001)
    async with running(provider) as rig:
        incarnation = await rig.create("s1")
        msg = rig.send("s1", "t1", "talk forever", incarnation)
        await wait_for(lambda: len(rig.sender.log.of("t1")) >= 4)
    events = rig.sender.log.of("t1")
    assert kind(events[-1]) == "cancelled"
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert msg.calls[-1] == "ack"
    assert rig.timeline[-3:] == ["record:t1", "cancelled:t1", "ack:t1"]
    [record] = rig.records("s1")
    assert (record.status, record.reply_text) == ("cancelled", rig.sender.log.text("t1"))
    [snapshot] = rig.journal.snapshots[(TENANT, "s1")]  # closing passivates
    assert snapshot.turn_index == 1


async def test_drain_lets_running_turns_finish() -> None:
    provider = ScriptedProvider(tokens=20, token_delay_s=0.001)
    async with running(provider) as rig:
        incarnation = await rig.create("s1")
        msg = rig.send("s1", "t1", "finish me", incarnation)
        await wait_for(lambda: len(rig.sender.log.of("t1")) >= 2)
        await rig.host.drain(grace_s=5.0)
        assert msg.acked
    assert kind(rig.sender.log.of("t1")[-1]) == "completed"
    assert rig.records("s1")[0].status == "completed"


def test_session_settings_fall_back_to_host_defaults() -> None:
    defaults = HostSettings(window_max_messages=11, window_token_budget=222, max_tokens=33, snapshot_every_turns=7)
    plain = session_settings(session_pb2.Session(session_id="s"), defaults)
    assert (plain.window_max_messages, plain.window_token_budget, plain.max_tokens) == (11, 222, 33)
    assert plain.temperature is None
    assert plain.snapshot_every_turns == 7
    own = session_pb2.Session(session_id="s", system_prompt="p")
    own.memory.window_max_messages = 5
    own.model.max_tokens = 9
    own.model.temperature = 0.0
    own.model.stop_sequences.append("END")
    custom = session_settings(own, defaults)
    assert (custom.system_prompt, custom.window_max_messages, custom.max_tokens) == ("p", 5, 9)
    assert custom.temperature == 0.0
    assert custom.stop_sequences == ("END",)


def test_a_session_cutoff_of_zero_is_zero_and_takes_precedence() -> None:
    defaults = HostSettings(retrieval_min_score=0.4, retrieval_token_budget=900)

    def settings(**memory: Any) -> tuple[float, int]:
        s = session_settings(session_pb2.Session(session_id="s", memory=session_pb2.MemorySettings(**memory)), defaults)
        return s.retrieval_min_score, s.retrieval_token_budget

    assert settings() == (0.4, 900)
    assert settings(retrieval_min_score=0.0) == (0.4, 900)  # the old field's 0: unset
    assert settings(retrieval_min_score=0.25) == (0.25, 900)
    assert settings(retrieval_score_cutoff=0.0) == (0.0, 900)
    assert settings(retrieval_min_score=0.25, retrieval_score_cutoff=0.0, retrieval_token_budget=50) == (0.0, 50)


async def test_activation_over_the_limit_while_other_sessions_are_busy() -> None:
    provider = GatedProvider()
    async with running(provider, max_sessions=1) as rig:
        a, b = await rig.create("a"), await rig.create("b")
        rig.send("a", "ta", "long", a)
        await wait_for(lambda: rig.sender.log.text("ta") == "first ")
        rig.send("b", "tb", "hello", b)
        await wait_for(lambda: rig.host.stats()["turns_started"] == 2)
        accepted_b = [kind(e) for e in rig.sender.log.of("tb")]
        assert rig.host.stats()["live_sessions"] == 2  # the busy one is not evicted: the cap is soft
        provider.gate.set()
        await wait_for(lambda: kind(rig.sender.log.of("tb")[-1]) == "completed")
    assert accepted_b[0] == "accepted"
    assert kind(rig.sender.log.of("ta")[-1]) == "completed"


async def test_redelivery_of_a_running_turn_is_settled_when_the_turn_ends() -> None:
    provider = GatedProvider()
    async with running(provider) as rig:
        incarnation = await rig.create("s1")
        first = rig.send("s1", "t1", "slow", incarnation)
        await wait_for(lambda: rig.sender.log.text("t1") == "first ")
        again = rig.send("s1", "t1", "slow", incarnation, num_delivered=2)
        await wait_for(lambda: rig.host.stats()["duplicates"] == 1)
        assert not again.acked, "the copy must not be acked before the turn is done"
        provider.gate.set()
        await wait_for(lambda: first.acked)
        await wait_for(lambda: rig.host.stats()["inflight_turns"] == 0)
    assert provider.calls == 1
    assert again.calls and again.calls[-1] == "ack"
    assert [kind(e) for e in rig.sender.log.of("t1")].count("accepted") == 1
    assert len(rig.records("s1")) == 1


def frozen_clock() -> float:
    """A clock that never moves: no session ever looks idle, so only fenced ones are swept."""
    return 1000.0


async def fence_a_running_session(rig: Rig) -> tuple[str, FakeMsg]:
    """Run t1 on s1, let another host take s1 over, then send t2 here; return the incarnation and t2."""
    incarnation = await rig.create("s1")
    await rig.turn("s1", "t1", "before the takeover", incarnation)
    await rig.journal.open(TENANT, "s1", incarnation, holder="host-b")
    lost = rig.send("s1", "t2", "after the takeover", incarnation)
    await wait_for(lambda: rig.host.stats()["live_sessions"] == 0, what="the fenced session to be dropped")
    return incarnation, lost


async def test_a_fenced_session_is_dropped_without_terminal_event_or_ack() -> None:
    async with running(ScriptedProvider(tokens=3), clock=frozen_clock, session_idle_s=0.2) as rig:
        incarnation, lost = await fence_a_running_session(rig)
        assert rig.host.stats()["passivations"] == 1
        assert [kind(e) for e in rig.sender.log.of("t2")] == ["accepted"] + ["delta"] * 3
        assert not lost.acked
        assert [r.turn_id for r in rig.records("s1")] == ["t1"]
        assert (TENANT, "s1") not in rig.journal.snapshots  # a fenced actor leaves no snapshot
        # The next turn activates the session again, from the ledger.
        await rig.turn("s1", "t3", "back here", incarnation)
        stats = rig.host.stats()
    assert stats["activations"] == 2
    assert [(r.turn_id, r.turn_index) for r in rig.records("s1")] == [("t1", 1), ("t3", 2)]
    assert rig.records("s1")[-1].context_turn_ids == ("t1",)


async def test_a_fenced_turn_is_released_for_redelivery() -> None:
    async with running(ScriptedProvider(tokens=3), clock=frozen_clock, session_idle_s=0.2) as rig:
        incarnation, _ = await fence_a_running_session(rig)
        assert rig.host.stats()["inflight_turns"] == 0
        again = await rig.turn("s1", "t2", "after the takeover", incarnation, num_delivered=2)
    assert again.calls == ["ack"]
    assert [kind(e) for e in rig.sender.log.of("t2")].count("accepted") == 1


async def test_a_redelivered_turn_whose_prior_events_cannot_be_read_is_not_left_in_flight() -> None:
    async with running(ScriptedProvider(tokens=2)) as rig:
        incarnation = await rig.create("s1")
        other = await rig.create("s2")
        rig.sender.fail_sent = True
        first = rig.send("s1", "t1", "unlucky", incarnation, num_delivered=2)
        await wait_for(lambda: "nak" in first.calls, what="t1 handed back to the bus")
        rig.sender.fail_sent = False
        await rig.turn("s2", "u1", "after it", other)  # one puller: t1's dispatch has ended by now
        assert rig.sender.sent_calls == 2
        assert not first.acked  # left for the bus to redeliver
        assert rig.host.stats()["inflight_turns"] == 0
        again = await rig.turn("s1", "t1", "unlucky", incarnation, num_delivered=3)
    assert again.calls == ["ack"]
    assert kind(rig.sender.log.of("t1")[-1]) == "completed"


async def test_giving_a_shard_up_lets_its_taken_turns_finish_within_the_grace() -> None:
    provider = GatedProvider()
    async with running(provider) as rig:
        incarnation = await rig.create("s1")
        first = rig.send("s1", "t1", "running", incarnation)
        await wait_for(lambda: provider.calls == 1, what="the first turn running")
        queued = rig.send("s1", "t2", "queued behind it", incarnation)
        await wait_for(lambda: rig.host.stats()["inflight_turns"] == 2, what="the second turn queued")
        removal = asyncio.create_task(rig.host.remove_shard(3, grace_s=30.0))
        await wait_for(lambda: 3 not in rig.host.shards, what="the shard no longer pulled")
        assert not removal.done(), "the running turn is waited for"
        provider.gate.set()
        await removal
        assert first.acked and queued.acked
        assert [r.status for r in rig.records("s1")] == ["completed", "completed"]
        assert rig.host.stats()["live_sessions"] == 0
        assert rig.puller.closed
        # A turn for the shard sent now is not taken: the shard is no longer this host's.
        late = rig.send("s1", "t3", "too late", incarnation)
        assert late.calls == []


async def test_past_the_grace_the_running_turn_ends_and_queued_ones_go_back_to_the_bus() -> None:
    provider = GatedProvider()
    async with running(provider) as rig:
        incarnation = await rig.create("s1")
        first = rig.send("s1", "t1", "running", incarnation)
        await wait_for(lambda: provider.calls == 1, what="the first turn running")
        queued = rig.send("s1", "t2", "queued behind it", incarnation)
        await wait_for(lambda: rig.host.stats()["inflight_turns"] == 2, what="the second turn queued")
        await rig.host.remove_shard(3, grace_s=0.05)
        assert first.acked and rig.records("s1")[0].status == "cancelled"
        # The queued turn goes back to the bus for the shard's next owner, unanswered here.
        assert queued.calls == ["nak"]
        assert rig.host.stats()["inflight_turns"] == 0


async def test_a_shard_taken_at_run_time_is_pulled() -> None:
    async with running() as rig:
        incarnation = await rig.create("s1")
        extra = FakePuller(shard=5)
        await rig.host.add_shard(extra)
        assert rig.host.shards == {3, 5}
        msg = turn_msg(TENANT, "s1", "t1", "via the new shard", incarnation, timeline=rig.timeline)
        extra.put(msg)
        await wait_for(lambda: msg.acked, what="the turn of the new shard")
        # Taking a shard already pulled changes nothing.
        await rig.host.add_shard(FakePuller(shard=5))
        assert rig.host.shards == {3, 5}
