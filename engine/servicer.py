"""The gRPC face of :class:`~engine.gateway.Gateway`: request in, status or events out. No logic here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

from engine.auth import caller_tenant, current_identity
from engine.convert import decode_index_token, encode_index_token, record_to_proto
from engine.gateway import Gateway
from engine.limits import TenantLimiter
from engine.status import ClientGone, abort, as_salon_errors, status_code
from engine.validation import page_size
from otel import server_span
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from storage import InvalidArgument, ResourceExhausted, SalonError, is_valid_id

log = logging.getLogger(__name__)

# grpc ships no type information; the servicer context is typed loosely on purpose.
Context: TypeAlias = Any

CONVERSE_BUFFER = 256
"""Events buffered per Converse stream before its turns wait for the client to read."""


def _remaining(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.0)


def _retrieve(write: asyncio.Future[None]) -> None:
    if not write.cancelled():
        write.exception()


class SlowConsumer(ResourceExhausted):
    """The client stopped reading its stream for longer than the write timeout."""

    reason = "SLOW_CONSUMER"

    def __init__(self, pending: asyncio.Future[None]) -> None:
        super().__init__(
            "the client stopped reading; the stream was cut off (the turn goes on and is recorded; ResumeTurn "
            "gets the rest)"
        )
        self.pending = pending


class ConversationServicer(cs_grpc.ConversationServiceServicer):
    """``salon.v1.ConversationService`` over a :class:`Gateway`."""

    def __init__(
        self,
        gateway: Gateway,
        default_tenant: str | None,
        *,
        write_timeout_s: float = 10.0,
        limiter: TenantLimiter | None = None,
    ) -> None:
        self._gateway = gateway
        self._default_tenant = default_tenant
        self._write_timeout_s = write_timeout_s
        self._limiter = limiter

    def _tenant(self, context: Context) -> str:
        """The caller's tenant, as the auth interceptor established it from the call's credentials.

        ``default_tenant`` None (the engine) means an identity is required: a call that did not pass the
        interceptor fails closed. A string is the tenant of bare servicers in unit tests."""
        if self._default_tenant is not None and current_identity() is None:
            return self._default_tenant
        return caller_tenant()

    async def _admit(self, tenant: str, text: str, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A new turn's events, counted against the tenant's limits (ResourceExhausted when over one)."""
        if self._limiter is None:
            return events
        slot = await self._limiter.admit_turn(tenant, text)
        return self._limiter.metered(tenant, slot, events)

    def _counted(self, tenant: str, events: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """A resumed turn's events, its usage counted (if no earlier stream counted it)."""
        return events if self._limiter is None else self._limiter.counted(tenant, events)

    async def CreateSession(self, request: cs_pb2.CreateSessionRequest, context: Context) -> Any:
        try:
            with as_salon_errors():
                tenant = self._tenant(context)
                if self._limiter is not None:
                    await self._limiter.check_new_session(tenant)
                session = await self._gateway.create_session(tenant, request)
            return cs_pb2.CreateSessionResponse(session=session)
        except SalonError as exc:
            await abort(context, exc)

    async def GetSession(self, request: cs_pb2.GetSessionRequest, context: Context) -> Any:
        try:
            with as_salon_errors():
                session = await self._gateway.get_session(self._tenant(context), request.session_id)
            return cs_pb2.GetSessionResponse(session=session)
        except SalonError as exc:
            await abort(context, exc)

    async def ListSessions(self, request: cs_pb2.ListSessionsRequest, context: Context) -> Any:
        try:
            with as_salon_errors():
                sessions, token = await self._gateway.list_sessions(self._tenant(context), request)
            return cs_pb2.ListSessionsResponse(sessions=sessions, next_page_token=token)
        except SalonError as exc:
            await abort(context, exc)

    async def DeleteSession(self, request: cs_pb2.DeleteSessionRequest, context: Context) -> Any:
        try:
            with as_salon_errors():
                await self._gateway.delete_session(self._tenant(context), request.session_id)
            return cs_pb2.DeleteSessionResponse()
        except SalonError as exc:
            await abort(context, exc)

    async def _write(self, context: Context, message: Any) -> None:
        # grpc.aio has no slow-client detection: a client that stops reading holds its stream, and whatever
        # feeds it, forever. After the write timeout the relay stops (its subscription and buffer are freed);
        # the one write already handed to gRPC must finish before a status can be sent (see _end_slow).
        write = asyncio.ensure_future(context.write(message))
        # If the call ends while this write is pending, its failure is expected: retrieve it, quietly.
        write.add_done_callback(_retrieve)
        done, _ = await asyncio.wait({write}, timeout=self._write_timeout_s)
        if not done:
            raise SlowConsumer(write)
        if write.exception() is not None:
            if context.done() or context.cancelled():
                raise ClientGone from None
            write.result()

    async def _end_slow(self, context: Context, slow: SlowConsumer) -> None:
        """End a slow client's call once its pending write drained (or the client left)."""
        log.warning("a client stopped reading for %.0f s; its stream is cut off", self._write_timeout_s)
        with contextlib.suppress(Exception):
            await slow.pending
        await abort(context, slow)

    async def _relay(self, context: Context, events: AsyncIterator[Any], wrap: Callable[..., Any]) -> None:
        """Write a turn's events to the call; errors and slow readers end it with their status."""
        try:
            with as_salon_errors():
                async with contextlib.aclosing(events):  # type: ignore[type-var]
                    async for event in events:
                        await self._write(context, wrap(event=event))
        except SlowConsumer as slow:
            await self._end_slow(context, slow)
        except ClientGone:
            return
        except SalonError as exc:
            await abort(context, exc)

    async def SendTurn(self, request: cs_pb2.SendTurnRequest, context: Context) -> None:
        with server_span("salon.gateway.SendTurn", context.invocation_metadata()) as span:
            try:
                with as_salon_errors():
                    tenant = self._tenant(context)
                    # Limits first: a refused turn never reaches the bus.
                    events = await self._admit(
                        tenant,
                        request.text,
                        self._gateway.send_turn(
                            tenant, request, trace_headers=span.headers(), timeout_s=_remaining(context)
                        ),
                    )
            except SalonError as exc:
                await abort(context, exc)
                return
            await self._relay(context, events, cs_pb2.SendTurnResponse)

    async def ResumeTurn(self, request: cs_pb2.ResumeTurnRequest, context: Context) -> None:
        try:
            tenant = self._tenant(context)
        except SalonError as exc:
            await abort(context, exc)
            return
        events = self._counted(
            tenant,
            self._gateway.resume_turn(
                tenant,
                request.session_id,
                request.turn_id,
                after_seq=request.after_seq,
                timeout_s=_remaining(context),
            ),
        )
        await self._relay(context, events, cs_pb2.ResumeTurnResponse)

    async def CancelTurn(self, request: cs_pb2.CancelTurnRequest, context: Context) -> Any:
        try:
            with as_salon_errors():
                await self._gateway.cancel_turn(self._tenant(context), request.session_id, request.turn_id)
            return cs_pb2.CancelTurnResponse()
        except SalonError as exc:
            await abort(context, exc)

    async def Converse(self, request_iterator: AsyncIterator[cs_pb2.ConverseRequest], context: Context) -> None:
        out: asyncio.Queue[cs_pb2.ConverseResponse | None] = asyncio.Queue(maxsize=CONVERSE_BUFFER)
        try:
            tenant = self._tenant(context)
        except SalonError as exc:
            await abort(context, exc)
            return
        metadata = context.invocation_metadata()
        relays: set[asyncio.Task[None]] = set()

        async def relay(request_id: str, session_id: str, events: AsyncIterator[Any]) -> None:
            try:
                with as_salon_errors():
                    async for event in events:
                        await out.put(cs_pb2.ConverseResponse(event=event))
            except SalonError as exc:
                await out.put(_converse_error(request_id, session_id, exc))

        async def relay_turn(request_id: str, turn: cs_pb2.SendTurnRequest) -> None:
            # The span lives as long as the turn it stands for, like SendTurn's.
            with server_span("salon.gateway.Converse.turn", metadata) as span:
                try:
                    events = await self._admit(
                        tenant, turn.text, self._gateway.send_turn(tenant, turn, trace_headers=span.headers())
                    )
                except SalonError as exc:
                    await out.put(_converse_error(request_id, turn.session_id, exc))
                    return
                await relay(request_id, turn.session_id, events)

        async def cancel(req: cs_pb2.ConverseRequest) -> None:
            try:
                with as_salon_errors():
                    await self._gateway.cancel_turn(tenant, req.cancel_turn.session_id, req.cancel_turn.turn_id)
            except SalonError as exc:
                await out.put(_converse_error(req.request_id, req.cancel_turn.session_id, exc))

        def start(job: Awaitable[None]) -> None:
            task = asyncio.ensure_future(job)
            relays.add(task)
            task.add_done_callback(relays.discard)

        async def read_requests() -> None:
            async for req in request_iterator:
                action = req.WhichOneof("action")
                if action == "send_turn":
                    start(relay_turn(req.request_id, req.send_turn))
                elif action == "resume_turn":
                    r = req.resume_turn
                    start(
                        relay(
                            req.request_id,
                            r.session_id,
                            self._counted(
                                tenant,
                                self._gateway.resume_turn(tenant, r.session_id, r.turn_id, after_seq=r.after_seq),
                            ),
                        )
                    )
                elif action == "cancel_turn":
                    start(cancel(req))
                else:
                    error = InvalidArgument("the request has no action", reason="EMPTY_REQUEST")
                    await out.put(_converse_error(req.request_id, "", error))
            # The client finished sending: end the stream once its turns have ended.
            while relays:
                await asyncio.gather(*list(relays), return_exceptions=True)
            await out.put(None)

        reader = asyncio.create_task(read_requests())
        try:
            while (item := await out.get()) is not None:
                await self._write(context, item)
            await reader
        except SlowConsumer as slow:
            reader.cancel()
            await self._end_slow(context, slow)
        except ClientGone:
            pass
        except SalonError as exc:
            await abort(context, exc)
        finally:
            # The client went away (or the stream ended): stop relaying. Turns themselves keep running (or
            # stop, under the cancel disconnect policy) and are recorded; their events stay resumable.
            reader.cancel()
            for task in list(relays):
                task.cancel()
            for task in [reader, *relays]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def GetHistory(self, request: cs_pb2.GetHistoryRequest, context: Context) -> Any:
        try:
            with as_salon_errors():
                records, next_after = await self._gateway.history(
                    self._tenant(context),
                    request.session_id,
                    page_size=page_size(request.page_size),
                    after_turn_index=decode_index_token(request.page_token),
                )
            return cs_pb2.GetHistoryResponse(
                turns=[record_to_proto(r) for r in records],
                next_page_token=encode_index_token(next_after) if next_after else "",
            )
        except SalonError as exc:
            await abort(context, exc)


def _converse_error(request_id: str, session_id: str, error: SalonError) -> cs_pb2.ConverseResponse:
    return cs_pb2.ConverseResponse(
        error=cs_pb2.ConverseError(
            request_id=request_id if is_valid_id(request_id) else "",
            session_id=session_id if is_valid_id(session_id) else "",
            code=status_code(error).value[0],
            reason=error.reason,
            message=error.message,
        )
    )
