"""Tools end to end through gRPC, NATS and a Ray host, with the real Anthropic SDK and the OpenAI-compatible provider
against local servers speaking those vendors' tool protocols, and a real MCP server (``mcp_server.py``, the SDK's
server API) run by the hosts: a client tool round trip, parallel calls, an MCP tool, approve and reject, a
deadline, cancel, memory, every bad input, waiting turns that cost no host slot, and a host SIGKILLed while a
turn waits (the turn completes once, one model request per round)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import EngineFactory, assert_well_formed, release_events_stream, wait_for
from google.protobuf.duration_pb2 import Duration
from sec_support import TenantsFile, bearer, engine_config

from salon.engine import Engine
from salon.providers.fake_servers import FakeAnthropicServer, FakeOpenAIServer, Reply, ToolUse
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import session_pb2, turn_pb2

MCP_SERVER = str(Path(__file__).with_name("mcp_server.py"))
CANARY = "CANARYq9z"
ORDER_SCHEMA = json.dumps({"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]})
LOOKUP = session_pb2.Tool(name="find_order", description="Finds an order by its id", input_schema_json=ORDER_SCHEMA)
REFUND = session_pb2.Tool(name="refund", description="Refunds an order", requires_approval=True)
Md = tuple[tuple[str, str], ...]


class Watch:
    """One SendTurn call read in the background: its events as they arrive."""

    def __init__(self, stub: cs_grpc.ConversationServiceStub, request: cs_pb2.SendTurnRequest, md: Md) -> None:
        self.events: list[turn_pb2.TurnEvent] = []
        self._task = asyncio.ensure_future(self._read(stub.SendTurn(request, metadata=md, timeout=150)))

    async def _read(self, call: Any) -> None:
        async for response in call:
            self.events.append(response.event)

    def of(self, kind: str) -> list[turn_pb2.TurnEvent]:
        return [e for e in self.events if e.WhichOneof("kind") == kind]

    async def until(self, kind: str, count: int = 1) -> list[turn_pb2.TurnEvent]:
        async def arrived() -> bool:
            if self._task.done():
                self._task.result()  # a failed call fails the test here
            return len(self.of(kind)) >= count

        await wait_for(arrived, timeout_s=90, what=f"{count} {kind} event(s)")
        return self.of(kind)

    async def done(self) -> list[turn_pb2.TurnEvent]:
        await asyncio.wait_for(self._task, 120)
        return self.events

    @property
    def turn_id(self) -> str:
        return self.events[0].turn_id


class Rig:
    """The module's engine (auth on, tenants acme and beta, MCP server ``local``) and its model servers."""

    def __init__(self, engine: Engine, anthropic: FakeAnthropicServer, openai: FakeOpenAIServer, keys: dict[str, str]):
        self.engine = engine
        self.anthropic = anthropic
        self.openai = openai
        self.acme, self.beta = bearer(keys["acme"]), bearer(keys["beta"])

    async def session(self, stub: cs_grpc.ConversationServiceStub, **fields: Any) -> str:
        response = await stub.CreateSession(cs_pb2.CreateSessionRequest(**fields), metadata=self.acme)
        return str(response.session.session_id)

    def watch(self, stub: cs_grpc.ConversationServiceStub, session_id: str, text: str, **fields: Any) -> Watch:
        return Watch(stub, cs_pb2.SendTurnRequest(session_id=session_id, text=text, **fields), self.acme)

    async def submit(
        self, stub: cs_grpc.ConversationServiceStub, watch: Watch, call_id: str, md: Md | None = None, **outcome: str
    ) -> cs_pb2.SubmitToolResultResponse:
        request = cs_pb2.SubmitToolResultRequest(
            session_id=watch.events[0].session_id, turn_id=watch.turn_id, call_id=call_id, **outcome
        )
        response: cs_pb2.SubmitToolResultResponse = await stub.SubmitToolResult(request, metadata=md or self.acme)
        return response

    async def decide(
        self, stub: cs_grpc.ConversationServiceStub, watch: Watch, call_id: str, verdict: int, reason: str = ""
    ) -> cs_pb2.DecideApprovalResponse:
        request = cs_pb2.DecideApprovalRequest(
            session_id=watch.events[0].session_id,
            turn_id=watch.turn_id,
            call_id=call_id,
            verdict=verdict,  # type: ignore[arg-type]
            reason=reason,
            approver="ann@example",
        )
        response: cs_pb2.DecideApprovalResponse = await stub.DecideApproval(request, metadata=self.acme)
        return response


