"""The clients' side of tools against a real engine (scripted model calling the tools its message names):
the Python client running registered functions over SendTurn and over Converse, approvals by callback and by
hand, the blocking client, ``salon-chat`` with piped standard input, and the Node client (its unit tests, and
``chat.js`` answering calls and approvals)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from salon.client import (
    ApprovalDecided,
    ApprovalRequired,
    Completed,
    Failed,
    SalonClient,
    SalonError,
    Tool,
    ToolCall,
    ToolError,
    ToolResult,
    approve,
    reject,
    tool,
)
from salon.client import sync as salon_sync
from salon.engine import Config, Engine
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2

ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = ROOT / "clients" / "node"
TOKENS = 40


@pytest.fixture(scope="module")
async def engine(nats_url: str, ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Engine]:
    """One engine for this module: the scripted model, answers of a few tokens."""
    engine = Engine(
        Config(
            data_dir=str(tmp_path_factory.mktemp("client-tools")),
            grpc_port=0,
            nats_url=nats_url,
            namespace=f"ctools{uuid.uuid4().hex[:8]}",
            num_hosts=2,
            num_shards=4,
            model_provider="scripted",
            scripted_tokens=TOKENS,
            shutdown_grace_s=2.0,
        )
    )
    await engine.start()
    yield engine
    await engine.close()


def script(*calls: tuple[str, dict[str, Any]], then: str = "got $RESULTS") -> str:
    """A message the scripted model answers by calling ``calls`` (one round, in parallel), then ``then``."""
    return "\n".join([*(f"$CALL {name} {json.dumps(args)}" for name, args in calls), then])


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order by its id.

    Args:
        order_id: The order's id.
    """
    if order_id == "missing":
        raise ToolError(f"no order {order_id}")
    return {"order_id": order_id, "status": "shipped"}


@tool
async def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


@tool(requires_approval=True)
def refund(order_id: str, amount: int) -> str:
    """Refunds an order."""
    return f"refunded{amount}"


async def history_calls(client: SalonClient, session_id: str) -> list[turn_pb2.ToolCallRecord]:
    response = await client.stub.GetHistory(cs_pb2.GetHistoryRequest(session_id=session_id))
    return [call for turn in response.turns for call in turn.tool_calls]


async def test_registered_functions_answer_the_model_over_send_turn(engine: Engine) -> None:
    async with SalonClient(engine.target, timeout_s=10.0) as client:
        session = await client.create_session(tools=[lookup_order, add])
        assert [t.name for t in session.proto.tools.tools] == ["lookup_order", "add"]
        turn = session.turn(script(("lookup_order", {"order_id": "A-1"}), ("add", {"a": 2, "b": 40})), timeout_s=60)
        events = [e async for e in turn]
        calls = [e for e in events if isinstance(e, ToolCall)]
        results = {e.call_id: e for e in events if isinstance(e, ToolResult)}
        assert [c.tool for c in calls] == ["lookup_order", "add"]
        assert {r.source for r in results.values()} == {"client"} and not any(r.is_error for r in results.values())
        assert isinstance(turn.final, Completed), turn.final
        assert "42" in turn.text and "shipped" in turn.text
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        recorded = await history_calls(client, session.id)
        assert {c.tool: c.result for c in recorded} == {"lookup_order": json.dumps(
            {"order_id": "A-1", "status": "shipped"}), "add": "42"}  # fmt: skip

        # A function's error is an error result the model reads; the turn completes.
        reply = await session.ask(script(("lookup_order", {"order_id": "missing"})), timeout_s=60)
        assert reply.outcome == "completed" and "no order missing" in reply.text


async def test_per_turn_tools_replace_the_sessions_and_unknown_calls_are_answered_by_hand(engine: Engine) -> None:
    async with SalonClient(engine.target, timeout_s=10.0) as client:
        session = await client.create_session(tools=[lookup_order])
        manual = Tool(name="ask_human", description="Asks a human.", input_schema={"type": "object"})
        turn = session.turn(script(("ask_human", {})), tools=[manual], timeout_s=60)
        async for event in turn:
            if isinstance(event, ToolCall):
                assert event.tool == "ask_human" and event.runs_on_client
                assert await turn.submit_tool_result(event.call_id, "forty-two") is False
                # Counts once: a duplicate while the turn goes on; once it has ended, the call is not found.
                try:
                    assert await turn.submit_tool_result(event.call_id, "again") is True
                except SalonError as error:
                    assert error.code == grpc.StatusCode.NOT_FOUND
        assert isinstance(turn.final, Completed) and "forty-two" in turn.text and "again" not in turn.text
        with pytest.raises(SalonError) as info:
            await turn.submit_tool_result("call_9_9", "late")
        assert info.value.code == grpc.StatusCode.NOT_FOUND


