"""One ``Converse`` call: many turns over one bidirectional stream.

Requests are read as they come and each runs as its own job (send, resume or cancel a turn, answer a tool call
or decide an approval, each answered with a ``ConverseAck``); what the jobs produce goes out in the order
produced. A request that fails becomes a ``ConverseError`` message naming it and
the stream goes on; only the stream's own failures (a slow or vanished reader) end the call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from salon.engine.status import as_salon_errors, status_code
from salon.engine.streaming import StreamWriter
from salon.engine.turns import TenantTurns
from salon.otel import server_span
from salon.storage.errors import InvalidArgument, SalonError
from salon.storage.ids import is_valid_id
from salon.storage.reasons import Reason
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2

CONVERSE_BUFFER = 256
"""Events buffered per Converse stream before its turns wait for the client to read."""

Job = Callable[[], Awaitable[None]]


def converse_error(request_id: str, session_id: str, error: SalonError) -> cs_pb2.ConverseResponse:
    """The stream message saying that one request failed (ids echoed only when they are valid ids)."""
    return cs_pb2.ConverseResponse(
        error=cs_pb2.ConverseError(
            request_id=request_id if is_valid_id(request_id) else "",
            session_id=session_id if is_valid_id(session_id) else "",
            code=status_code(error).value[0],
            reason=str(error.reason),
            message=error.message,
        )
    )


def _valid(value: str) -> str:
    """An id echoed back only when it is a valid id (never arbitrary input)."""
    return value if is_valid_id(value) else ""


class ConverseCall:
    """Runs one Converse stream for ``turns``' tenant; :meth:`run` returns when the stream ends."""

    def __init__(self, turns: TenantTurns, metadata: Iterable[tuple[str, str | bytes]] | None, writer: StreamWriter):
        self._turns = turns
        self._metadata = metadata
        self._writer = writer
        self._out: asyncio.Queue[cs_pb2.ConverseResponse | None] = asyncio.Queue(maxsize=CONVERSE_BUFFER)
        self._jobs: set[asyncio.Task[None]] = set()

    async def run(self, requests: AsyncIterator[cs_pb2.ConverseRequest]) -> None:
        """Serve the stream until the client finished sending and its turns ended (or the client is gone)."""
        reader = asyncio.create_task(self._read(requests))
        # A stalled client stops the relaying at once (the pending write drains before SlowConsumer is raised).
        self._writer.on_stall(lambda: self._cancel(reader))
        try:
            while (item := await self._out.get()) is not None:
                await self._writer.write(item)
            await reader
        finally:
            # The client went away (or the stream ended): stop relaying. Turns themselves keep running (or
            # stop, under the cancel disconnect policy) and are recorded; their events stay resumable.
            self._writer.close()
            await self._stop(reader)

    def _cancel(self, reader: asyncio.Task[None]) -> None:
        reader.cancel()
        for task in self._jobs:
            task.cancel()

    async def _stop(self, reader: asyncio.Task[None]) -> None:
        tasks = [reader, *self._jobs]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _read(self, requests: AsyncIterator[cs_pb2.ConverseRequest]) -> None:
        try:
            async for request in requests:
                await self._dispatch(request)
            # The client finished sending: end the stream once its turns have ended.
            while self._jobs:
                await asyncio.gather(*list(self._jobs), return_exceptions=True)
        except Exception:
            await self._out.put(None)  # the writing side then meets this error when it awaits the reader
            raise
        await self._out.put(None)

    async def _dispatch(self, request: cs_pb2.ConverseRequest) -> None:
        request_id = request.request_id
        action = request.WhichOneof("action")
        if action == "send_turn":
            turn = request.send_turn
            self._start(request_id, turn.session_id, lambda: self._send(turn))
        elif action == "resume_turn":
            resume = request.resume_turn
            self._start(request_id, resume.session_id, lambda: self._relay(self._resumed(resume)))
        elif action == "cancel_turn":
            cancel = request.cancel_turn
            self._start(request_id, cancel.session_id, lambda: self._turns.cancel(cancel.session_id, cancel.turn_id))
        elif action in ("submit_tool_result", "decide_approval"):
            session_id = getattr(request, action).session_id
            self._start(request_id, session_id, lambda: self._answer(request))
        else:
            error = InvalidArgument("the request has no action", reason=Reason.EMPTY_REQUEST)
            await self._out.put(converse_error(request_id, "", error))

    def _start(self, request_id: str, session_id: str, job: Job) -> None:
        task = asyncio.ensure_future(self._reported(request_id, session_id, job))
        self._jobs.add(task)
        task.add_done_callback(self._jobs.discard)

    async def _reported(self, request_id: str, session_id: str, job: Job) -> None:
        """Run ``job``; its failure goes on the stream as an error naming the request, not ending the call."""
        try:
            with as_salon_errors():
                await job()
        except SalonError as exc:
            await self._out.put(converse_error(request_id, session_id, exc))

    async def _send(self, turn: cs_pb2.SendTurnRequest) -> None:
        # The span lives as long as the turn it stands for, like SendTurn's.
        with server_span("salon.gateway.Converse.turn", self._metadata) as span:
            await self._relay(await self._turns.send(turn, span.headers()))

    async def _answer(self, request: cs_pb2.ConverseRequest) -> None:
        """A tool result or an approval decision, acknowledged on the stream as the unary call answers it."""
        if request.HasField("submit_tool_result"):
            duplicate = (await self._turns.submit_tool_result(request.submit_tool_result)).duplicate
            session_id = request.submit_tool_result.session_id
        else:
            duplicate = (await self._turns.decide_approval(request.decide_approval)).duplicate
            session_id = request.decide_approval.session_id
        ack = cs_pb2.ConverseAck(request_id=_valid(request.request_id), session_id=session_id, duplicate=duplicate)
        await self._out.put(cs_pb2.ConverseResponse(ack=ack))

    def _resumed(self, resume: cs_pb2.ResumeTurnRequest) -> AsyncIterator[turn_pb2.TurnEvent]:
        return self._turns.resume(resume.session_id, resume.turn_id, resume.after_seq)

    async def _relay(self, events: AsyncIterator[Any]) -> None:
        async with contextlib.aclosing(events):  # type: ignore[type-var]
            async for event in events:
                await self._out.put(cs_pb2.ConverseResponse(event=event))
