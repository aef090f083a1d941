"""A turn answering its tool calls as it streams: functions run and their results submitted, approvals
decided by a callback or by hand, the answers' failures handled. Against a fake stub that plays the engine's
side of the protocol (events on the stream, SubmitToolResult / DecideApproval answered): no sockets."""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from salon.client import (
    ApprovalDecided,
    ApprovalRequired,
    Completed,
    Delta,
    RetryPolicy,
    SalonError,
    ToolCall,
    ToolResult,
    Turn,
    approve,
    reject,
    tool,
)
from salon.client import sync as salon_sync
from salon.client._loop import LoopThread
from salon.client.tools import Toolbox
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2

SESSION, KEY = "s1", "turn-1"
FAST = RetryPolicy(initial_backoff_s=0.0, max_backoff_s=0.0, max_retries=3)


def rpc_error(code: grpc.StatusCode, reason: str = "") -> grpc.aio.AioRpcError:
    trailers = grpc.aio.Metadata(("salon-error-reason", reason)) if reason else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailers, details=f"fake {code.name.lower()}")


class Stream:
    """The SendTurn call: yields what the fake engine emits, until a terminal event."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[turn_pb2.TurnEvent] = asyncio.Queue()
        self.cancelled = False

    def __aiter__(self) -> AsyncIterator[cs_pb2.SendTurnResponse]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[cs_pb2.SendTurnResponse]:
        while True:
            event = await self.queue.get()
            yield cs_pb2.SendTurnResponse(event=event)
            if event.WhichOneof("kind") in ("completed", "error", "cancelled"):
                return

    def cancel(self) -> bool:
        self.cancelled = True
        return True


class FakeEngine:
    """The engine's side of one turn. ``calls`` are emitted after ``accepted``; the turn answers with the words
    of the results once every client call is answered (approval calls wait for a decision first)."""

    def __init__(self, *calls: turn_pb2.ToolCall, replayed: bool = False) -> None:
        self.calls = list(calls)
        self.replayed = replayed
        self.stream = Stream()
        self.seq = 0
        self.submits: list[cs_pb2.SubmitToolResultRequest] = []
        self.decisions: list[cs_pb2.DecideApprovalRequest] = []
        self.submit_errors: list[grpc.aio.AioRpcError] = []
        self.results: dict[str, str] = {}
        self.on_submit: Callable[[cs_pb2.SubmitToolResultRequest], None] | None = None

    def emit(self, **kind: Any) -> None:
        self.seq += 1
        self.stream.queue.put_nowait(turn_pb2.TurnEvent(session_id=SESSION, turn_id=KEY, seq=self.seq, **kind))

    def SendTurn(self, request: cs_pb2.SendTurnRequest, **kwargs: Any) -> Stream:
        assert request.idempotency_key == KEY
        self.emit(accepted=turn_pb2.TurnAccepted(replayed=self.replayed))
        for call in self.calls:
            self.emit(tool_call=call)
            if call.requires_approval:
                self.emit(
                    approval_required=turn_pb2.ApprovalRequired(
                        call_id=call.call_id, tool=call.tool, arguments_json=call.arguments_json
                    )
                )
        self._maybe_finish()
        return self.stream

    def ResumeTurn(self, request: Any, **kwargs: Any) -> Stream:
        raise AssertionError("no resume expected")

    async def CancelTurn(self, request: Any, **kwargs: Any) -> cs_pb2.CancelTurnResponse:
        return cs_pb2.CancelTurnResponse()

    async def SubmitToolResult(
        self, request: cs_pb2.SubmitToolResultRequest, **kwargs: Any
    ) -> cs_pb2.SubmitToolResultResponse:
        self.submits.append(request)
        if self.submit_errors:
            raise self.submit_errors.pop(0)
        if self.on_submit is not None:
            self.on_submit(request)
        duplicate = request.call_id in self.results
        if not duplicate:
            outcome = request.WhichOneof("outcome")
            self.results[request.call_id] = getattr(request, outcome)
            self.emit(
                tool_result=turn_pb2.ToolResult(
                    call_id=request.call_id,
                    is_error=outcome == "error",
                    source=turn_pb2.TOOL_RESULT_SOURCE_CLIENT,
                    content_preview=getattr(request, outcome),
                )
            )
            self._maybe_finish()
        return cs_pb2.SubmitToolResultResponse(duplicate=duplicate)

    async def DecideApproval(
        self, request: cs_pb2.DecideApprovalRequest, **kwargs: Any
    ) -> cs_pb2.DecideApprovalResponse:
        self.decisions.append(request)
        approved = request.verdict == cs_pb2.APPROVAL_VERDICT_APPROVE
        self.emit(
            approval_decided=turn_pb2.ApprovalDecided(
                call_id=request.call_id, approved=approved, reason=request.reason, approver=request.approver
            )
        )
        if not approved:
            self.results[request.call_id] = f"rejected: {request.reason}"
            self.emit(
                tool_result=turn_pb2.ToolResult(
                    call_id=request.call_id, is_error=True, source=turn_pb2.TOOL_RESULT_SOURCE_REJECTED
                )
            )
            self._maybe_finish()
        return cs_pb2.DecideApprovalResponse(verdict=request.verdict)

    def _maybe_finish(self) -> None:
        client_calls = [c for c in self.calls if not c.mcp_server]
        if all(c.call_id in self.results for c in client_calls):
            for c in client_calls:
                self.emit(delta=turn_pb2.TokenDelta(text=f"[{self.results[c.call_id]}]"))
            self.emit(completed=turn_pb2.TurnCompleted(stop_reason=turn_pb2.STOP_REASON_END_TURN))


def call(call_id: str, name: str, approval: bool = False, mcp: str = "", **arguments: Any) -> turn_pb2.ToolCall:
    return turn_pb2.ToolCall(
        call_id=call_id, tool=name, arguments_json=json.dumps(arguments), requires_approval=approval, mcp_server=mcp
    )


def make_turn(engine: FakeEngine, tools: list[Any] | None = None, **kwargs: Any) -> Turn:
    request = cs_pb2.SendTurnRequest(session_id=SESSION, text="hi", idempotency_key=KEY)
    return Turn(
        engine,
        session_id=SESSION,
        turn_id=KEY,
        request=request,
        toolbox=Toolbox(tools) if tools is not None else None,
        retry=FAST,
        timeout_s=30.0,
        **kwargs,
    )


@tool
def add(a: int, b: int) -> int:
    """Adds two numbers."""
    return a + b


async def test_a_call_runs_the_function_and_the_turn_streams_on_with_its_result() -> None:
    engine = FakeEngine(call("c1", "add", a=2, b=3))
    turn = make_turn(engine, [add])
    events = [e async for e in turn]
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Accepted", "ToolCall", "ToolResult", "Delta", "Completed"]
    assert [(s.session_id, s.turn_id, s.call_id, s.result) for s in engine.submits] == [(SESSION, KEY, "c1", "5")]
    call_event = events[1]
    assert isinstance(call_event, ToolCall) and call_event.arguments == {"a": 2, "b": 3}
    assert turn.text == "[5]" and isinstance(turn.final, Completed)
    assert turn.tool_loop.answered["c1"].result == "5"


async def test_parallel_calls_run_at_once_and_each_is_answered() -> None:
    both_started = asyncio.Event()
    started: list[str] = []

    @tool
    async def slow(who: str) -> str:
        """Waits until both calls have started (so the test fails if they ran one after the other)."""
        started.append(who)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 10)
        return who.upper()

    engine = FakeEngine(call("c1", "slow", who="x"), call("c2", "slow", who="y"))
    reply = await make_turn(engine, [slow]).reply()
    assert sorted(s.result for s in engine.submits) == ["X", "Y"]
    assert reply.text == "[X][Y]" and reply.outcome == "completed"


async def test_a_failing_function_becomes_an_error_result_without_traceback() -> None:
    @tool
    def lookup(order_id: str) -> str:
        """Looks an order up."""
        raise LookupError(f"order {order_id} not found")

    engine = FakeEngine(call("c1", "lookup", order_id="A-1"))
    await make_turn(engine, [lookup]).wait()
    (submitted,) = engine.submits
    assert submitted.WhichOneof("outcome") == "error"
    assert submitted.error == "LookupError: order A-1 not found"


async def test_calls_the_client_cannot_answer_are_left_to_the_application() -> None:
    # An unknown tool and an MCP tool: nothing is submitted for them; the application answers by hand.
    engine = FakeEngine(call("c1", "unknown"), call("c2", "add", mcp="srv", a=1, b=1))
    turn = make_turn(engine, [add])
    async for event in turn:
        if isinstance(event, ToolCall) and event.runs_on_client:
            assert await turn.submit_tool_result(event.call_id, "by hand") is False
    assert [s.call_id for s in engine.submits] == ["c1"] and turn.text == "[by hand]"


async def test_an_approval_callback_approves_then_the_function_runs() -> None:
    seen: list[ApprovalRequired] = []

    def supervisor(request: ApprovalRequired) -> Any:
        seen.append(request)
        return approve("small amount", approver="policy-bot")

    engine = FakeEngine(call("c1", "add", approval=True, a=1, b=2))
    turn = make_turn(engine, [add], on_approval=supervisor)
    kinds = [type(e).__name__ async for e in turn]
    assert kinds == ["Accepted", "ToolCall", "ApprovalRequired", "ApprovalDecided", "ToolResult", "Delta", "Completed"]
    assert seen[0].arguments == {"a": 1, "b": 2}
    (decision,) = engine.decisions
    assert decision.verdict == cs_pb2.APPROVAL_VERDICT_APPROVE
    assert (decision.call_id, decision.reason, decision.approver) == ("c1", "small amount", "policy-bot")
    assert [s.result for s in engine.submits] == ["3"] and turn.tool_loop.decided["c1"].approved


async def test_a_rejection_never_runs_the_function() -> None:
    ran: list[int] = []

    @tool(requires_approval=True)
    def refund(amount: int) -> str:
        """Refunds."""
        ran.append(amount)
        return "refunded"

    async def supervisor(request: ApprovalRequired) -> Any:
        return reject("over the limit", approver="alice")

    engine = FakeEngine(call("c1", "refund", approval=True, amount=500))
    turn = make_turn(engine, [refund], on_approval=supervisor)
    await turn.wait()
    assert ran == [] and engine.submits == []
    assert (
        engine.decisions[0].verdict == cs_pb2.APPROVAL_VERDICT_REJECT and engine.decisions[0].reason == "over the limit"
    )
    decided = [e for e in turn.events if isinstance(e, ApprovalDecided)]
    assert decided[0].approved is False and decided[0].approver == "alice"
    assert turn.text == "[rejected: over the limit]"


async def test_without_a_callback_the_approval_is_yielded_and_decided_by_hand() -> None:
    engine = FakeEngine(call("c1", "add", approval=True, a=4, b=4))
    turn = make_turn(engine, [add])
    async for event in turn:
        if isinstance(event, ApprovalRequired):
            assert engine.decisions == []  # nothing decided behind the application's back
            await turn.approve(event.call_id, approver="me")
    assert engine.decisions[0].approver == "me" and [s.result for s in engine.submits] == ["8"]


async def test_a_call_no_longer_waiting_is_dropped_quietly() -> None:
    engine = FakeEngine(call("c1", "add", a=1, b=1))
    engine.submit_errors.append(rpc_error(grpc.StatusCode.NOT_FOUND, "TOOL_CALL_NOT_FOUND"))
    turn = make_turn(engine, [add])
    reading = asyncio.ensure_future(turn.wait())
    await _until(lambda: len(engine.submits) == 1)
    engine.emit(error=turn_pb2.TurnError(reason="TOOL_WAIT_TIMEOUT"))  # the engine gave up on the call
    final = await asyncio.wait_for(reading, 10)
    assert final.kind == "error" and len(engine.submits) == 1


async def test_unavailable_is_retried_and_an_oversized_result_becomes_an_error() -> None:
    @tool
    def big() -> str:
        """Returns a lot."""
        return "x" * 100

    engine = FakeEngine(call("c1", "big"))
    engine.submit_errors += [
        rpc_error(grpc.StatusCode.UNAVAILABLE),
        rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "TOOL_RESULT_TOO_LARGE"),
    ]
    turn = make_turn(engine, [big])
    await turn.wait()
    assert [s.WhichOneof("outcome") for s in engine.submits] == ["result", "result", "error"]
    assert "100 bytes" in engine.submits[-1].error
    assert turn.tool_loop.answered["c1"].error is not None


async def test_a_refused_answer_is_raised_while_the_turn_waits() -> None:
    engine = FakeEngine(call("c1", "add", a=1, b=1))
    engine.submit_errors.append(rpc_error(grpc.StatusCode.PERMISSION_DENIED, "FORBIDDEN"))
    turn = make_turn(engine, [add])
    with pytest.raises(SalonError) as info:
        async for _ in turn:
            pass
    assert info.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert engine.stream.cancelled  # the reading call was stopped, not left hanging


async def test_an_approval_callback_that_raises_surfaces_in_the_iteration() -> None:
    def broken(request: ApprovalRequired) -> Any:
        raise RuntimeError("approval service down")

    engine = FakeEngine(call("c1", "add", approval=True, a=1, b=1))
    with pytest.raises(RuntimeError, match="approval service down"):
        await make_turn(engine, [add], on_approval=broken).wait()
    assert engine.decisions == []


async def test_a_replayed_turn_runs_nothing_again() -> None:
    ran: list[int] = []

    @tool
    def count(n: int) -> int:
        """Counts."""
        ran.append(n)
        return n

    engine = FakeEngine(call("c1", "count", n=1), replayed=True)
    turn = make_turn(engine, [count])
    reading = asyncio.ensure_future(turn.wait())
    await _until(lambda: len(turn.events) >= 2)
    assert ran == [] and engine.submits == []
    reading.cancel()
    await asyncio.gather(reading, return_exceptions=True)
    await turn.aclose()


async def test_closing_the_turn_stops_its_running_calls() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @tool
    async def forever() -> str:
        """Never ends."""
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()
        return ""

    engine = FakeEngine(call("c1", "forever"))
    turn = make_turn(engine, [forever])
    async for event in turn:
        if isinstance(event, ToolCall):
            await asyncio.wait_for(started.wait(), 10)
            break
    await turn.aclose()
    assert cancelled.is_set() and engine.submits == []


async def test_a_result_arriving_from_elsewhere_stops_the_running_call() -> None:
    release = asyncio.Event()

    @tool
    async def waits() -> str:
        """Waits."""
        await release.wait()
        return "late"

    engine = FakeEngine(call("c1", "waits"))
    turn = make_turn(engine, [waits])
    async for event in turn:
        if isinstance(event, ToolCall):
            # Another client answers first (the engine keeps the first answer and says so).
            engine.results["c1"] = "other"
            engine.emit(tool_result=turn_pb2.ToolResult(call_id="c1", source=turn_pb2.TOOL_RESULT_SOURCE_CLIENT))
            engine._maybe_finish()
        if isinstance(event, ToolResult):
            release.set()
    assert engine.submits == [] and turn.text == "[other]"


def test_the_blocking_turn_runs_sync_tools_and_answers_by_hand() -> None:
    loop = LoopThread()
    try:
        threads: list[str] = []

        @tool
        def where(a: int) -> str:
            """Says which thread ran it."""
            threads.append(threading.current_thread().name)
            return str(a)

        async def build(engine: FakeEngine, tools: list[Any]) -> Turn:
            return make_turn(engine, tools)

        engine = FakeEngine(call("c1", "where", a=7))
        turn = salon_sync.Turn(loop, loop.run(build(engine, [where])))
        kinds = [type(e).__name__ for e in turn]
        assert kinds[-1] == "Completed" and turn.text == "[7]"
        assert threads and threads[0] not in ("MainThread", "salon-client-loop")

        manual = FakeEngine(call("c1", "nobody"))
        turn = salon_sync.Turn(loop, loop.run(build(manual, [])))
        for event in turn:
            if isinstance(event, ToolCall):
                assert turn.submit_tool_error(event.call_id, "not here") is False
            if isinstance(event, Delta):
                assert event.text == "[not here]"
        assert manual.submits[0].error == "not here"
    finally:
        loop.close()


async def _until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)  # wait-ok: polls a condition with a deadline


async def test_chat_shows_the_calls_and_puts_approvals_and_client_calls_to_the_person() -> None:
    from salon.client.chat import stream_turn

    engine = FakeEngine(call("c1", "refund", approval=True, amount=500), call("c2", "lookup", order="A-1"))
    answers = iter(["n", "too much", "shipped"])
    prompts: list[str] = []

    async def ask(prompt: str) -> str | None:
        prompts.append(prompt)
        return next(answers, None)

    class OneTurnSession:
        def turn(self, text: str) -> Turn:
            return make_turn(engine)

    out = io.StringIO()
    await stream_turn(OneTurnSession(), "refund A-1", out, ask)  # type: ignore[arg-type]
    text = out.getvalue()
    assert prompts == ["approve? [y/N] ", "reason (the model sees it)> ", "result of lookup> "]
    assert '[tool call refund {"amount": 500}]' in text and "[approval needed: refund" in text
    assert "[rejected by" in text and ": too much]" in text
    assert "[result of tool (client): shipped]" in text
    assert engine.decisions[0].verdict == cs_pb2.APPROVAL_VERDICT_REJECT and engine.decisions[0].reason == "too much"
    assert [(s.call_id, s.result) for s in engine.submits] == [("c2", "shipped")]
    assert text.index("[rejected") < text.index("result of tool") and "first token" in text


async def test_chat_rejects_when_the_input_ends_at_an_approval() -> None:
    from salon.client.chat import stream_turn

    engine = FakeEngine(call("c1", "refund", approval=True, amount=1))

    async def eof(prompt: str) -> str | None:
        return None

    class OneTurnSession:
        def turn(self, text: str) -> Turn:
            return make_turn(engine)

    await stream_turn(OneTurnSession(), "x", io.StringIO(), eof)  # type: ignore[arg-type]
    assert engine.decisions[0].verdict == cs_pb2.APPROVAL_VERDICT_REJECT


async def test_chat_reads_a_message_over_several_lines_ending_in_backslashes() -> None:
    from salon.client.chat import read_message

    lines = iter(["$CALL add {}\\", "then\\", "done", "next", "cut\\"])

    async def ask(prompt: str) -> str | None:
        return next(lines, None)

    assert await read_message(ask) == "$CALL add {}\nthen\ndone"
    assert await read_message(ask) == "next"
    assert await read_message(ask) == "cut"  # the input ended mid-message: what came is sent
    assert await read_message(ask) is None
