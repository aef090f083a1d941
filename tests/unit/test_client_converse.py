"""Turns on one Converse stream: events sorted by turn, tool results and approvals sent on the stream and
acknowledged, errors routed to the request that caused them, a dropped stream reopened and its turns resumed.
Against a fake bidirectional call that plays the engine's side: no sockets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from salon.client import (
    ApprovalRequired,
    Completed,
    Conversation,
    Delta,
    RetryPolicy,
    SalonError,
    ToolCall,
    approve,
    tool,
)
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2

FAST = RetryPolicy(initial_backoff_s=0.0, max_backoff_s=0.0, max_retries=3)


class Bidi:
    """One Converse call: requests go to the engine, responses come back through ``read``."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.responses: asyncio.Queue[cs_pb2.ConverseResponse | grpc.aio.AioRpcError] = asyncio.Queue()
        self.written: list[cs_pb2.ConverseRequest] = []
        self.cancelled = False

    async def write(self, request: cs_pb2.ConverseRequest) -> None:
        if self.cancelled:
            raise grpc.aio.UsageError("the call is closed")
        self.written.append(request)
        self.engine.handle(self, request)

    async def read(self) -> Any:
        item = await self.responses.get()
        if isinstance(item, grpc.aio.AioRpcError):
            raise item
        return item

    def cancel(self) -> bool:
        self.cancelled = True
        return True

    def send(self, **kind: Any) -> None:
        self.responses.put_nowait(cs_pb2.ConverseResponse(**kind))


class FakeEngine:
    """Plays turns whose message is ``call NAME {json}`` (one client tool call, then the result as the answer)
    or anything else (two words, then completed). Keeps each turn's events for resume_turn."""

    def __init__(self) -> None:
        self.streams: list[Bidi] = []
        self.log: dict[str, list[turn_pb2.TurnEvent]] = {}
        self.bidi_of: dict[str, Bidi] = {}
        self.refuse_turns: dict[str, tuple[int, str]] = {}

    def Converse(self, **kwargs: Any) -> Bidi:
        bidi = Bidi(self)
        self.streams.append(bidi)
        return bidi

    async def CancelTurn(self, request: Any, **kwargs: Any) -> cs_pb2.CancelTurnResponse:
        return cs_pb2.CancelTurnResponse()

    def emit(self, turn_id: str, session_id: str, **kind: Any) -> None:
        events = self.log.setdefault(turn_id, [])
        event = turn_pb2.TurnEvent(session_id=session_id, turn_id=turn_id, seq=len(events) + 1, **kind)
        events.append(event)
        bidi = self.bidi_of.get(turn_id)
        if bidi is not None and not bidi.cancelled:
            bidi.send(event=event)

    def handle(self, bidi: Bidi, request: cs_pb2.ConverseRequest) -> None:
        action = request.WhichOneof("action")
        getattr(self, f"_on_{action}")(bidi, request)

    def _on_send_turn(self, bidi: Bidi, request: cs_pb2.ConverseRequest) -> None:
        turn = request.send_turn
        if turn.session_id in self.refuse_turns:
            code, reason = self.refuse_turns[turn.session_id]
            bidi.send(error=cs_pb2.ConverseError(request_id=request.request_id, code=code, reason=reason))
            return
        self.bidi_of[turn.idempotency_key] = bidi
        key, session = turn.idempotency_key, turn.session_id
        self.emit(key, session, accepted=turn_pb2.TurnAccepted())
        words = turn.text.split(maxsplit=2)
        if words[0] == "call":
            call = turn_pb2.ToolCall(call_id="c1", tool=words[1], arguments_json=words[2])
            self.emit(key, session, tool_call=call)
        elif words[0] == "approve":
            call = turn_pb2.ToolCall(call_id="c1", tool=words[1], requires_approval=True)
            self.emit(key, session, tool_call=call)
            self.emit(key, session, approval_required=turn_pb2.ApprovalRequired(call_id="c1", tool=words[1]))
        else:
            self.emit(key, session, delta=turn_pb2.TokenDelta(text=f"{words[0]} "))
            if words[0] != "hang":
                self._finish(key, session)

    def _on_resume_turn(self, bidi: Bidi, request: cs_pb2.ConverseRequest) -> None:
        resume = request.resume_turn
        self.bidi_of[resume.turn_id] = bidi
        for event in self.log.get(resume.turn_id, [])[resume.after_seq :]:
            bidi.send(event=event)

    def _on_submit_tool_result(self, bidi: Bidi, request: cs_pb2.ConverseRequest) -> None:
        submit = request.submit_tool_result
        if submit.call_id != "c1":
            bidi.send(
                error=cs_pb2.ConverseError(
                    request_id=request.request_id,
                    session_id=submit.session_id,
                    code=grpc.StatusCode.NOT_FOUND.value[0],
                    reason="TOOL_CALL_NOT_FOUND",
                    message="no such call",
                )
            )
            return
        bidi.send(ack=cs_pb2.ConverseAck(request_id=request.request_id, session_id=submit.session_id))
        text = getattr(submit, submit.WhichOneof("outcome"))
        self.emit(
            submit.turn_id, submit.session_id, tool_result=turn_pb2.ToolResult(call_id="c1", content_preview=text)
        )
        self.emit(submit.turn_id, submit.session_id, delta=turn_pb2.TokenDelta(text=text))
        self._finish(submit.turn_id, submit.session_id)

    def _on_decide_approval(self, bidi: Bidi, request: cs_pb2.ConverseRequest) -> None:
        decide = request.decide_approval
        bidi.send(ack=cs_pb2.ConverseAck(request_id=request.request_id, session_id=decide.session_id))
        approved = decide.verdict == cs_pb2.APPROVAL_VERDICT_APPROVE
        decided = turn_pb2.ApprovalDecided(call_id="c1", approved=approved, approver=decide.approver)
        self.emit(decide.turn_id, decide.session_id, approval_decided=decided)

    def _finish(self, turn_id: str, session_id: str) -> None:
        self.emit(turn_id, session_id, completed=turn_pb2.TurnCompleted(stop_reason=turn_pb2.STOP_REASON_END_TURN))

    def break_stream(self) -> None:
        bidi = self.streams[-1]
        bidi.responses.put_nowait(
            grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "cut")
        )


