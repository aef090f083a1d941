"""A turn in flight: an async iterator of typed events that survives a dropped stream.

The engine numbers a turn's events 1, 2, 3 … and keeps them replayable, and a ``SendTurn`` repeated with the
same idempotency key is the same turn. So when the stream fails with a retryable status (UNAVAILABLE by
default: the gateway died, the connection was cut), the turn calls again after a jittered backoff:
``ResumeTurn(after_seq=<last seen>)`` once it has seen an event, or ``SendTurn`` with the same key before
that. Events already seen are dropped, so the caller sees every event exactly once, in order.

A turn also answers its tool calls: given a :class:`~salon.client.tools.Toolbox` it runs the functions the
model calls and submits their results, and given an approval callback it decides the calls that wait for a
person (see :mod:`salon.client.tool_loop`); whatever it is not given is left to the application, which sees
every event and answers with :meth:`BaseTurn.submit_tool_result`, :meth:`BaseTurn.approve` and the like.
:class:`BaseTurn` holds what a turn is and sees whatever carries it; :class:`Turn` carries it over
``SendTurn``/``ResumeTurn`` and the unary tool RPCs, :class:`salon.client.converse.ConverseTurn` over a
``Converse`` stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

import grpc

from salon.client.approvals import ApprovalHandler, Decision
from salon.client.errors import SalonError
from salon.client.events import (
    TERMINAL_KINDS,
    Cancelled,
    Completed,
    Delta,
    Event,
    Failed,
    TerminalEvent,
    event_from_proto,
)
from salon.client.reply import Reply
from salon.client.retry import RetryPolicy
from salon.client.tool_loop import ToolLoop
from salon.client.tools import Toolbox
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2


class TurnStub(Protocol):
    """The part of ``ConversationServiceStub`` a turn uses (a fake in tests)."""

    def SendTurn(self, request: cs_pb2.SendTurnRequest, **kwargs: Any) -> Any: ...

    def ResumeTurn(self, request: cs_pb2.ResumeTurnRequest, **kwargs: Any) -> Any: ...

    def CancelTurn(self, request: cs_pb2.CancelTurnRequest, **kwargs: Any) -> Any: ...

    def SubmitToolResult(self, request: cs_pb2.SubmitToolResultRequest, **kwargs: Any) -> Any: ...

    def DecideApproval(self, request: cs_pb2.DecideApprovalRequest, **kwargs: Any) -> Any: ...


_Item = tuple[turn_pb2.TurnEvent, Event | None]
_Self = TypeVar("_Self", bound="BaseTurn")


class BaseTurn:
    """One turn: ``async for event in turn`` yields typed events, ending after the terminal one.

    Nothing is sent until iteration starts. A turn can be iterated once, either as typed events or, with
    :meth:`protos`, as ``salon.v1.TurnEvent`` messages. ``timeout_s`` bounds the whole turn, retries
    included. ``toolbox`` holds the functions that answer its tool calls, ``on_approval`` decides the calls
    that wait for a person; both may be left out.
    """

    def __init__(
        self,
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
        if request is not None and request.idempotency_key != turn_id:
            raise ValueError("a new turn is named by its idempotency key: request.idempotency_key must be turn_id")
        if not turn_id:
            raise ValueError("turn_id must not be empty")
        self._session_id = session_id
        self._turn_id = turn_id
        self._key = turn_id
        self._request = request
        self._timeout_s = timeout_s
        self._retry = retry or RetryPolicy()
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._clock = clock
        self._deadline: float | None = None
        self._last_seq = after_seq
        self._protos: list[turn_pb2.TurnEvent] = []
        self._events: list[Event] = []
        self._parts: list[str] = []
        self._final: TerminalEvent | None = None
        self._started_at: float | None = None
        self._ttft: float | None = None
        self._calls = 0
        self._resumes = 0
        self._source: AsyncGenerator[_Item, None] | None = None
        self._view: AsyncIterator[Any] | None = None
        self._typed: AsyncIterator[Event] | None = None
        self._tools = ToolLoop(self, toolbox, on_approval, retry=self._retry, rng=self._rng, sleep=sleep, clock=clock)

    # What the turn is and what it has seen so far.

    @property
    def session_id(self) -> str:
        """The session the turn belongs to."""
        return self._session_id

    @property
    def turn_id(self) -> str:
        """The turn's id (the idempotency key it was sent with)."""
        return self._turn_id

    @property
    def idempotency_key(self) -> str:
        """The key that makes a resent turn the same turn (the engine names the turn by it)."""
        return self._key

    @property
    def text(self) -> str:
        """The answer so far (every delta seen, in order)."""
        return "".join(self._parts)

    @property
    def events(self) -> tuple[Event, ...]:
        """The typed events seen so far."""
        return tuple(self._events)

    @property
    def proto_events(self) -> tuple[turn_pb2.TurnEvent, ...]:
        """The ``salon.v1.TurnEvent`` messages seen so far."""
        return tuple(self._protos)

    @property
    def last_seq(self) -> int:
        """Sequence number of the last event seen (0: none yet)."""
        return self._last_seq

    @property
    def final(self) -> TerminalEvent | None:
        """The terminal event, once the turn has ended."""
        return self._final

    @property
    def done(self) -> bool:
        """Whether the terminal event has been seen."""
        return self._final is not None

    @property
    def time_to_first_token_s(self) -> float | None:
        """Seconds from the first call to the first delta."""
        return self._ttft

    @property
    def retries(self) -> int:
        """Calls made after the first one (SendTurn again or ResumeTurn)."""
        return max(self._calls - 1, 0)

    @property
    def resumes(self) -> int:
        """ResumeTurn calls made."""
        return self._resumes

    @property
    def tool_loop(self) -> ToolLoop:
        """What the turn did about its tool calls (``answered``, ``decided``)."""
        return self._tools

    # Iteration.

    def __aiter__(self: _Self) -> _Self:
        return self

    async def __anext__(self) -> Event:
        if self._typed is None:
            self._typed = self._typed_view(self._claim())
            self._view = self._typed
        return await self._typed.__anext__()

    def protos(self) -> AsyncIterator[turn_pb2.TurnEvent]:
        """Iterate over the turn as ``salon.v1.TurnEvent`` messages instead of typed events."""
        view = self._proto_view(self._claim())
        self._view = view
        return view

    async def wait(self) -> TerminalEvent:
        """Read the turn to its end and return the terminal event."""
        async for _ in self:
            pass
        if self._final is None:
            raise RuntimeError("the turn was closed before it ended")
        return self._final

    async def reply(self) -> Reply:
        """Read the turn to its end and collect it as a :class:`Reply`."""
        final = await self.wait()
        return Reply(
            turn_id=self._turn_id,
            text=self.text,
            events=list(self._protos),
            time_to_first_token_s=self._ttft,
            outcome=final.kind,
            final=final,
            session_id=self._session_id,
        )

    async def cancel(self, *, timeout_s: float | None = 10.0) -> None:
        """Ask the engine to stop the turn (running, queued or waiting for a tool). Keep iterating: the stream
        ends with a :class:`~salon.client.Cancelled` event (or the turn's own end, if it won the race)."""
        raise NotImplementedError

    # Answering tool calls by hand (the calls and approvals the turn's toolbox and callback do not take).

    async def submit_tool_result(self, call_id: str, result: str) -> bool:
        """Answer the tool call ``call_id`` with its result (what the model will see); ``True`` if the call
        already had an answer (this one changed nothing). ``SalonError`` (``NOT_FOUND``) when the call is not
        waiting: unknown, already past its deadline, or of a finished turn."""
        raise NotImplementedError

    async def submit_tool_error(self, call_id: str, error: str) -> bool:
        """Answer the tool call ``call_id`` with an error (what the model is told about the failure)."""
        raise NotImplementedError

    async def decide_approval(self, call_id: str, decision: Decision) -> bool:
        """Approve or reject the call ``call_id`` (an :class:`~salon.client.ApprovalRequired` event); ``True``
        if it had already been decided (the first decision holds)."""
        raise NotImplementedError

    async def approve(self, call_id: str, reason: str = "", *, approver: str = "") -> bool:
        """Approve the call ``call_id``: it runs (the client's function once :class:`ApprovalDecided` arrives,
        or its MCP server)."""
        return await self.decide_approval(call_id, Decision(True, reason, approver))

    async def reject(self, call_id: str, reason: str = "", *, approver: str = "") -> bool:
        """Reject the call ``call_id``; the model is told so, with ``reason``."""
        return await self.decide_approval(call_id, Decision(False, reason, approver))

    def _submit_request(self, call_id: str, *, result: str | None = None, error: str | None = None) -> Any:
        request = cs_pb2.SubmitToolResultRequest(session_id=self._session_id, turn_id=self._turn_id, call_id=call_id)
        if error is not None:
            request.error = error
        else:
            request.result = result or ""
        return request

    def _decide_request(self, call_id: str, decision: Decision) -> cs_pb2.DecideApprovalRequest:
        verdict = cs_pb2.APPROVAL_VERDICT_APPROVE if decision.approved else cs_pb2.APPROVAL_VERDICT_REJECT
        return cs_pb2.DecideApprovalRequest(
            session_id=self._session_id,
            turn_id=self._turn_id,
            call_id=call_id,
            verdict=verdict,
            reason=decision.reason,
            approver=decision.approver,
        )

    async def aclose(self) -> None:
        """Stop reading (the open call is cancelled) and stop running its tool calls. The turn itself goes on
        or is cancelled according to its disconnect policy; it can be picked up again with
        ``SalonClient.resume_turn``. Idempotent."""
        try:
            for gen in (self._view, self._source):
                aclose = getattr(gen, "aclose", None)
                if aclose is not None:
                    await aclose()
        finally:
            await self._tools.aclose()

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = self._final.kind if self._final else f"seq {self._last_seq}"
        return f"<{type(self).__name__} {self._session_id}/{self._turn_id} {state}>"

    # The machinery.

    def _claim(self) -> AsyncGenerator[_Item, None]:
        if self._source is not None:
            raise RuntimeError("a Turn can be iterated only once")
        self._source = self._guarded(self._stream())
        return self._source

    async def _guarded(self, source: AsyncGenerator[_Item, None]) -> AsyncGenerator[_Item, None]:
        """``source``, ended early by a failure of the turn's tool loop (raised here, so the reader sees it
        even while the turn waits for the answer that failed to go out)."""
        async with contextlib.aclosing(source):
            while True:
                try:
                    item = await self._tools.race(source.__anext__())
                except StopAsyncIteration:
                    return
                yield item

    async def _typed_view(self, source: AsyncIterator[_Item]) -> AsyncIterator[Event]:
        async for _, event in source:
            if event is not None:
                yield event

    async def _proto_view(self, source: AsyncIterator[_Item]) -> AsyncIterator[turn_pb2.TurnEvent]:
        async for proto, _ in source:
            yield proto

    def _attempt(self) -> AsyncGenerator[turn_pb2.TurnEvent, None]:
        """One call's worth of the turn's events (from the start, or after :attr:`last_seq`); raises
        :class:`SalonError` when the call fails."""
        raise NotImplementedError

    def _remaining_s(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - self._clock(), 0.0)

    async def _stream(self) -> AsyncGenerator[_Item, None]:
        """Every event of the turn once, in order, across as many calls as it takes."""
        self._started_at = last_progress = self._clock()
        if self._timeout_s is not None:
            self._deadline = self._started_at + self._timeout_s
        failures = 0
        while True:
            attempt = self._attempt()
            error: SalonError | None = None
            gap: SalonError | None = None
            try:
                async for proto in attempt:
                    if proto.seq <= self._last_seq:
                        continue  # seen on an earlier call
                    if proto.seq != self._last_seq + 1:
                        gap = SalonError(
                            grpc.StatusCode.DATA_LOSS,
                            "EVENT_SEQUENCE_GAP",
                            f"event {proto.seq} of turn {self._turn_id} arrived after event {self._last_seq}",
                        )
                        break
                    event = self._record(proto)
                    failures, last_progress = 0, self._clock()
                    yield proto, event
                    if proto.WhichOneof("kind") in TERMINAL_KINDS:
                        return
            except SalonError as exc:
                error = exc
            finally:
                await attempt.aclose()
            if gap is not None:
                raise gap
            if error is None:
                error = SalonError(
                    grpc.StatusCode.UNAVAILABLE, "STREAM_ENDED_EARLY", "the stream ended before the turn did"
                )
            failures += 1
            await self._sleep(self._backoff_or_raise(error, failures, last_progress))

    def _backoff_or_raise(self, error: SalonError, failures: int, last_progress: float) -> float:
        """The wait before calling again, or ``error`` raised when the policy says to give up."""
        policy = self._retry
        if error.code not in policy.retry_codes or failures > policy.max_retries:
            raise error
        delay = policy.backoff_s(failures, self._rng, error.retry_after_s)
        now = self._clock()
        if now + delay - last_progress > policy.max_elapsed_s:
            raise error
        if self._deadline is not None and now + delay >= self._deadline:
            raise error
        return delay

    def _record(self, proto: turn_pb2.TurnEvent) -> Event | None:
        self._last_seq = proto.seq
        if proto.turn_id:
            self._turn_id = proto.turn_id
        self._protos.append(proto)
        event = event_from_proto(proto)
        if event is None:
            return None
        self._events.append(event)
        if isinstance(event, Delta):
            if self._ttft is None and self._started_at is not None:
                self._ttft = self._clock() - self._started_at
            self._parts.append(event.text)
        elif isinstance(event, Completed | Failed | Cancelled):
            self._final = event
        self._tools.observe(event)
        return event