async def test_approval_by_callback_and_by_hand(engine: Engine) -> None:
    decided: list[str] = []

    def supervisor(request: ApprovalRequired) -> Any:
        decided.append(request.call_id)
        if request.arguments["amount"] <= 50:
            return approve("fine", approver="policy")
        return reject("too much", approver="policy")

    async with SalonClient(engine.target, timeout_s=10.0) as client:
        session = await client.create_session(tools=[refund], on_approval=supervisor)
        small = await session.ask(script(("refund", {"order_id": "A", "amount": 20})), timeout_s=60)
        assert small.outcome == "completed" and "refunded20" in small.text
        large = await session.ask(script(("refund", {"order_id": "A", "amount": 500})), timeout_s=60)
        assert large.outcome == "completed" and "refunded500" not in large.text and "too much" in large.text
        assert len(decided) == 2
        records = await history_calls(client, session.id)
        assert [(r.approval.approved, r.approval.approver) for r in records] == [(True, "policy"), (False, "policy")]

        # No callback (the same session, its functions attached without one): the application decides.
        by_hand = await client.get_session(session.id, tools=[refund])
        turn = by_hand.turn(script(("refund", {"order_id": "B", "amount": 7})), timeout_s=60)
        kinds = []
        async for event in turn:
            kinds.append(event.kind)
            if isinstance(event, ApprovalRequired):
                await turn.approve(event.call_id, approver="me")
            if isinstance(event, ApprovalDecided):
                assert event.approved and event.approver == "me"
        assert "approval_required" in kinds and "refunded7" in turn.text


async def test_turns_and_their_answers_on_one_converse_stream(engine: Engine) -> None:
    async with SalonClient(engine.target, timeout_s=10.0) as client:
        first = await client.create_session(tools=[add])
        second = await client.create_session(tools=[refund], on_approval=lambda r: approve(approver="bot"))
        async with client.converse() as conversation:
            one = first.converse(conversation, script(("add", {"a": 1, "b": 2})), timeout_s=60)
            two = second.converse(conversation, script(("refund", {"order_id": "C", "amount": 3})), timeout_s=60)
            replies = await asyncio.gather(one.reply(), two.reply())
            assert [r.outcome for r in replies] == ["completed", "completed"]
            assert "3" in replies[0].text and "refunded3" in replies[1].text
            assert conversation.streams_opened == 1
            with pytest.raises(SalonError) as info:
                await conversation.submit_tool_result(first.id, one.turn_id, "call_1_1", result="late")
            assert info.value.code == grpc.StatusCode.NOT_FOUND


def _blocking(target: str) -> tuple[str, list[str]]:
    threads: list[str] = []

    def where(a: int) -> str:
        """Says which thread ran it."""
        threads.append(threading.current_thread().name)
        return f"ran{a}"

    with salon_sync.SalonClient(target, timeout_s=10.0) as client:
        session = client.create_session(tools=[where])
        reply = session.ask(script(("where", {"a": 5})), timeout_s=60)
        return reply.text, threads


async def test_the_blocking_client_runs_sync_functions(engine: Engine) -> None:
    text, threads = await asyncio.to_thread(_blocking, engine.target)
    assert "ran5" in text and len(threads) == 1


async def test_a_wait_deadline_ends_the_turn(engine: Engine) -> None:
    never = Tool(name="never", input_schema={"type": "object"})
    async with SalonClient(engine.target, timeout_s=10.0) as client:
        session = await client.create_session(tools=[never], tool_wait_timeout_s=1.0)
        turn = session.turn(script(("never", {})), timeout_s=60)
        await turn.wait()
        assert isinstance(turn.final, Failed) and turn.final.reason == "TOOL_WAIT_TIMEOUT"


