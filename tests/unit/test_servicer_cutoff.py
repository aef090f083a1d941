"""A client that stops reading is cut off: the relay stops, then the call ends with SLOW_CONSUMER."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import grpc

from salon.engine.servicer import ConversationServicer
from salon.engine.streaming import StreamWriter
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2


class _Aborted(Exception):
    pass


class StuckContext:
    """A servicer context whose client reads one message and then nothing, until ``unstick``."""

    def __init__(self) -> None:
        self.written = 0
        self.gate = asyncio.Event()
        self.aborted: tuple[grpc.StatusCode, str] | None = None
        self.trailers: tuple[tuple[str, str], ...] = ()

    async def write(self, message: Any) -> None:
        self.written += 1
        if self.written > 1:
            await self.gate.wait()

    def set_trailing_metadata(self, md: tuple[tuple[str, str], ...]) -> None:
        self.trailers = md

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise _Aborted

    def invocation_metadata(self) -> tuple[()]:
        return ()

    def time_remaining(self) -> None:
        return None


class EndlessGateway:
    """Yields events forever and records whether its stream was closed."""

    def __init__(self) -> None:
        self.closed = asyncio.Event()

    async def send_turn(self, tenant: str, request: Any, **_: Any) -> AsyncIterator[turn_pb2.TurnEvent]:
        try:
            seq = 0
            while True:
                seq += 1
                yield turn_pb2.TurnEvent(session_id="s", turn_id="t", seq=seq, delta=turn_pb2.TokenDelta(text="x"))
                await asyncio.sleep(0)  # wait-ok: yields to the event loop once
        finally:
            self.closed.set()


async def test_a_stuck_reader_stops_the_relay_then_gets_slow_consumer() -> None:
    gateway = EndlessGateway()
    servicer = ConversationServicer(gateway, "default", write_timeout_s=0.05)  # type: ignore[arg-type]
    context = StuckContext()
    call = asyncio.create_task(servicer.SendTurn(cs_pb2.SendTurnRequest(session_id="s", text="hi"), context))
    await asyncio.wait_for(gateway.closed.wait(), 5)  # the relay stopped: its subscription is released
    assert context.aborted is None, "no status while the pending write is still in gRPC"
    context.gate.set()  # the client reads again (or leaves): the pending write drains
    with contextlib.suppress(_Aborted):
        await asyncio.wait_for(call, 5)
    assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(context.trailers)["salon-error-reason"] == "SLOW_CONSUMER"
    assert context.written == 2


async def _converse_requests(stop: asyncio.Event) -> AsyncIterator[cs_pb2.ConverseRequest]:
    yield cs_pb2.ConverseRequest(request_id="r1", send_turn=cs_pb2.SendTurnRequest(session_id="s", text="hi"))
    await stop.wait()  # the client keeps its side open (it sends nothing more)


async def test_a_stuck_converse_reader_stops_its_turns_then_gets_slow_consumer() -> None:
    gateway = EndlessGateway()
    servicer = ConversationServicer(gateway, "default", write_timeout_s=0.05)  # type: ignore[arg-type]
    context = StuckContext()
    stop = asyncio.Event()
    call = asyncio.create_task(servicer.Converse(_converse_requests(stop), context))
    await asyncio.wait_for(gateway.closed.wait(), 5)  # the turn's relay stopped: its subscription is released
    assert context.aborted is None, "no status while the pending write is still in gRPC"
    context.gate.set()
    with contextlib.suppress(_Aborted):
        await asyncio.wait_for(call, 5)
    stop.set()
    assert context.aborted is not None and context.aborted[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(context.trailers)["salon-error-reason"] == "SLOW_CONSUMER"
    assert context.written == 2


class QuickContext:
    """A client that takes every message at the next turn of the event loop."""

    def __init__(self) -> None:
        self.written = 0

    async def write(self, message: Any) -> None:
        await asyncio.sleep(0)  # wait-ok: the client takes the message at once
        self.written += 1

    def done(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False


async def test_a_stream_read_promptly_is_never_cut_however_long_it_lasts() -> None:
    # The timeout bounds each write, not the stream: one timer per stream must re-arm for the write pending.
    writer = StreamWriter(QuickContext(), 0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        while loop.time() - start < 0.5:
            await writer.write(cs_pb2.SendTurnResponse())
    finally:
        writer.close()
    assert not writer.stalled
