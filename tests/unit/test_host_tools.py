"""The host's side of tools, with a fake bus and the in-memory ledger: answers routed to a waiting turn through
control messages, waiting turns not counted against admission, and a host that died while a turn waited
(another host takes the turn up from its progress records, and the answer reaches it)."""

from __future__ import annotations

import asyncio
import json

from unit_support import FakePuller, FakeSender, ProbedJournal, kind, make_session, turn_msg, wait_for

from salon.actors.control import ControlReply, DecideApproval, SubmitToolResult
from salon.actors.host import HostSettings, SessionHost
from salon.providers import ScriptedProvider
from salon.storage.inmemory import InMemorySessionRegistry
from salon.v1 import session_pb2

TENANT = "acme"
TOOLS = session_pb2.ToolSet(
    tools=[
        session_pb2.Tool(name="lookup", input_schema_json='{"type": "object"}'),
        session_pb2.Tool(name="refund", requires_approval=True),
    ]
)
CALL = '$CALL lookup {"order_id": "1"}\nsaid $RESULTS'


class Deployment:
    """A registry, a ledger and a bus shared by hosts that come and go."""

    def __init__(self) -> None:
        self.registry = InMemorySessionRegistry()
        self.journal = ProbedJournal()
        self.sender = FakeSender()
        self.provider = ScriptedProvider(tokens=3)

    def host(self, name: str, **settings: float) -> tuple[SessionHost, FakePuller]:
        puller = FakePuller()
        values: dict[str, float] = {"fetch_timeout_s": 0.05}
        values.update(settings)
        host = SessionHost(
            name=name,
            pullers=[puller],
            events=self.sender,
            registry=self.registry,
            journal=self.journal,
            provider=self.provider,
            settings=HostSettings(**values),  # type: ignore[arg-type]
        )
        return host, puller

    async def create(self, session_id: str) -> str:
        session = make_session(session_id, tools=TOOLS)
        await self.registry.create(TENANT, session)
        return str(session.create_time.ToNanoseconds())


async def ask(host: SessionHost, message: SubmitToolResult | DecideApproval, shard: int = 0) -> ControlReply:
    """The host's reply to ``message`` arriving on the control subject of ``shard``."""
    return ControlReply.from_bytes(await host.control_message(message.to_bytes(), shard))


def submit(session_id: str, turn_id: str, call_id: str, content: str) -> SubmitToolResult:
    return SubmitToolResult(TENANT, session_id, turn_id, call_id, content=content)


async def test_answers_reach_the_waiting_turn_through_control_messages() -> None:
    world = Deployment()
    host, puller = world.host("host-a")
    await host.start()
    try:
        incarnation = await world.create("s1")
        msg = turn_msg(TENANT, "s1", "t1", CALL, incarnation)
        puller.put(msg)
        await wait_for(lambda: host.stats()["waiting_turns"] == 1, what="the turn to wait")
        assert (await ask(host, submit("nope", "t1", "call_1_1", "x"))).result == "unknown_session"
        assert (await ask(host, submit("s1", "t9", "call_1_1", "x"))).result == "not_found"
        assert (await ask(host, submit("s1", "t1", "call_1_1", "found"))).result == "accepted"
        await wait_for(lambda: msg.acked)
        assert (await ask(host, submit("s1", "t1", "call_1_1", "again"))).result == "not_found"
        stats = host.stats()
    finally:
        await host.close()
    assert stats["tool_calls.lookup.ok"] == 1 and stats["waiting_turns"] == 0 and stats["tool_waits"] == 1
    assert kind(world.sender.log.of("t1")[-1]) == "completed"


async def test_waiting_turns_do_not_count_against_the_hosts_admission_limit() -> None:
    world = Deployment()
    host, puller = world.host("host-a", max_inflight_turns=1)
    await host.start()
    try:
        sessions = [await world.create(f"s{n}") for n in range(3)]
        for n, incarnation in enumerate(sessions[:2]):
            puller.put(turn_msg(TENANT, f"s{n}", f"t{n}", CALL, incarnation))
            await wait_for(lambda n=n: host.stats()["waiting_turns"] == n + 1)  # type: ignore[misc]
        last = turn_msg(TENANT, "s2", "t2", "no tools here", sessions[2])
        puller.put(last)
        await wait_for(lambda: last.acked)
        assert kind(world.sender.log.of("t2")[-1]) == "completed", "two waiting turns hold no slot"
        assert host.stats()["inflight_turns"] == 2
    finally:
        await host.close()


