"""The gRPC face of :class:`~engine.gateway.Gateway`: request in, status or events out. No logic here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, TypeAlias

from engine.convert import decode_index_token, encode_index_token, record_to_proto
from engine.gateway import Gateway
from engine.status import Unimplemented, abort, as_salon_errors, status_code
from engine.validation import page_size
from otel import server_span
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from storage import InvalidArgument, SalonError, is_valid_id

log = logging.getLogger(__name__)

# grpc ships no type information; the servicer context is typed loosely on purpose.
Context: TypeAlias = Any

CONVERSE_BUFFER = 256
"""Events buffered per Converse stream before its turns wait for the client to read."""


def _remaining(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.0)


class ConversationServicer(cs_grpc.ConversationServiceServicer):
    """``salon.v1.ConversationService`` over a :class:`Gateway`."""

    def __init__(self, gateway: Gateway, default_tenant: str) -> None:
        self._gateway = gateway
        self._default_tenant = default_tenant

    def _tenant(self, context: Context) -> str:
        # Until authentication exists every caller belongs to the configured default tenant.
        return self._default_tenant

    async def CreateSession(self, request: cs_pb2.CreateSessionRequest, context: Context) -> Any:
        try:
            with as_salon_errors():
                session = await self._gateway.create_session(self._tenant(context), request)
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

    async def SendTurn(
        self, request: cs_pb2.SendTurnRequest, context: Context
    ) -> AsyncIterator[cs_pb2.SendTurnResponse]:
        try:
            with server_span("salon.gateway.SendTurn", context.invocation_metadata()) as span, as_salon_errors():
                events = self._gateway.send_turn(
                    self._tenant(context), request, trace_headers=span.headers(), timeout_s=_remaining(context)
                )
                async for event in events:
                    yield cs_pb2.SendTurnResponse(event=event)
        except SalonError as exc:
            await abort(context, exc)

    async def Converse(
        self, request_iterator: AsyncIterator[cs_pb2.ConverseRequest], context: Context
    ) -> AsyncIterator[cs_pb2.ConverseResponse]:
        out: asyncio.Queue[cs_pb2.ConverseResponse | None] = asyncio.Queue(maxsize=CONVERSE_BUFFER)
        tenant = self._tenant(context)
        metadata = context.invocation_metadata()
        relays: set[asyncio.Task[None]] = set()

        async def relay(request_id: str, turn: cs_pb2.SendTurnRequest) -> None:
            try:
                with server_span("salon.gateway.Converse.turn", metadata) as span, as_salon_errors():
                    async for event in self._gateway.send_turn(tenant, turn, trace_headers=span.headers()):
                        await out.put(cs_pb2.ConverseResponse(event=event))
            except SalonError as exc:
                await out.put(_converse_error(request_id, turn.session_id, exc))

        async def read_requests() -> None:
            async for req in request_iterator:
                action = req.WhichOneof("action")
                if action == "send_turn":
                    task = asyncio.create_task(relay(req.request_id, req.send_turn))
                    relays.add(task)
                    task.add_done_callback(relays.discard)
                else:
                    error: SalonError = (
                        Unimplemented(f"{action} on Converse is not available yet", reason="NOT_IMPLEMENTED")
                        if action
                        else InvalidArgument("the request has no action", reason="EMPTY_REQUEST")
                    )
                    session_id = getattr(req, action).session_id if action else ""
                    await out.put(_converse_error(req.request_id, session_id, error))
            # The client finished sending: end the stream once its turns have ended.
            while relays:
                await asyncio.gather(*list(relays), return_exceptions=True)
            await out.put(None)

        reader = asyncio.create_task(read_requests())
        try:
            while True:
                item = await out.get()
                if item is None:
                    break
                yield item
            await reader
        finally:
            # The client went away (or the stream ended): stop relaying. Turns themselves keep running and
            # are recorded; their events stay replayable.
            reader.cancel()
            for task in list(relays):
                task.cancel()
            for task in [reader, *relays]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def CancelTurn(self, request: cs_pb2.CancelTurnRequest, context: Context) -> Any:
        await abort(context, Unimplemented("CancelTurn is not available yet", reason="NOT_IMPLEMENTED"))

    async def ResumeTurn(
        self, request: cs_pb2.ResumeTurnRequest, context: Context
    ) -> AsyncIterator[cs_pb2.ResumeTurnResponse]:
        await abort(context, Unimplemented("ResumeTurn is not available yet", reason="NOT_IMPLEMENTED"))
        yield cs_pb2.ResumeTurnResponse()  # pragma: no cover - unreachable; makes this a stream handler

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
