"""Tool answers kept while no host serves a turn: judged against the turn's records as a host judges them, stored,
and taken once by the turn when it waits again; the gateway's routing around them (host away, turn being taken up,
answer kept earlier, ledger unreachable). In memory: the scripted provider, the in-memory journal and answer
store."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import pytest
from test_tool_loop import INCARNATION, KEY, LOOKUP, REFUND, SEARCH, FakeServers, Rig, decide, results_sent, submit
from unit_support import from_protos, wait_for

from salon.actors.answer_watch import AnswerWatch
from salon.actors.session import SessionActor, SessionState
from salon.actors.stored_answers import as_answer, judge
from salon.actors.tools import ToolPolicy
from salon.engine.kept_answers import AnswerKeeper
from salon.engine.tools_api import ToolAnswers
from salon.storage import FailedPrecondition, NotFound, Reason, StoredAnswer, Unavailable
from salon.storage.inmemory import InMemoryAnswerStore
from salon.v1 import conversation_service_pb2 as cs_pb2

TEXT = '$CALL lookup {"order_id": "7"}\n$CALL refund {}\nanswer $RESULTS'


class KeptRig(Rig):
    """The tool loop's rig with an answer store the sessions read and a keeper over the same journal."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = InMemoryAnswerStore()
        self.keeper = AnswerKeeper(self.store, self.journal)

    async def activate(self, holder: str = "host-a") -> SessionActor:
        loaded, log = await self.journal.open(KEY.tenant_id, KEY.session_id, INCARNATION, holder)
        state = SessionState.restore(loaded, INCARNATION, self.settings.window_max_messages)
        return SessionActor(
            KEY,
            self.settings,
            state,
            self.provider,
            log,
            max_retry_delay_s=0.05,
            tool_servers=self.servers,
            tool_stats=self.stats,
            stored_answers=self.store,
        )

    async def keep(self, message: Any) -> str:
        return (await self.keeper.keep(as_answer(message), INCARNATION)).result


async def _left_waiting(rig: KeptRig) -> list[Any]:
    """A turn that waits for ``lookup`` (a client's result) and ``refund`` (a decision, then a result), left by
    its host; the events it sent."""
    first = await rig.activate("host-a")
    await rig.submit(first, "t1", TEXT)
    await rig.until("approval_required")
    sent = list(rig.events())
    await first.close()
    assert rig.released == ["t1"] and rig.acked == []
    return sent


async def test_answers_kept_while_no_host_serves_the_turn_are_taken_once_when_it_waits_again() -> None:
    rig = KeptRig(LOOKUP, REFUND)
    sent = await _left_waiting(rig)
    assert await rig.keep(submit("call_1_2", "early")) == "approval_pending"
    assert await rig.keep(decide("call_1_2", True)) == "accepted"
    assert await rig.keep(submit("call_1_2", "refunded")) == "accepted", "its decision is kept: the result may follow"
    assert await rig.keep(submit("call_1_1", "shipped")) == "accepted"
    assert await rig.keep(submit("call_1_1", "other")) == "duplicate", "the first kept answer holds"
    second = await rig.activate("host-b")
    try:
        await rig.submit(second, "t1", TEXT, prior_events=from_protos(sent))
        await wait_for(lambda: rig.acked == ["t1"])
    finally:
        await second.close()
    assert rig.provider.calls == 2, "one model request per round"
    assert [r.content for r in results_sent(rig.provider.requests[1])] == ["shipped", "refunded"]
    [record] = rig.records()
    assert [(c.result, c.source) for c in record.tool_calls] == [("shipped", "client"), ("refunded", "client")]
    assert record.tool_calls[1].approval is not None and record.tool_calls[1].approval.decided_by == "k1"
    kinds = rig.kinds()
    assert kinds.count("tool_result") == 2 and kinds.count("approval_decided") == 1, "each answer taken once"
    assert await rig.keep(submit("call_1_1", "late")) == "not_found", "a finished turn takes nothing"


async def test_a_kept_answer_is_taken_once_across_two_activations() -> None:
    rig = KeptRig(LOOKUP, REFUND)
    sent = await _left_waiting(rig)
    assert await rig.keep(submit("call_1_1", "shipped")) == "accepted"
    second = await rig.activate("host-b")
    await rig.submit(second, "t1", TEXT, prior_events=from_protos(sent))
    await rig.until("tool_result")
    sent = list(rig.events())
    await second.close()  # this host goes too, before the refund is decided
    third = await rig.activate("host-c")
    try:
        await rig.submit(third, "t1", TEXT, prior_events=from_protos(sent))
        await wait_for(lambda: third.waiting)
        assert (await third.answer(decide("call_1_2", False, "no"))).result == "accepted"
        await wait_for(lambda: rig.acked == ["t1"])
    finally:
        await third.close()
    [record] = rig.records()
    assert record.tool_calls[0].result == "shipped"
    assert rig.kinds().count("tool_result") == 2, "the kept result was not taken a second time"
    progress = [p for log in rig.journal.logs for p in log.progress]
    assert sum(1 for p in progress for c in p.calls if c.call_id == "call_1_1" and c.source == "client") == 1


