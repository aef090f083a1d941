"""Many turns of many sessions on one ``Converse`` stream.

A :class:`Conversation` owns one bidirectional stream and a reader task that sorts what comes back: a turn's
events go to its :class:`ConverseTurn` (by turn id), acknowledgements and errors to the request that caused
them (by request id). Tool results and approval decisions travel on the stream too and wait for their
``ConverseAck``. When the stream fails, every turn on it sees the error and, when the retry policy allows,
opens it again (one new stream for all of them) and resumes with ``resume_turn`` after its last event (or
sends ``send_turn`` again with the same idempotency key if it saw none), as a :class:`~salon.client.Turn`
does over ``SendTurn``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import grpc

from salon.client.approvals import ApprovalHandler, Decision
from salon.client.errors import SalonError
from salon.client.messages import turn_request
from salon.client.policies import Disconnect, DoubleTexting
from salon.client.retry import RetryPolicy
from salon.client.tools import Toolbox, Tools
from salon.client.turn import BaseTurn
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2

__all__ = ["Conversation", "ConverseTurn"]

log = logging.getLogger("salon.client.converse")

_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _request_id() -> str:
    return uuid.uuid4().hex


def _error_of(error: cs_pb2.ConverseError) -> SalonError:
    return SalonError(_CODES.get(error.code, grpc.StatusCode.UNKNOWN), error.reason, error.message)


class Conversation:
    """One ``Converse`` stream carrying turns, tool results and approvals for any of the caller's sessions.

    Use as ``async with client.converse() as conversation`` (the stream opens on entry and is cancelled on
    exit; turns still open then fail with ``CANCELLED``). :meth:`turn` starts a turn on it.
    """

    def __init__(
        self,
        stub: Any,
        *,
        metadata: Sequence[tuple[str, str]] = (),
        retry: RetryPolicy | None = None,
        call_timeout_s: float | None = 30.0,
    ) -> None:
        self._stub = stub
        self._metadata = tuple(metadata)
        self._retry = retry or RetryPolicy()
        self._call_timeout_s = call_timeout_s
        self._call: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._open_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()
        self._turns: dict[str, ConverseTurn] = {}
        self._requests: dict[str, ConverseTurn] = {}
        self._pending: dict[str, asyncio.Future[cs_pb2.ConverseAck]] = {}
        self._closed = False
        self.streams_opened = 0
        """How many streams this conversation opened (more than one: it reconnected)."""

    async def __aenter__(self) -> Conversation:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Open the stream now (otherwise the first request does)."""
        await self._ensure_open()

    async def close(self) -> None:
        """Cancel the stream and the reader; open turns and unanswered requests fail. Idempotent. (The
        engine's turns go on or stop according to their disconnect policy, and stay resumable.)"""
        if self._closed:
            return
        self._closed = True
        closed = SalonError(grpc.StatusCode.CANCELLED, "CONVERSATION_CLOSED", "the conversation was closed")
        self._drop_stream(closed)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None

    def turn(
        self,
        session_id: str,
        text: str,
        *,
        idempotency_key: str | None = None,
        timeout_s: float | None = None,
        double_texting: DoubleTexting | None = None,
        disconnect_policy: Disconnect | None = None,
        metadata: Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        tools: Tools | None = None,
        mcp_servers: Sequence[str] | None = None,
        tool_wait_timeout_s: float | None = None,
        max_model_rounds: int | None = None,
        on_approval: ApprovalHandler | None = None,
        toolbox: Toolbox | None = None,
    ) -> ConverseTurn:
        """A new turn of ``session_id`` on this stream; the arguments are those of
        :meth:`Session.turn <salon.client.Session.turn>` (``toolbox``: functions answering its calls when
        ``tools`` are not given). Nothing is sent until iteration starts."""
        key = idempotency_key or str(uuid.uuid4())
        sent = Toolbox.of(tools, mcp_servers)
        request = turn_request(
            session_id,
            text,
            key,
            double_texting=double_texting,
            disconnect_policy=disconnect_policy,
            metadata=metadata,
            tools=sent,
            tool_wait_timeout_s=tool_wait_timeout_s,
            max_model_rounds=max_model_rounds,
        )
        return ConverseTurn(
            self,
            session_id=session_id,
            turn_id=key,
            request=request,
            timeout_s=timeout_s,
            retry=retry or self._retry,
            toolbox=sent if sent is not None else toolbox,
            on_approval=on_approval,
        )

    def resume_turn(
        self,
        session_id: str,
        turn_id: str,
        *,
        after_seq: int = 0,
        timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        tools: Tools | None = None,
        on_approval: ApprovalHandler | None = None,
    ) -> ConverseTurn:
        """An existing turn read from the event after ``after_seq`` (see :meth:`SalonClient.resume_turn
        <salon.client.SalonClient.resume_turn>`)."""
        return ConverseTurn(
            self,
            session_id=session_id,
            turn_id=turn_id,
            after_seq=after_seq,
            timeout_s=timeout_s,
            retry=retry or self._retry,
            toolbox=Toolbox.of(tools),
            on_approval=on_approval,
        )

    async def submit_tool_result(
        self, session_id: str, turn_id: str, call_id: str, *, result: str | None = None, error: str | None = None
    ) -> bool:
        """Answer a tool call on the stream with exactly one of ``result`` or ``error``; ``True`` when it already
        had an answer. Raises :class:`SalonError` with the status the unary call would get."""
        if (result is None) == (error is None):
            raise ValueError("give exactly one of result or error")
        request = cs_pb2.SubmitToolResultRequest(session_id=session_id, turn_id=turn_id, call_id=call_id)
        if error is not None:
            request.error = error
        else:
            request.result = result or ""
        ack = await self._ask(lambda rid: cs_pb2.ConverseRequest(request_id=rid, submit_tool_result=request))
        return ack.duplicate

    async def decide_approval(self, session_id: str, turn_id: str, call_id: str, decision: Decision) -> bool:
        """Approve or reject a call on the stream; ``True`` when it was already decided."""
        verdict = cs_pb2.APPROVAL_VERDICT_APPROVE if decision.approved else cs_pb2.APPROVAL_VERDICT_REJECT
        request = cs_pb2.DecideApprovalRequest(
            session_id=session_id,
            turn_id=turn_id,
            call_id=call_id,
            verdict=verdict,
            reason=decision.reason,
            approver=decision.approver,
        )
        ack = await self._ask(lambda rid: cs_pb2.ConverseRequest(request_id=rid, decide_approval=request))
        return ack.duplicate

    async def cancel_turn(self, session_id: str, turn_id: str, *, timeout_s: float | None = 10.0) -> None:
        """Stop a turn (the unary ``CancelTurn``: the stream's cancel answers only failures, this answers both)."""
        request = cs_pb2.CancelTurnRequest(session_id=session_id, turn_id=turn_id)
        try:
            await self._stub.CancelTurn(request, metadata=self._metadata, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise SalonError.from_rpc_error(exc) from None

    # The machinery.

    async def _ensure_open(self) -> None:
        if self._closed:
            raise SalonError(grpc.StatusCode.CANCELLED, "CONVERSATION_CLOSED", "the conversation was closed")
        async with self._open_lock:
            if self._call is not None:
                return
            call = self._stub.Converse(metadata=self._metadata)
            self._call = call
            self.streams_opened += 1
            self._reader = asyncio.ensure_future(self._read(call))

    async def _write(self, request: cs_pb2.ConverseRequest) -> None:
        await self._ensure_open()
        call = self._call
        try:
            async with self._write_lock:
                await call.write(request)
        except grpc.aio.AioRpcError as exc:
            raise SalonError.from_rpc_error(exc) from None
        except (grpc.aio.UsageError, asyncio.InvalidStateError, RuntimeError):
            raise SalonError(
                grpc.StatusCode.UNAVAILABLE, "CONVERSE_STREAM_CLOSED", "the Converse stream closed"
            ) from None

    async def _ask(self, build: Callable[[str], cs_pb2.ConverseRequest]) -> cs_pb2.ConverseAck:
        """Send a request that the engine acknowledges, and wait for its ``ConverseAck``."""
        request_id = _request_id()
        future: asyncio.Future[cs_pb2.ConverseAck] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._write(build(request_id))
            return await asyncio.wait_for(future, self._call_timeout_s)
        except asyncio.TimeoutError:  # noqa: UP041 (not TimeoutError before Python 3.11)
            raise SalonError(
                grpc.StatusCode.DEADLINE_EXCEEDED, "", "no acknowledgement on the Converse stream in time"
            ) from None
        finally:
            self._pending.pop(request_id, None)

    async def _read(self, call: Any) -> None:
        error: SalonError
        try:
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    error = SalonError(grpc.StatusCode.UNAVAILABLE, "STREAM_ENDED_EARLY", "the Converse stream ended")
                    break
                self._dispatch(response)
        except grpc.aio.AioRpcError as exc:
            error = SalonError.from_rpc_error(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not leave every turn waiting forever
            log.exception("the Converse reader failed")
            error = SalonError(grpc.StatusCode.INTERNAL, "CLIENT_READER_FAILED", str(exc))
        if self._call is call:
            self._drop_stream(error)

    def _drop_stream(self, error: SalonError) -> None:
        """Forget the stream; everything waiting on it gets ``error`` (turns then retry or fail)."""
        call, self._call = self._call, None
        if call is not None:
            call.cancel()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        for turn in {*self._turns.values(), *self._requests.values()}:
            turn._deliver(error)

    def _dispatch(self, response: cs_pb2.ConverseResponse) -> None:
        kind = response.WhichOneof("kind")
        if kind == "event":
            turn = self._turns.get(response.event.turn_id)
            if turn is not None:
                turn._deliver(response.event)
        elif kind == "ack":
            future = self._pending.get(response.ack.request_id)
            if future is not None and not future.done():
                future.set_result(response.ack)
        elif kind == "error":
            failed = response.error
            error = _error_of(failed)
            if (future := self._pending.get(failed.request_id)) is not None:
                if not future.done():
                    future.set_exception(error)
            elif (owner := self._requests.get(failed.request_id)) is not None:
                owner._deliver(error)
            else:
                log.warning("Converse error for no open request: %s", error)

    def _register(self, turn: ConverseTurn, request_id: str) -> None:
        self._turns[turn.turn_id] = turn
        self._requests[request_id] = turn

    def _unregister(self, turn: ConverseTurn, request_id: str) -> None:
        if self._turns.get(turn.turn_id) is turn:
            del self._turns[turn.turn_id]
        self._requests.pop(request_id, None)


class ConverseTurn(BaseTurn):
    """A turn carried by a :class:`Conversation`; the same interface as :class:`~salon.client.Turn` (typed
    events, ``text``, ``reply()``, tool calls answered as it streams), its answers sent on the stream."""

    def __init__(
        self,
        conversation: Conversation,
        *,
        session_id: str,
        turn_id: str,
        request: cs_pb2.SendTurnRequest | None = None,
        after_seq: int = 0,
        timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        toolbox: Toolbox | None = None,
        on_approval: ApprovalHandler | None = None,
    ) -> None:
        super().__init__(
            session_id=session_id,
            turn_id=turn_id,
            request=request,
            after_seq=after_seq,
            timeout_s=timeout_s,
            retry=retry,
            rng=rng,
            sleep=sleep,
            clock=clock,
            toolbox=toolbox,
            on_approval=on_approval,
        )
        self._conversation = conversation
        self._queue: asyncio.Queue[turn_pb2.TurnEvent | SalonError] | None = None

    async def cancel(self, *, timeout_s: float | None = 10.0) -> None:
        """Ask the engine to stop the turn; keep reading for the ``Cancelled`` event."""
        await self._conversation.cancel_turn(self._session_id, self._turn_id, timeout_s=timeout_s)

    async def submit_tool_result(self, call_id: str, result: str) -> bool:
        return await self._conversation.submit_tool_result(self._session_id, self._turn_id, call_id, result=result)

    async def submit_tool_error(self, call_id: str, error: str) -> bool:
        return await self._conversation.submit_tool_result(self._session_id, self._turn_id, call_id, error=error)

    async def decide_approval(self, call_id: str, decision: Decision) -> bool:
        return await self._conversation.decide_approval(self._session_id, self._turn_id, call_id, decision)

    def _deliver(self, item: turn_pb2.TurnEvent | SalonError) -> None:
        if self._queue is not None:
            self._queue.put_nowait(item)

    async def _attempt(self) -> AsyncGenerator[turn_pb2.TurnEvent, None]:
        self._calls += 1
        request_id = _request_id()
        if self._last_seq == 0 and self._request is not None:
            request = cs_pb2.ConverseRequest(request_id=request_id, send_turn=self._request)
        else:
            self._resumes += 1
            resume = cs_pb2.ResumeTurnRequest(
                session_id=self._session_id, turn_id=self._turn_id, after_seq=self._last_seq
            )
            request = cs_pb2.ConverseRequest(request_id=request_id, resume_turn=resume)
        queue: asyncio.Queue[turn_pb2.TurnEvent | SalonError] = asyncio.Queue()
        self._queue = queue
        self._conversation._register(self, request_id)
        try:
            await self._conversation._write(request)
            while True:
                remaining = self._remaining_s()
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except asyncio.TimeoutError:  # noqa: UP041 (not TimeoutError before Python 3.11)
                    raise SalonError(grpc.StatusCode.DEADLINE_EXCEEDED, "", "the turn's deadline passed") from None
                if isinstance(item, SalonError):
                    raise item
                yield item
        finally:
            self._queue = None
            self._conversation._unregister(self, request_id)