class Turn(BaseTurn):
    """A turn carried by ``SendTurn`` (then ``ResumeTurn`` after a dropped stream); its tool calls are answered
    with ``SubmitToolResult`` and ``DecideApproval``.

    Get one from :meth:`Session.turn <salon.client.Session.turn>` (a new turn) or
    :meth:`SalonClient.resume_turn <salon.client.SalonClient.resume_turn>` (an existing one).
    """

    def __init__(
        self,
        stub: TurnStub,
        *,
        session_id: str,
        turn_id: str,
        request: cs_pb2.SendTurnRequest | None = None,
        after_seq: int = 0,
        metadata: Sequence[tuple[str, str]] = (),
        timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        toolbox: Toolbox | None = None,
        on_approval: ApprovalHandler | None = None,
        call_timeout_s: float | None = 30.0,
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
        self._stub = stub
        self._metadata = tuple(metadata)
        self._call_timeout_s = call_timeout_s

    async def cancel(self, *, timeout_s: float | None = 10.0) -> None:
        """Ask the engine to stop the turn (running, queued or waiting for a tool). Keep iterating: the stream
        ends with a :class:`~salon.client.Cancelled` event (or the turn's own end, if it won the race)."""
        request = cs_pb2.CancelTurnRequest(session_id=self._session_id, turn_id=self._turn_id)
        await self._unary(self._stub.CancelTurn, request, timeout_s)

    async def submit_tool_result(self, call_id: str, result: str) -> bool:
        request = self._submit_request(call_id, result=result)
        response = await self._unary(self._stub.SubmitToolResult, request, self._call_timeout_s)
        return bool(response.duplicate)

    async def submit_tool_error(self, call_id: str, error: str) -> bool:
        request = self._submit_request(call_id, error=error)
        response = await self._unary(self._stub.SubmitToolResult, request, self._call_timeout_s)
        return bool(response.duplicate)

    async def decide_approval(self, call_id: str, decision: Decision) -> bool:
        request = self._decide_request(call_id, decision)
        response = await self._unary(self._stub.DecideApproval, request, self._call_timeout_s)
        return bool(response.duplicate)

    async def _unary(self, method: Any, request: Any, timeout_s: float | None) -> Any:
        try:
            return await method(request, metadata=self._metadata, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise SalonError.from_rpc_error(exc) from None

    async def _attempt(self) -> AsyncGenerator[turn_pb2.TurnEvent, None]:
        call = self._open_call()
        try:
            async for response in call:
                yield response.event
        except grpc.aio.AioRpcError as exc:
            raise SalonError.from_rpc_error(exc) from None
        finally:
            call.cancel()

    def _open_call(self) -> Any:
        self._calls += 1
        remaining = self._remaining_s()
        if self._last_seq == 0 and self._request is not None:
            return self._stub.SendTurn(self._request, metadata=self._metadata, timeout=remaining)
        self._resumes += 1
        request = cs_pb2.ResumeTurnRequest(session_id=self._session_id, turn_id=self._turn_id, after_seq=self._last_seq)
        return self._stub.ResumeTurn(request, metadata=self._metadata, timeout=remaining)