async def test_a_turn_left_waiting_by_a_dead_host_is_taken_up_by_the_next_one() -> None:
    world = Deployment()
    dead, dead_puller = world.host("host-a")
    await dead.start()
    incarnation = await world.create("s1")
    text = '$CALL lookup {"order_id": "1"}\n$CALL refund {}\nsaid $RESULTS'
    msg = turn_msg(TENANT, "s1", "t1", text, incarnation)
    dead_puller.put(msg)
    await wait_for(lambda: dead.stats()["waiting_turns"] == 1)
    assert (await ask(dead, DecideApproval(TENANT, "s1", "t1", "call_1_2", approve=True))).result == "accepted"
    sent_before = len(world.sender.published)
    # host-a stops answering (it died); host-b owns the shard now.
    alive, puller = world.host("host-b")
    await alive.start()
    try:
        early = await ask(alive, submit("s1", "t1", "call_1_1", "found"))
        assert early.result == "resuming", "the turn's message has not been redelivered yet"
        puller.put(msg.redelivered())
        await wait_for(lambda: alive.stats()["waiting_turns"] == 1, what="the turn taken up")
        assert len(world.sender.published) == sent_before, "nothing sent twice"
        assert (await ask(alive, submit("s1", "t1", "call_1_1", "found"))).result == "accepted"
        assert (await ask(alive, submit("s1", "t1", "call_1_2", "refunded"))).result == "accepted"
        redelivered = puller  # the copy host-b holds is acked when the turn ends
        await wait_for(lambda: kind(world.sender.log.of("t1")[-1]) == "completed")
    finally:
        await alive.close()
        await dead.close()
    events = world.sender.log.of("t1")
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert world.provider.calls == 2, "one model request per round"
    [record] = world.journal.records(TENANT, "s1")
    assert [c.result for c in record.tool_calls] == ["found", "refunded"]
    assert json.loads(record.tool_calls[0].arguments_json) == {"order_id": "1"}
    assert redelivered.closed


async def test_a_control_message_and_a_turn_arriving_together_make_one_activation() -> None:
    world = Deployment()
    gate = asyncio.Event()
    read = world.registry.get

    async def slow_get(tenant_id: str, session_id: str) -> session_pb2.Session:
        await gate.wait()  # both callers are inside the activation before either finishes it
        return await read(tenant_id, session_id)

    world.registry.get = slow_get  # type: ignore[method-assign]
    host, puller = world.host("host-a")
    await host.start()
    try:
        incarnation = await world.create("s1")
        answer = asyncio.ensure_future(ask(host, submit("s1", "t1", "c", "x")))
        msg = turn_msg(TENANT, "s1", "t1", CALL, incarnation)
        puller.put(msg)
        await wait_for(puller._queue.empty, what="the turn taken by the pull loop")
        gate.set()
        assert (await answer).result in ("not_found", "accepted")
        await wait_for(lambda: host.stats()["waiting_turns"] == 1)
        assert (await ask(host, submit("s1", "t1", "call_1_1", "found"))).result == "accepted", "one actor"
        await wait_for(lambda: msg.acked)
        assert host.stats()["activations"] == 1
    finally:
        await host.close()
    markers = [e for e in world.journal.turns[(TENANT, "s1")] if e is None]
    assert len(markers) == 1, "one activation marker: nobody was fenced"


async def test_a_control_message_for_a_shard_not_pulled_here_activates_nothing() -> None:
    world = Deployment()
    host, _ = world.host("host-a")
    await host.start()
    try:
        await world.create("s1")
        reply = await ask(host, submit("s1", "t1", "call_1_1", "refund order 7731"), shard=5)
        stats = host.stats()
    finally:
        await host.close()
    # Retryable, so the gateway keeps the answer for the shard's owner; no actor here to fence the owner's.
    assert (reply.result, reply.reason) == ("unavailable", "HOST_UNAVAILABLE")
    assert "7731" not in reply.message and "7731" not in reply.reason, "the answer is never echoed"
    assert stats["activations"] == 0
    assert (TENANT, "s1") not in world.journal.turns, "no activation marker"


async def test_giving_a_shard_up_passivates_a_session_only_a_control_message_activated() -> None:
    world = Deployment()
    host, puller = world.host("host-a")
    await host.start()
    try:
        await world.create("s1")
        assert (await ask(host, submit("s1", "t1", "call_1_1", "x"))).result == "not_found"
        assert host.stats()["live_sessions"] == 1
        await host.remove_shard(puller.shard, grace_s=1.0)
        stats = host.stats()
        # Once the shard is gone, a control message no longer brings the session back here.
        again = await ask(host, submit("s1", "t1", "call_1_1", "x"))
    finally:
        await host.close()
    assert stats["live_sessions"] == 0 and stats["passivations"] == 1, "nothing of the shard stays live here"
    assert again.result == "unavailable"
    assert host.stats()["activations"] == 1