def _mcp_file(directory: Path) -> Path:
    path = directory / "mcp.toml"
    command = json.dumps([sys.executable, MCP_SERVER, "stdio"])
    # The server imports the SDK first: seconds on a busy machine.
    path.write_text(
        f'[servers.local]\ncommand = {command}\nrequires_approval = ["add"]\nconnect_timeout_s = 60\n'
        "call_timeout_s = 30\nmax_output_bytes = 2000\n"
    )
    return path


@pytest.fixture(scope="module")
async def rig(nats_url: str, ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    directory = tmp_path_factory.mktemp("tools")
    tenants = TenantsFile(directory / "tenants.toml")
    keys = {"acme": tenants.add_key("acme"), "beta": tenants.add_key("beta")}
    async with FakeAnthropicServer() as anthropic, FakeOpenAIServer() as openai:
        config = engine_config(
            nats_url,
            directory / "data",
            tenants_file=str(tenants.path),
            mcp_servers_file=str(_mcp_file(directory)),
            model_chain="anthropic,openai_compatible",
            anthropic_api_key="test-key",
            anthropic_model="claude-test",
            anthropic_base_url=anthropic.url,
            openai_base_url=openai.url + "/v1",
            openai_model="gpt-test",
            max_turns_per_host=2,
            model_backoff_base_s=0.01,
        )
        engine = Engine(config)
        try:
            await engine.start()
            yield Rig(engine, anthropic, openai, keys)
        finally:
            await engine.close()
            await release_events_stream(nats_url, config.namespace)


@pytest.fixture
async def stub(rig: Rig) -> AsyncIterator[cs_grpc.ConversationServiceStub]:
    async with grpc.aio.insecure_channel(rig.engine.target) as channel:
        yield cs_grpc.ConversationServiceStub(channel)


def _refusal(exc: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str, str]:
    return exc.code(), exc.details() or "", dict(exc.trailing_metadata() or ()).get("salon-error-reason", "")


async def _fails(call: Any) -> tuple[grpc.StatusCode, str, str]:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return _refusal(exc)
    pytest.fail("the call succeeded")


async def test_a_client_tool_round_trip_continues_the_turn_and_is_in_history_and_memory(
    rig: Rig, stub: cs_grpc.ConversationServiceStub
) -> None:
    session_id = await rig.session(stub, tools=session_pb2.ToolSet(tools=[LOOKUP]))
    before = len(rig.anthropic.requests)
    rig.anthropic.push(
        Reply.calls(ToolUse("find_order", {"order_id": "42"}), text=["Let me ", "check. "], input_tokens=20),
        # Held until the second answer is in: otherwise the turn may finish first and refuse it as a finished
        # turn's call (checked below), not count it as the duplicate it is.
        Reply(tokens=["It ", "shipped."], input_tokens=30, gate_after=0),
    )
    watch = rig.watch(stub, session_id, "where is order 42?")
    [call_event] = await watch.until("tool_call")
    call = call_event.tool_call
    assert (call.tool, json.loads(call.arguments_json), call.round) == ("find_order", {"order_id": "42"}, 1)
    assert call.wait_deadline.seconds > 0 and not call.mcp_server
    assert len(rig.anthropic.requests) == before + 1, "the turn waits without asking the model again"
    unknown = await _fails(rig.submit(stub, watch, "toolu_unknown", result="x"))
    assert unknown[0] == grpc.StatusCode.NOT_FOUND and unknown[2] == "TOOL_CALL_NOT_FOUND"
    assert not (await rig.submit(stub, watch, call.call_id, result='{"status": "shipped"}')).duplicate
    assert (await rig.submit(stub, watch, call.call_id, result="again")).duplicate, "answered twice counts once"
    rig.anthropic.release()
    events = await watch.done()
    assert_well_formed(events, session_id)
    kinds = [e.WhichOneof("kind") for e in events]
    # A round's pieces may travel joined (one delta or two); rounds are never joined.
    runs = [k for n, k in enumerate(kinds) if not (k == "delta" and kinds[n - 1] == "delta")]
    assert runs == ["accepted", "delta", "tool_call", "tool_result", "delta", "usage", "completed"]
    assert "".join(e.delta.text for e in events if e.HasField("delta")) == "Let me check. It shipped."
    [result] = [e for e in events if e.HasField("tool_result")]
    assert result.tool_result.source == turn_pb2.TOOL_RESULT_SOURCE_CLIENT
    usage = events[-2].usage
    assert (usage.model_rounds, usage.input_tokens) == (2, 50), "every round counts"
    second = rig.anthropic.requests[before + 1].body
    assert [(r.call_id, r.content) for r in rig.anthropic.tool_results(second)] == [
        (call.call_id, '{"status": "shipped"}')
    ]
    assert rig.anthropic.tool_names(second) == ["find_order"]
    finished = await _fails(rig.submit(stub, watch, call.call_id, result="late"))
    assert finished == unknown, "a finished turn's call answers like an unknown one"

    history = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id), metadata=rig.acme)
    [turn] = history.turns
    assert (turn.model_rounds, turn.usage.model_rounds) == (2, 2)
    [entry] = turn.tool_calls
    assert (entry.call_id, entry.tool, entry.result, entry.round) == (
        call.call_id,
        "find_order",
        '{"status": "shipped"}',
        1,
    )
    assert entry.call_tokens > 0 and entry.result_tokens > 0 and entry.result_time.seconds > 0

    # Memory: the next turn's request holds the call and its result, together, before the new message.
    rig.anthropic.push(Reply(tokens=["Yes."]))
    follow = await rig.watch(stub, session_id, "thanks").done()
    body = rig.anthropic.requests[-1].body
    roles = [(m["role"], [b.get("type") for b in m["content"]]) for m in body["messages"]]
    assert roles == [
        ("user", ["text"]),
        ("assistant", ["text", "tool_use"]),
        ("user", ["tool_result"]),
        ("assistant", ["text"]),
        ("user", ["text"]),
    ]
    history = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id), metadata=rig.acme)
    window = history.turns[1].context.window
    assert [(w.role, w.tool_calls) for w in window] == [("user", 0), ("assistant", 1), ("tool", 1), ("assistant", 0)]
    assert follow[-1].HasField("completed")