@tool
def shout(text: str) -> str:
    """Shouts."""
    return text.upper()


async def test_turns_of_two_sessions_share_the_stream_and_tool_results_travel_on_it() -> None:
    engine = FakeEngine()
    async with Conversation(engine, retry=FAST) as conversation:
        one = conversation.turn("s1", "call shout " + json.dumps({"text": "hey"}), tools=[shout], timeout_s=30)
        two = conversation.turn("s2", "plain words", timeout_s=30)
        first, second = await asyncio.gather(one.reply(), two.reply())
        assert first.text == "HEY" and first.outcome == "completed"
        assert second.text == "plain " and second.outcome == "completed"
        assert len(engine.streams) == 1 and conversation.streams_opened == 1
        actions = [r.WhichOneof("action") for r in engine.streams[0].written]
        assert sorted(actions) == ["send_turn", "send_turn", "submit_tool_result"]
        submitted = next(r.submit_tool_result for r in engine.streams[0].written if r.HasField("submit_tool_result"))
        assert (submitted.session_id, submitted.turn_id, submitted.result) == ("s1", one.turn_id, "HEY")
        assert {e.session_id for e in one.events} == {"s1"} and {e.session_id for e in two.events} == {"s2"}


async def test_approvals_and_manual_answers_go_on_the_stream_and_errors_come_back() -> None:
    engine = FakeEngine()
    async with Conversation(engine, retry=FAST) as conversation:
        turn = conversation.turn("s1", "approve shout", on_approval=lambda r: approve(approver="bot"), timeout_s=30)
        async for event in turn:
            if isinstance(event, ToolCall):
                with pytest.raises(SalonError) as info:
                    await turn.submit_tool_result("c-unknown", "x")
                assert info.value.code == grpc.StatusCode.NOT_FOUND and info.value.reason == "TOOL_CALL_NOT_FOUND"
            if isinstance(event, ApprovalRequired):
                pass  # the callback decides
            if type(event).__name__ == "ApprovalDecided":
                assert await turn.submit_tool_result("c1", "done") is False
        assert turn.text == "done" and isinstance(turn.final, Completed)
        decided = [r.decide_approval for r in engine.streams[0].written if r.HasField("decide_approval")]
        assert decided[0].approver == "bot" and decided[0].verdict == cs_pb2.APPROVAL_VERDICT_APPROVE


async def test_a_refused_turn_fails_alone() -> None:
    engine = FakeEngine()
    engine.refuse_turns["gone"] = (grpc.StatusCode.NOT_FOUND.value[0], "SESSION_NOT_FOUND")
    async with Conversation(engine, retry=FAST) as conversation:
        with pytest.raises(SalonError) as info:
            await conversation.turn("gone", "hello").wait()
        assert info.value.code == grpc.StatusCode.NOT_FOUND and info.value.reason == "SESSION_NOT_FOUND"
        assert (await conversation.turn("s1", "still fine").reply()).outcome == "completed"


async def test_a_dropped_stream_is_reopened_and_the_turn_resumed_without_repeats() -> None:
    engine = FakeEngine()
    async with Conversation(engine, retry=FAST) as conversation:
        turn = conversation.turn("s1", "hang on", timeout_s=30)
        async for event in turn:
            if isinstance(event, Delta) and conversation.streams_opened == 1:
                engine.break_stream()
                # The engine goes on while the client is away.
                engine.emit(turn.turn_id, "s1", delta=turn_pb2.TokenDelta(text="more "))
                engine._finish(turn.turn_id, "s1")
        assert [e.seq for e in turn.events] == list(range(1, 5))
        assert turn.text == "hang more " and turn.resumes == 1
        assert conversation.streams_opened == 2
        resume = engine.streams[1].written[0].resume_turn
        assert (resume.turn_id, resume.after_seq) == (turn.turn_id, 2)


async def test_closing_the_conversation_fails_its_open_turns() -> None:
    engine = FakeEngine()
    conversation = Conversation(engine, retry=FAST)
    await conversation.open()
    turn = conversation.turn("s1", "hang on")
    with pytest.raises(SalonError) as info:
        async for event in turn:
            if isinstance(event, Delta):
                await conversation.close()
    assert info.value.code == grpc.StatusCode.CANCELLED and turn.last_seq == 2
    await conversation.close()  # idempotent
    with pytest.raises(SalonError):
        await conversation.submit_tool_result("s1", turn.turn_id, "c1", result="late")