async def test_an_answer_kept_while_the_turn_already_waits_here_reaches_it_through_the_watch() -> None:
    rig = KeptRig(LOOKUP)
    actor = await rig.activate()
    sessions = {KEY: actor}
    watch = asyncio.create_task(AnswerWatch(rig.store, sessions.get).run())
    try:
        await rig.submit(actor, "t1", '$CALL lookup {"order_id": "7"}\nso $RESULTS')
        await wait_for(lambda: actor.waiting)
        # The gateway could not reach this host in time and kept the answer.
        assert await rig.keep(submit("call_1_1", "shipped")) == "accepted"
        await wait_for(lambda: rig.acked == ["t1"])
    finally:
        watch.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        await actor.close()
    [record] = rig.records()
    assert [c.result for c in record.tool_calls] == ["shipped"] and rig.kinds().count("tool_result") == 1


async def test_a_turn_taken_up_but_not_rebuilt_yet_is_resuming_not_finished() -> None:
    rig = KeptRig(LOOKUP, REFUND)
    sent = await _left_waiting(rig)
    second = await rig.activate("host-b")
    try:
        await rig.submit(second, "t1", TEXT, prior_events=from_protos(sent))
        # Admitted, its calls not rebuilt yet: the answer is kept by the gateway, not refused as for no call.
        assert (await second.answer(submit("call_1_1", "shipped"))).result == "resuming"
        await wait_for(lambda: second.waiting)
        assert (await second.answer(submit("call_1_1", "shipped"))).result == "accepted"
    finally:
        await second.close()


async def test_kept_answers_are_judged_as_the_host_judges_them() -> None:
    rig = KeptRig(LOOKUP, REFUND, servers=FakeServers())
    await _left_waiting(rig)
    assert await rig.keep(submit("call_9", "x")) == "not_found", "an unknown call"
    assert await rig.keep(submit("call_1_1", "x", turn_id="t9")) == "not_found", "an unknown turn"
    assert await rig.keep(decide("call_1_1", True)) == "not_found", "lookup needs no decision"
    assert await rig.keep(decide("call_1_2", False, "no")) == "accepted"
    assert await rig.keep(submit("call_1_2", "x")) == "duplicate", "a rejection answers the call"
    held = await rig.keeper.keep(as_answer(decide("call_1_2", True)), INCARNATION)
    assert (held.result, held.verdict) == ("duplicate", "reject"), "the first decision holds"


async def test_an_mcp_call_and_a_passed_deadline_take_no_kept_answer() -> None:
    rig = KeptRig(LOOKUP, policy=ToolPolicy(wait_timeout_s=30))
    await _waiting_on_lookup(rig)
    loaded = await rig.journal.peek(KEY.tenant_id, KEY.session_id, INCARNATION)
    records = loaded.progress
    answer = as_answer(submit("call_1_1", "x"))
    assert judge(records, answer, None, time.time_ns()).judgement == "take"
    late = time.time_ns() + int(31e9)
    assert judge(records, answer, None, late).judgement == "not_found", "the turn times out: nothing more is taken"
    on_server = dataclasses.replace(records[0], calls=(dataclasses.replace(records[0].calls[0], server=SEARCH.server),))
    assert judge([on_server], answer, None, time.time_ns()).judgement == "not_found", "the engine runs MCP calls"


async def _waiting_on_lookup(rig: KeptRig) -> None:
    first = await rig.activate("host-a")
    await rig.submit(first, "t1", '$CALL lookup {"order_id": "7"}\n$RESULTS')
    await rig.until("tool_call")
    await first.close()


# The gateway's routing


class Hosts:
    """The control path: each request gets the next scripted reply (None: no host answered)."""

    def __init__(self, *replies: Mapping[str, str] | None) -> None:
        self.replies = list(replies)
        self.asked: list[Mapping[str, str]] = []

    async def __call__(self, shard: int, request: Mapping[str, str]) -> dict[str, str]:
        self.asked.append(request)
        reply = self.replies.pop(0) if self.replies else None
        if reply is None:
            raise Unavailable("no host", reason=Reason.HOST_UNAVAILABLE, retry_after_s=1.0)
        return dict(reply)


def _submit_request(call_id: str, result: str, turn_id: str = "t1") -> cs_pb2.SubmitToolResultRequest:
    return cs_pb2.SubmitToolResultRequest(session_id=KEY.session_id, turn_id=turn_id, call_id=call_id, result=result)


def _decide_request(call_id: str, approve: bool) -> cs_pb2.DecideApprovalRequest:
    verdict = cs_pb2.APPROVAL_VERDICT_APPROVE if approve else cs_pb2.APPROVAL_VERDICT_REJECT
    return cs_pb2.DecideApprovalRequest(session_id=KEY.session_id, turn_id="t1", call_id=call_id, verdict=verdict)