async def test_parallel_calls_over_the_openai_protocol_continue_when_all_are_answered(
    rig: Rig, stub: cs_grpc.ConversationServiceStub
) -> None:
    model = session_pb2.ModelSettings(provider="openai_compatible")
    session_id = await rig.session(stub, tools=session_pb2.ToolSet(tools=[LOOKUP]), model=model)
    before = len(rig.openai.requests)
    rig.openai.push(
        Reply.calls(ToolUse("find_order", {"order_id": "1"}), ToolUse("find_order", {"order_id": "2"})),
        Reply(tokens=["Both ", "found."]),
    )
    watch = rig.watch(stub, session_id, "orders 1 and 2?")
    first, second = (e.tool_call for e in await watch.until("tool_call", 2))
    # One answer on the unary call, the other on a Converse stream (acknowledged there).
    assert not (await rig.submit(stub, watch, second.call_id, result="order 2: late")).duplicate
    await watch.until("tool_result")
    assert len(rig.openai.requests) == before + 1, "one of two answered: the turn still waits"

    async def requests() -> AsyncIterator[cs_pb2.ConverseRequest]:
        answer = cs_pb2.SubmitToolResultRequest(
            session_id=session_id, turn_id=watch.turn_id, call_id=first.call_id, error="the database is down"
        )
        yield cs_pb2.ConverseRequest(request_id="r1", submit_tool_result=answer)

    replies = [r async for r in stub.Converse(requests(), metadata=rig.acme)]
    assert [(r.ack.request_id, r.ack.session_id, r.ack.duplicate) for r in replies] == [("r1", session_id, False)]
    events = await watch.done()
    assert_well_formed(events, session_id)
    assert events[-1].HasField("completed")
    sent = rig.openai.tool_results(rig.openai.requests[before + 1].body)
    assert [(r.call_id, r.content) for r in sent] == [
        (first.call_id, "Error: the database is down"),  # the protocol has no error flag: the text says it
        (second.call_id, "order 2: late"),
    ]
    assert len(rig.openai.requests) == before + 2


