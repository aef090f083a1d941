"""Tool answers given while no host serves the turn's shard, end to end through gRPC, NATS and Ray, with the real
Anthropic SDK against a local server speaking its protocol: the only host is killed while a turn waits for a
client's result and a person's decision; the answers are accepted (kept by the gateway), refused as a host would
refuse them, and taken once by the turn when a new host takes the shard and the turn up (one model request per
round)."""

from __future__ import annotations

import functools
import os

import grpc
from conftest import EngineFactory, assert_well_formed, wait_for
from test_tools import LOOKUP, REFUND, Watch, _fails

from salon.engine import Engine
from salon.providers.fake_servers import FakeAnthropicServer, Reply, ToolUse
from salon.storage.jetstream.client import close_connection, connect
from salon.storage.jetstream.tool_answers import KvAnswerStore
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import session_pb2, turn_pb2

SECRET = "do-not-echo-7781"


async def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _result(session_id: str, turn_id: str, call_id: str, text: str) -> cs_pb2.SubmitToolResultRequest:
    return cs_pb2.SubmitToolResultRequest(session_id=session_id, turn_id=turn_id, call_id=call_id, result=text)


def _decision(session_id: str, turn_id: str, call_id: str, approve: bool) -> cs_pb2.DecideApprovalRequest:
    verdict = cs_pb2.APPROVAL_VERDICT_APPROVE if approve else cs_pb2.APPROVAL_VERDICT_REJECT
    return cs_pb2.DecideApprovalRequest(
        session_id=session_id, turn_id=turn_id, call_id=call_id, verdict=verdict, approver="ann"
    )


async def _kept(engine: Engine, session_id: str, turn_id: str) -> list[tuple[str, str]]:
    """The answers the gateway keeps for the turn, read from the deployment's bucket."""
    nc = await connect(engine.nats_url, name="salon-test-kept-answers")
    try:
        store = await KvAnswerStore.open(nc.jetstream(), engine.names)
        return [(a.call_id, a.kind) for a in await store.of_turn(engine.config.default_tenant, session_id, turn_id)]
    finally:
        await close_connection(nc)


async def test_answers_given_while_no_host_serves_the_shard_are_kept_and_taken_once(
    make_engine: EngineFactory,
) -> None:
    async with FakeAnthropicServer() as anthropic:
        engine = await make_engine(
            model_chain="anthropic",
            anthropic_api_key="test-key",
            anthropic_model="claude-test",
            anthropic_base_url=anthropic.url,
            num_hosts=1,
            num_shards=1,
            shard_lease_s=2.0,
            ack_wait_s=2.0,
        )
        anthropic.push(
            Reply.calls(ToolUse("find_order", {"order_id": "8"}), ToolUse("refund", {}), text=["Checking. "]),
            Reply(tokens=["Order ", "8 ", "refunded."]),
        )
        async with grpc.aio.insecure_channel(engine.target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            tools = session_pb2.ToolSet(tools=[LOOKUP, REFUND])
            session = await stub.CreateSession(cs_pb2.CreateSessionRequest(tools=tools))
            session_id = session.session.session_id
            watch = Watch(stub, cs_pb2.SendTurnRequest(session_id=session_id, text="refund order 8"), ())
            await watch.until("approval_required")
            lookup, refund = (e.tool_call.call_id for e in watch.of("tool_call"))
            pid = engine.hosts.info[0]["pid"]
            engine.hosts.kill_host(engine.hosts.indexes[0])  # the only host: no host serves the shard now
            await wait_for(lambda: _gone(pid), what="the host's process to end")
            result = functools.partial(_result, session_id, watch.turn_id)
            decision = functools.partial(_decision, session_id, watch.turn_id, refund)

            taken = await stub.SubmitToolResult(result(lookup, "shipped"), timeout=30)
            again = await stub.SubmitToolResult(result(lookup, "shipped"), timeout=30)
            other = await stub.SubmitToolResult(result(lookup, "lost"), timeout=30)
            early = await _fails(stub.SubmitToolResult(result(refund, SECRET), timeout=30))
            unknown = await _fails(stub.SubmitToolResult(result(SECRET, "x"), timeout=30))
            approved = await stub.DecideApproval(decision(True), timeout=30)
            rejected = await stub.DecideApproval(decision(False), timeout=30)
            refunded = await stub.SubmitToolResult(result(refund, "refunded"), timeout=30)
            assert not engine.hosts.handles, "every answer was given while no host served the shard"
            kept = await _kept(engine, session_id, watch.turn_id)
            assert kept == [(lookup, "result"), (refund, "decision"), (refund, "result")], "each kept by the gateway"

            await engine.hosts.add_host()  # takes the shard once the dead host's lease expires, then the turn
            events = await watch.done()
            finished = await _fails(stub.SubmitToolResult(result(lookup, "late"), timeout=30))
            history = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id))
    assert not taken.duplicate and again.duplicate and other.duplicate, "the first answer holds; a repeat is OK"
    assert early[0] == grpc.StatusCode.FAILED_PRECONDITION and early[2] == "TOOL_APPROVAL_PENDING"
    assert unknown[0] == grpc.StatusCode.NOT_FOUND and unknown[2] == "TOOL_CALL_NOT_FOUND"
    assert SECRET not in early[1] and SECRET not in unknown[1], "statuses never echo the input"
    assert not approved.duplicate and approved.verdict == cs_pb2.APPROVAL_VERDICT_APPROVE
    assert rejected.duplicate and rejected.verdict == cs_pb2.APPROVAL_VERDICT_APPROVE, "the first decision holds"
    assert not refunded.duplicate
    assert finished[0] == grpc.StatusCode.NOT_FOUND, "the turn ended: its calls take no answer"
    _taken_once(events, session_id)
    assert len(anthropic.requests) == 2, "exactly one model request per round, counted at the protocol server"
    sent = [r.content for r in anthropic.tool_results(anthropic.requests[1].body)]
    assert sent == ["shipped", "refunded"], "the model saw the kept answers"
    [turn] = history.turns
    assert turn.model_rounds == 2 and [c.result for c in turn.tool_calls] == ["shipped", "refunded"]
    assert turn.tool_calls[1].approval.approved


def _taken_once(events: list[turn_pb2.TurnEvent], session_id: str) -> None:
    """The turn's events: well formed, nothing sent twice, each kept answer taken once, the answer complete."""
    assert_well_formed(events, session_id)
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds.count("accepted") == 1 and kinds.count("tool_call") == 2, "nothing sent twice"
    assert kinds.count("approval_decided") == 1 and kinds.count("tool_result") == 2, "each kept answer taken once"
    assert events[-1].HasField("completed")
    assert "".join(e.delta.text for e in events if e.HasField("delta")) == "Checking. Order 8 refunded."
