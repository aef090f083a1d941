"""One Converse stream: each request's failure becomes an error message on the stream; the stream ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc
import pytest

from salon.engine.converse import ConverseCall
from salon.engine.streaming import StreamWriter
from salon.storage.errors import InvalidArgument, NotFound
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2


class Context:
    """What a StreamWriter needs of a servicer context: the messages written."""

    def __init__(self) -> None:
        self.written: list[cs_pb2.ConverseResponse] = []

    async def write(self, message: cs_pb2.ConverseResponse) -> None:
        self.written.append(message)

    def done(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False


class Turns:
    """A tenant's turns: session "s" answers with one event; any other session does not exist."""

    tenant = "t"

    def __init__(self) -> None:
        self.cancelled: list[tuple[str, str]] = []

    async def send(
        self, request: cs_pb2.SendTurnRequest, trace_headers: Mapping[str, str], timeout_s: float | None = None
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        if request.session_id != "s":
            raise NotFound("session not found", reason="SESSION_NOT_FOUND")
        return self._events(request.session_id)

    def resume(
        self, session_id: str, turn_id: str, after_seq: int, timeout_s: float | None = None
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        return self._events(session_id)

    async def cancel(self, session_id: str, turn_id: str) -> None:
        self.cancelled.append((session_id, turn_id))

    async def _events(self, session_id: str) -> AsyncIterator[turn_pb2.TurnEvent]:
        if session_id != "s":
            raise NotFound("session not found", reason="SESSION_NOT_FOUND")
        yield turn_pb2.TurnEvent(session_id=session_id, turn_id="u", seq=1, delta=turn_pb2.TokenDelta(text="hi"))


async def _requests(*requests: cs_pb2.ConverseRequest) -> AsyncIterator[cs_pb2.ConverseRequest]:
    for request in requests:
        yield request


def _call(context: Context, turns: Turns) -> ConverseCall:
    return ConverseCall(turns, (), StreamWriter(context, 5.0))  # type: ignore[arg-type]


def _by_request(written: list[cs_pb2.ConverseResponse]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for message in written:
        if message.HasField("error"):
            out[message.error.request_id] = (message.error.reason, message.error.code, message.error.session_id)
        else:
            out.setdefault("events", []).append(message.event.delta.text)
    return out


async def test_each_request_is_answered_and_failures_name_their_request() -> None:
    context, turns = Context(), Turns()
    requests = _requests(
        cs_pb2.ConverseRequest(request_id="r1", send_turn=cs_pb2.SendTurnRequest(session_id="s", text="hi")),
        cs_pb2.ConverseRequest(request_id="r2", send_turn=cs_pb2.SendTurnRequest(session_id="gone", text="hi")),
        cs_pb2.ConverseRequest(request_id="r3", resume_turn=cs_pb2.ResumeTurnRequest(session_id="gone", turn_id="u")),
        cs_pb2.ConverseRequest(request_id="r4", cancel_turn=cs_pb2.CancelTurnRequest(session_id="s", turn_id="u")),
        cs_pb2.ConverseRequest(request_id="r5"),
    )
    await asyncio.wait_for(_call(context, turns).run(requests), 5)
    not_found = grpc.StatusCode.NOT_FOUND.value[0]
    assert _by_request(context.written) == {
        "events": ["hi"],
        "r2": ("SESSION_NOT_FOUND", not_found, "gone"),
        "r3": ("SESSION_NOT_FOUND", not_found, "gone"),
        "r5": ("EMPTY_REQUEST", grpc.StatusCode.INVALID_ARGUMENT.value[0], ""),
    }
    assert turns.cancelled == [("s", "u")]


async def test_a_failing_request_stream_ends_the_call_with_its_error() -> None:
    async def broken() -> AsyncIterator[cs_pb2.ConverseRequest]:
        yield cs_pb2.ConverseRequest(request_id="r1", send_turn=cs_pb2.SendTurnRequest(session_id="s", text="hi"))
        raise InvalidArgument("the request is not a valid message of this method")

    with pytest.raises(InvalidArgument):
        await asyncio.wait_for(_call(Context(), Turns()).run(broken()), 5)