async def test_an_mcp_tool_runs_on_the_host_and_its_output_reaches_the_model(
    rig: Rig, stub: cs_grpc.ConversationServiceStub
) -> None:
    session_id = await rig.session(stub, tools=session_pb2.ToolSet(mcp_servers=["local"]))
    before = len(rig.anthropic.requests)
    rig.anthropic.push(
        Reply.calls(ToolUse("lookup_order", {"order_id": "77"}), ToolUse("big", {"size": 5000})),
        Reply(tokens=["Found ", "it."]),
    )
    events = await rig.watch(stub, session_id, "find order 77").done()
    assert_well_formed(events, session_id)
    calls = [e.tool_call for e in events if e.HasField("tool_call")]
    assert [(c.tool, c.mcp_server, c.HasField("wait_deadline")) for c in calls] == [
        ("lookup_order", "local", False),
        ("big", "local", False),
    ]
    results = {e.tool_result.tool: e.tool_result for e in events if e.HasField("tool_result")}
    assert results["lookup_order"].source == turn_pb2.TOOL_RESULT_SOURCE_MCP
    assert results["lookup_order"].content_preview == "order 77: shipped"
    assert results["big"].is_error, "output over the server's cap becomes an error the model sees"
    offered = rig.anthropic.tool_names(rig.anthropic.requests[before].body)
    assert {"lookup_order", "add", "big"} <= set(offered)
    sent = {r.content for r in rig.anthropic.tool_results(rig.anthropic.requests[before + 1].body)}
    assert "order 77: shipped" in sent
    assert events[-1].HasField("completed")