async def test_the_gateway_keeps_an_answer_no_host_takes_and_refuses_as_a_host_would() -> None:
    rig = KeptRig(LOOKUP, REFUND)
    await _left_waiting(rig)
    hosts = Hosts()
    answers = ToolAnswers(hosts, 4, keeper=rig.keeper)
    reply = await answers.submit(KEY.tenant_id, INCARNATION, _submit_request("call_1_1", "shipped"))
    assert not reply.duplicate
    assert len(hosts.asked) == 2, "asked, then told once kept"
    stored = await rig.store.get(KEY.tenant_id, KEY.session_id, "t1", "call_1_1", "result")
    assert stored is not None and stored.content == "shipped"
    again = await answers.submit(KEY.tenant_id, INCARNATION, _submit_request("call_1_1", "other"))
    assert again.duplicate, "the kept answer holds"
    same = await answers.submit(KEY.tenant_id, INCARNATION, _submit_request("call_1_1", "shipped"))
    assert same.duplicate, "the same answer again is OK, as a duplicate"
    with pytest.raises(NotFound) as unknown:
        await answers.submit(KEY.tenant_id, INCARNATION, _submit_request("call_9", "secret-input"))
    assert unknown.value.reason == Reason.TOOL_CALL_NOT_FOUND and "secret-input" not in str(unknown.value)
    with pytest.raises(FailedPrecondition) as pending:
        await answers.submit(KEY.tenant_id, INCARNATION, _submit_request("call_1_2", "early"))
    assert pending.value.reason == Reason.TOOL_APPROVAL_PENDING
    decided = await answers.decide(KEY.tenant_id, INCARNATION, "k1", _decide_request("call_1_2", False))
    assert not decided.duplicate and decided.verdict == cs_pb2.APPROVAL_VERDICT_REJECT
    repeated = await answers.decide(KEY.tenant_id, INCARNATION, "k1", _decide_request("call_1_2", True))
    assert repeated.duplicate and repeated.verdict == cs_pb2.APPROVAL_VERDICT_REJECT


async def test_a_turn_being_taken_up_gets_its_answer_kept() -> None:
    rig = KeptRig(LOOKUP, REFUND)
    await _left_waiting(rig)
    hosts = Hosts({"result": "resuming"}, {"result": "resuming"})
    answers = ToolAnswers(hosts, 4, keeper=rig.keeper)
    reply = await answers.submit(KEY.tenant_id, INCARNATION, _submit_request("call_1_1", "shipped"))
    assert not reply.duplicate
    assert await rig.store.get(KEY.tenant_id, KEY.session_id, "t1", "call_1_1", "result") is not None
    failing = Hosts({"result": "error", "reason": "CONTROL_FAILED"}, {"result": "unavailable"})
    decided = await ToolAnswers(failing, 4, keeper=rig.keeper).decide(
        KEY.tenant_id, INCARNATION, "k1", _decide_request("call_1_2", True)
    )
    assert not decided.duplicate, "a host that failed to take the answer leaves it to be kept"
    assert await rig.store.get(KEY.tenant_id, KEY.session_id, "t1", "call_1_2", "decision") is not None


async def test_a_live_host_takes_the_answer_and_nothing_is_kept() -> None:
    rig = KeptRig(LOOKUP, REFUND)
    await _left_waiting(rig)
    hosts = Hosts({"result": "accepted"}, {"result": "not_found"})
    answers = ToolAnswers(hosts, 4, keeper=rig.keeper)
    await answers.submit(KEY.tenant_id, INCARNATION, _submit_request("call_1_1", "shipped"))
    assert await rig.store.of_turn(KEY.tenant_id, KEY.session_id, "t1") == []
    with pytest.raises(NotFound):
        await answers.submit(KEY.tenant_id, INCARNATION, _submit_request("call_1_1", "again"))


class UnreachableJournal:
    async def peek(self, tenant_id: str, session_id: str, incarnation: str) -> Any:
        raise Unavailable("ledger down", reason=Reason.NATS_UNAVAILABLE, retry_after_s=1.0)


async def test_without_the_ledger_or_a_keeper_an_answer_no_host_takes_is_unavailable() -> None:
    journal: Any = UnreachableJournal()
    answers = ToolAnswers(Hosts(), 4, keeper=AnswerKeeper(InMemoryAnswerStore(), journal))
    with pytest.raises(Unavailable):
        await answers.submit(KEY.tenant_id, INCARNATION, _submit_request("call_1_1", "shipped"))
    with pytest.raises(Unavailable) as unavailable:
        await ToolAnswers(Hosts(), 4).submit(KEY.tenant_id, INCARNATION, _submit_request("call_1_1", "shipped"))
    assert unavailable.value.reason == Reason.HOST_UNAVAILABLE


async def test_a_store_answer_round_trips() -> None:
    answer = StoredAnswer("a", "s", "t", "c", "decision", approve=True, reason="ok", approver="ann", stored_at_ns=5)
    assert StoredAnswer.from_bytes(answer.to_bytes()) == answer
    with pytest.raises(ValueError):
        StoredAnswer.from_bytes(b'{"kind": "other"}')