# --- salon-chat with piped standard input -------------------------------------------------------------------


async def _run(*args: str, stdin: str = "", cwd: Path = ROOT, timeout_s: float = 120) -> tuple[int, str, str]:
    # Not subprocess.run: the engine serves on this event loop, which must keep running meanwhile.
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALON_")}
    proc = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout_s)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_salon_chat_shows_calls_and_asks_for_approval_and_results(engine: Engine) -> None:
    async with SalonClient(engine.target, timeout_s=10.0) as client:
        declared = [
            Tool(name="refund", input_schema={"type": "object"}, requires_approval=True),
            Tool(name="lookup", input_schema={"type": "object"}),
        ]
        session = await client.create_session(tools=declared)
        rejected = script(("refund", {"amount": 500}))
        approved = script(("refund", {"amount": 5}))
        answered = script(("lookup", {"id": "A-1"}))
        # A message of several lines: each line but the last ends with a backslash.
        lines = [rejected, "n", "over the limit", approved, "y", "done5", answered, "shipped", "/quit"]
        stdin = "\n".join(line.replace("\n", "\\\n") for line in lines) + "\n"
    code, out, err = await _run(
        sys.executable, "-m", "salon.client.chat", "--target", engine.target, "--session", session.id, stdin=stdin
    )
    assert code == 0, err
    assert "[tool call refund" in out and "approve? [y/N]" in out and "reason (the model sees it)>" in out
    assert "[rejected by" in out and "over the limit" in out
    assert "[approved by" in out and "result of refund>" in out
    assert "result of lookup>" in out and "shipped" in out
    records = await _records(engine, session.id)
    assert [(r.tool, r.approval.approved if r.HasField("approval") else None, r.result) for r in records][1:] == [
        ("refund", True, "done5"),
        ("lookup", None, "shipped"),
    ]


async def _records(engine: Engine, session_id: str) -> list[turn_pb2.ToolCallRecord]:
    async with SalonClient(engine.target, timeout_s=10.0) as client:
        return await history_calls(client, session_id)


# --- the Node client ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
async def node() -> str:
    """The node binary, with the client's dependencies installed (``make node-setup`` does it too)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js client cannot be run")
    if not (NODE_CLIENT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        npm = shutil.which("npm")
        assert npm is not None, "node is installed but npm is not"
        code, out, err = await _run(npm, "ci", "--no-audit", "--no-fund", cwd=NODE_CLIENT, timeout_s=300)
        assert code == 0, f"npm ci failed:\n{out}\n{err}"
    return node


async def test_node_unit_tests_pass(node: str) -> None:
    code, out, err = await _run(node, "--test", cwd=NODE_CLIENT)
    assert code == 0, out + err
    assert "# fail 0" in out


async def test_node_chat_answers_calls_and_approvals(engine: Engine, node: str, tmp_path: Path) -> None:
    chat = str(NODE_CLIENT / "chat.js")
    tools = tmp_path / "tools.json"
    tools.write_text(
        json.dumps(
            [
                {"name": "lookup", "description": "Looks up.", "input_schema": {"type": "object"}},
                {"name": "refund", "input_schema": {"type": "object"}, "requires_approval": True},
            ]
        )
    )
    code, out, err = await _run(
        node, chat, "--target", engine.target, "--tools", str(tools), "--tool-result", "found-it",
        "--text", script(("lookup", {"id": 1})),
    )  # fmt: skip
    assert code == 0, err
    assert "[tool call lookup" in err and "found-it" in out and "completed" in err

    code, out, err = await _run(
        node, chat, "--target", engine.target, "--tools", str(tools), "--reject", "not today",
        "--text", script(("refund", {"amount": 9})),
    )  # fmt: skip
    assert code == 0, err
    assert "[rejected by salon-chat-node: not today]" in err and "not today" in out

    # Nothing on the command line: the approval and the result are asked on standard input.
    code, out, err = await _run(
        node, chat, "--target", engine.target, "--tools", str(tools), "--text", script(("refund", {"amount": 1})),
        stdin="y\nrefunded-one\n",
    )  # fmt: skip
    assert code == 0, err
    assert "approve refund" in err and "result of refund>" in err and "refunded-one" in out