async def test_approve_runs_the_call_and_reject_tells_the_model_why(
    rig: Rig, stub: cs_grpc.ConversationServiceStub
) -> None:
    session_id = await rig.session(stub, tools=session_pb2.ToolSet(tools=[REFUND], mcp_servers=["local"]))
    before = len(rig.anthropic.requests)
    rig.anthropic.push(
        Reply.calls(ToolUse("add", {"a": 2, "b": 3}), ToolUse("refund", {"order_id": "9"})),
        # Held until the repeated decision is in: otherwise the turn may finish first and refuse it as a finished
        # turn's call, not count it as the duplicate it is.
        Reply(tokens=["Done."], gate_after=0),
    )
    watch = rig.watch(stub, session_id, "add and refund")
    approvals = [e.approval_required for e in await watch.until("approval_required", 2)]
    add, refund = approvals
    assert (add.tool, add.mcp_server, refund.tool, refund.mcp_server) == ("add", "local", "refund", "")
    early = await _fails(rig.submit(stub, watch, refund.call_id, result="done"))
    assert early[0] == grpc.StatusCode.FAILED_PRECONDITION and early[2] == "TOOL_APPROVAL_PENDING"
    approved = await rig.decide(stub, watch, add.call_id, cs_pb2.APPROVAL_VERDICT_APPROVE)
    assert (approved.duplicate, approved.verdict) == (False, cs_pb2.APPROVAL_VERDICT_APPROVE)
    rejected = await rig.decide(stub, watch, refund.call_id, cs_pb2.APPROVAL_VERDICT_REJECT, "over the limit")
    assert not rejected.duplicate
    again = await rig.decide(stub, watch, refund.call_id, cs_pb2.APPROVAL_VERDICT_APPROVE)
    assert (again.duplicate, again.verdict) == (True, cs_pb2.APPROVAL_VERDICT_REJECT), "the first decision holds"
    rig.anthropic.release()
    events = await watch.done()
    assert_well_formed(events, session_id)
    decided = [e.approval_decided for e in events if e.HasField("approval_decided")]
    assert {(d.call_id, d.approved, d.approver) for d in decided} == {
        (add.call_id, True, "ann@example"),
        (refund.call_id, False, "ann@example"),
    }
    sent = {r.call_id: r for r in rig.anthropic.tool_results(rig.anthropic.requests[before + 1].body)}
    assert sent[add.call_id].content == "5"
    assert sent[refund.call_id].is_error and "over the limit" in sent[refund.call_id].content
    history = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id), metadata=rig.acme)
    recorded = {c.tool: c for c in history.turns[0].tool_calls}
    assert recorded["refund"].approval.approved is False and recorded["refund"].approval.decided_by.startswith("key:")
    assert recorded["add"].approval.approved and recorded["add"].source == turn_pb2.TOOL_RESULT_SOURCE_MCP


async def test_a_wait_past_its_deadline_ends_the_turn_with_a_clear_reason(
    rig: Rig, stub: cs_grpc.ConversationServiceStub
) -> None:
    settings = session_pb2.ToolSettings(wait_timeout=Duration(seconds=1))
    session_id = await rig.session(stub, tools=session_pb2.ToolSet(tools=[LOOKUP]), tool_settings=settings)
    rig.anthropic.push(Reply.calls(ToolUse("find_order", {"order_id": "5"})))
    events = await rig.watch(stub, session_id, "nobody will answer").done()
    assert_well_formed(events, session_id)
    assert [e.WhichOneof("kind") for e in events] == ["accepted", "tool_call", "tool_result", "usage", "error"]
    assert events[2].tool_result.source == turn_pb2.TOOL_RESULT_SOURCE_TIMEOUT
    assert (events[-1].error.reason, events[-1].error.retryable) == ("TOOL_WAIT_TIMEOUT", False)


async def test_a_waiting_turn_can_be_cancelled(rig: Rig, stub: cs_grpc.ConversationServiceStub) -> None:
    session_id = await rig.session(stub, tools=session_pb2.ToolSet(tools=[LOOKUP]))
    rig.anthropic.push(Reply.calls(ToolUse("find_order", {"order_id": "5"})))
    watch = rig.watch(stub, session_id, "wait for me")
    [call] = await watch.until("tool_call")
    await stub.CancelTurn(cs_pb2.CancelTurnRequest(session_id=session_id, turn_id=watch.turn_id), metadata=rig.acme)
    events = await watch.done()
    assert_well_formed(events, session_id)
    assert events[-1].HasField("cancelled")
    [result] = [e.tool_result for e in events if e.HasField("tool_result")]
    assert (result.call_id, result.source) == (call.tool_call.call_id, turn_pb2.TOOL_RESULT_SOURCE_CANCELLED)
    late = await _fails(rig.submit(stub, watch, call.tool_call.call_id, result="x"))
    assert late[2] == "TOOL_CALL_NOT_FOUND"


