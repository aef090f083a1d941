"""A turn in flight: an async iterator of typed events that survives a dropped stream.

The engine numbers a turn's events 1, 2, 3 … and keeps them replayable, and a ``SendTurn`` repeated with the
same idempotency key is the same turn. So when the stream fails with a retryable status (UNAVAILABLE by
default: the gateway died, the connection was cut), the turn calls again after a jittered backoff:
``ResumeTurn(after_seq=<last seen>)`` once it has seen an event, or ``SendTurn`` with the same key before
that. Events already seen are dropped, so the caller sees every event exactly once, in order.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any, Protocol

import grpc

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
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2


class TurnStub(Protocol):
    """The part of ``ConversationServiceStub`` a turn uses (a fake in tests)."""

    def SendTurn(self, request: cs_pb2.SendTurnRequest, **kwargs: Any) -> Any: ...

    def ResumeTurn(self, request: cs_pb2.ResumeTurnRequest, **kwargs: Any) -> Any: ...

    def CancelTurn(self, request: cs_pb2.CancelTurnRequest, **kwargs: Any) -> Any: ...


_Item = tuple[turn_pb2.TurnEvent, Event | None]


class Turn:
    """One turn: ``async for event in turn`` yields typed events, ending after the terminal one.

    Get one from :meth:`Session.turn <salon.client.Session.turn>` (a new turn) or
    :meth:`SalonClient.resume_turn <salon.client.SalonClient.resume_turn>` (an existing one). Nothing is sent
    until iteration starts. A turn can be iterated once, either as typed events or, with :meth:`protos`, as
    ``salon.v1.TurnEvent`` messages. ``timeout_s`` bounds the whole turn, retries included.
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
    ) -> None:
        if request is not None and request.idempotency_key != turn_id:
            raise ValueError("a new turn is named by its idempotency key: request.idempotency_key must be turn_id")
        if not turn_id:
            raise ValueError("turn_id must not be empty")
        self._stub = stub
        self._session_id = session_id
        self._turn_id = turn_id
        self._key = turn_id
        self._request = request
        self._metadata = tuple(metadata)
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
        self._source: AsyncIterator[_Item] | None = None
        self._view: AsyncIterator[Any] | None = None
        self._typed: AsyncIterator[Event] | None = None

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

    # Iteration.

    def __aiter__(self) -> Turn:
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
        """Ask the engine to stop the turn (running or queued). Keep iterating: the stream ends with a
        :class:`~salon.client.Cancelled` event (or the turn's own end, if it won the race)."""
        request = cs_pb2.CancelTurnRequest(session_id=self._session_id, turn_id=self._turn_id)
        try:
            await self._stub.CancelTurn(request, metadata=self._metadata, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise SalonError.from_rpc_error(exc) from None

    async def aclose(self) -> None:
        """Stop reading (the open call is cancelled). The turn itself goes on or is cancelled according to its
        disconnect policy; it can be picked up again with ``SalonClient.resume_turn``. Idempotent."""
        for gen in (self._view, self._source):
            aclose = getattr(gen, "aclose", None)
            if aclose is not None:
                await aclose()

    async def __aenter__(self) -> Turn:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = self._final.kind if self._final else f"seq {self._last_seq}"
        return f"<Turn {self._session_id}/{self._turn_id} {state}>"

    # The machinery.

    def _claim(self) -> AsyncIterator[_Item]:
        if self._source is not None:
            raise RuntimeError("a Turn can be iterated only once")
        self._source = self._stream()
        return self._source

    async def _typed_view(self, source: AsyncIterator[_Item]) -> AsyncIterator[Event]:
        async for _, event in source:
            if event is not None:
                yield event

    async def _proto_view(self, source: AsyncIterator[_Item]) -> AsyncIterator[turn_pb2.TurnEvent]:
        async for proto, _ in source:
            yield proto

    async def _stream(self) -> AsyncIterator[_Item]:
        """Every event of the turn once, in order, across as many calls as it takes."""
        self._started_at = last_progress = self._clock()
        if self._timeout_s is not None:
            self._deadline = self._started_at + self._timeout_s
        failures = 0
        while True:
            call = self._open_call()
            try:
                async for response in call:
                    proto: turn_pb2.TurnEvent = response.event
                    if proto.seq <= self._last_seq:
                        continue  # seen on an earlier call
                    if proto.seq != self._last_seq + 1:
                        raise SalonError(
                            grpc.StatusCode.DATA_LOSS,
                            "EVENT_SEQUENCE_GAP",
                            f"event {proto.seq} of turn {self._turn_id} arrived after event {self._last_seq}",
                        )
                    event = self._record(proto)
                    failures, last_progress = 0, self._clock()
                    yield proto, event
                    if proto.WhichOneof("kind") in TERMINAL_KINDS:
                        return
                error = SalonError(
                    grpc.StatusCode.UNAVAILABLE, "STREAM_ENDED_EARLY", "the stream ended before the turn did"
                )
            except grpc.aio.AioRpcError as exc:
                error = SalonError.from_rpc_error(exc)
            finally:
                call.cancel()
            failures += 1
            await self._sleep(self._backoff_or_raise(error, failures, last_progress))

    def _open_call(self) -> Any:
        self._calls += 1
        remaining = None if self._deadline is None else max(self._deadline - self._clock(), 0.0)
        if self._last_seq == 0 and self._request is not None:
            return self._stub.SendTurn(self._request, metadata=self._metadata, timeout=remaining)
        self._resumes += 1
        request = cs_pb2.ResumeTurnRequest(session_id=self._session_id, turn_id=self._turn_id, after_seq=self._last_seq)
        return self._stub.ResumeTurn(request, metadata=self._metadata, timeout=remaining)

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
        return event