async def test_waiting_turns_hold_no_host_slot(rig: Rig, stub: cs_grpc.ConversationServiceStub) -> None:
    # The host takes 2 running turns (max_turns_per_host); three wait for tools and a fourth still runs.
    waiting = []
    for n in range(3):
        session_id = await rig.session(stub, tools=session_pb2.ToolSet(tools=[LOOKUP]))
        rig.anthropic.push(Reply.calls(ToolUse("find_order", {"order_id": str(n)})))
        watch = rig.watch(stub, session_id, f"order {n}")
        await watch.until("tool_call")
        waiting.append(watch)
    other = await rig.session(stub)
    rig.anthropic.push(Reply(tokens=["free"]))
    events = await rig.watch(stub, other, "am I refused?").done()
    assert events[-1].HasField("completed")
    for watch in waiting:
        call_id = watch.of("tool_call")[0].tool_call.call_id
        await rig.submit(stub, watch, call_id, result="ok")
        assert (await watch.done())[-1].HasField("completed")


async def test_bad_inputs_get_clear_statuses_and_never_echo(rig: Rig, stub: cs_grpc.ConversationServiceStub) -> None:
    cases: list[tuple[Any, str, str]] = [
        (
            session_pb2.ToolSet(tools=[session_pb2.Tool(name="ok_tool", input_schema_json=CANARY)]),
            "INVALID_TOOL",
            "tool #1",
        ),
        (
            session_pb2.ToolSet(
                tools=[session_pb2.Tool(name="bad", input_schema_json=json.dumps({"type": "string", "x": CANARY}))]
            ),
            "INVALID_TOOL",
            "tool #1",
        ),
        (session_pb2.ToolSet(tools=[session_pb2.Tool(name=CANARY + " !")]), "INVALID_TOOL", "tool #1"),
        (session_pb2.ToolSet(mcp_servers=["nowhere"]), "UNKNOWN_MCP_SERVER", "MCP server #1"),
    ]
    for tools, reason, named in cases:
        code, details, got = await _fails(
            stub.CreateSession(cs_pb2.CreateSessionRequest(tools=tools), metadata=rig.acme)
        )
        assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, reason)
        assert named in details and CANARY not in details and "nowhere" not in details
    session_id = await rig.session(stub, tools=session_pb2.ToolSet(tools=[LOOKUP]))
    bad_turn = cs_pb2.SendTurnRequest(session_id=session_id, text="hi", tools=cases[0][0])
    try:
        [r async for r in stub.SendTurn(bad_turn, metadata=rig.acme)]
        pytest.fail("the turn was taken")
    except grpc.aio.AioRpcError as exc:
        code, details, got = _refusal(exc)
    assert (code, got) == (grpc.StatusCode.INVALID_ARGUMENT, "INVALID_TOOL") and CANARY not in details
    settings = session_pb2.ToolSettings(max_model_rounds=1000)
    refused = await _fails(stub.CreateSession(cs_pb2.CreateSessionRequest(tool_settings=settings), metadata=rig.acme))
    assert refused[2] == "INVALID_TOOL_SETTINGS"

    rig.anthropic.push(Reply.calls(ToolUse("find_order", {"order_id": "3"})))
    watch = rig.watch(stub, session_id, "order 3")
    [call_event] = await watch.until("tool_call")
    call_id = call_event.tool_call.call_id
    big = await _fails(rig.submit(stub, watch, call_id, result=CANARY * 20_000))
    assert big[:1] == (grpc.StatusCode.INVALID_ARGUMENT,) and big[2] == "TOOL_RESULT_TOO_LARGE"
    assert CANARY not in big[1]
    empty = await _fails(rig.submit(stub, watch, call_id))
    assert empty[2] == "EMPTY_TOOL_RESULT"
    missing = await _fails(rig.submit(stub, watch, "toolu_nothing", result="x"))
    other_tenant = await _fails(rig.submit(stub, watch, call_id, md=rig.beta, result="x"))
    no_session = await _fails(
        stub.SubmitToolResult(
            cs_pb2.SubmitToolResultRequest(session_id="nope", turn_id=watch.turn_id, call_id=call_id, result="x"),
            metadata=rig.acme,
        )
    )
    assert missing == other_tenant == no_session, "another tenant's call answers exactly like a missing one"
    assert missing[0] == grpc.StatusCode.NOT_FOUND
    decision = await _fails(rig.decide(stub, watch, call_id, cs_pb2.APPROVAL_VERDICT_APPROVE))
    assert decision == missing, "a call that needs no approval has no decision to take"
    verdict = await _fails(rig.decide(stub, watch, call_id, cs_pb2.APPROVAL_VERDICT_UNSPECIFIED))
    assert verdict[2] == "INVALID_VERDICT"
    await rig.submit(stub, watch, call_id, result="fine")
    assert (await watch.done())[-1].HasField("completed")


async def _submit_until_taken(
    stub: cs_grpc.ConversationServiceStub, request: cs_pb2.SubmitToolResultRequest
) -> tuple[cs_pb2.SubmitToolResultResponse, list[str]]:
    """Submit, retrying while the owning host is away (UNAVAILABLE, with a retry hint)."""
    refusals: list[str] = []
    response: cs_pb2.SubmitToolResultResponse | None = None

    async def taken() -> bool:
        nonlocal response
        try:
            response = await stub.SubmitToolResult(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE, _refusal(exc)
            assert "salon-retry-after-ms" in dict(exc.trailing_metadata() or ())
            refusals.append(dict(exc.trailing_metadata() or ()).get("salon-error-reason", ""))
            return False
        return True

    try:
        await wait_for(taken, timeout_s=120, what="the result to be taken after the host restarted")
    except BaseException:
        print("refusals:", sorted(set(refusals)), len(refusals))  # what the client saw meanwhile
        raise
    assert response is not None
    return response, refusals


async def test_a_host_killed_while_a_turn_waits_loses_nothing_and_asks_the_model_once_per_round(
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
            ack_wait_s=2.0,
        )
        anthropic.push(
            Reply.calls(ToolUse("find_order", {"order_id": "8"}), text=["Checking. "]),
            Reply(tokens=["Order ", "8 ", "shipped."]),
        )
        async with grpc.aio.insecure_channel(engine.target) as channel:
            stub = cs_grpc.ConversationServiceStub(channel)
            session = await stub.CreateSession(cs_pb2.CreateSessionRequest(tools=session_pb2.ToolSet(tools=[LOOKUP])))
            session_id = session.session.session_id
            watch = Watch(stub, cs_pb2.SendTurnRequest(session_id=session_id, text="order 8?"), ())
            [call_event] = await watch.until("tool_call")
            assert len(anthropic.requests) == 1
            pid = engine.hosts.info[0]["pid"]
            os.kill(pid, signal.SIGKILL)

            request = cs_pb2.SubmitToolResultRequest(
                session_id=session_id, turn_id=watch.turn_id, call_id=call_event.tool_call.call_id, result="shipped"
            )
            response, refusals = await _submit_until_taken(stub, request)
            assert not response.duplicate
            assert set(refusals) <= {"HOST_UNAVAILABLE", "TURN_RESUMING"}
            events = await watch.done()
            finished = await _fails(stub.SubmitToolResult(request))
            history = await stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id))
    assert finished[:1] == (grpc.StatusCode.NOT_FOUND,), "the turn ended: its calls take no answer"
    assert_well_formed(events, session_id)
    kinds = [e.WhichOneof("kind") for e in events]
    assert kinds.count("tool_call") == 1 and kinds.count("accepted") == 1, "nothing sent twice"
    assert events[-1].HasField("completed")
    assert "".join(e.delta.text for e in events if e.HasField("delta")) == "Checking. Order 8 shipped."
    assert len(anthropic.requests) == 2, "exactly one model request per round, counted at the protocol server"
    [turn] = history.turns
    assert turn.model_rounds == 2 and [c.result for c in turn.tool_calls] == ["shipped"]
