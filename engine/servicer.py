"""The gRPC face of :class:`~salon.engine.gateway.Gateway`: request in, status or events out. No logic here.

Every method runs inside :func:`~salon.engine.status.error_boundary`, the one place errors become statuses."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypeAlias

from salon.engine.auth import caller_tenant, current_identity
from salon.engine.converse import ConverseCall
from salon.engine.convert import decode_index_token, encode_index_token, record_to_proto
from salon.engine.gateway import Gateway
from salon.engine.limits import TenantLimiter
from salon.engine.status import error_boundary
from salon.engine.streaming import StreamWriter
from salon.engine.turns import TenantTurns
from salon.engine.validation import page_size
from salon.otel import server_span
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

# grpc ships no type information; the servicer context is typed loosely on purpose.
Context: TypeAlias = Any


def _remaining(context: Context) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else max(remaining, 0.0)


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

    def _turns(self, context: Context) -> TenantTurns:
        identity = current_identity()
        credential = identity.credential if identity is not None else ""
        return TenantTurns(self._gateway, self._limiter, self._tenant(context), credential)

    def _writer(self, context: Context) -> StreamWriter:
        return StreamWriter(context, self._write_timeout_s)

    @error_boundary
    async def CreateSession(self, request: cs_pb2.CreateSessionRequest, context: Context) -> Any:
        tenant = self._tenant(context)
        if self._limiter is not None:
            await self._limiter.check_new_session(tenant)
        session = await self._gateway.create_session(tenant, request)
        return cs_pb2.CreateSessionResponse(session=session)

    @error_boundary
    async def GetSession(self, request: cs_pb2.GetSessionRequest, context: Context) -> Any:
        session = await self._gateway.get_session(self._tenant(context), request.session_id)
        return cs_pb2.GetSessionResponse(session=session)

    @error_boundary
    async def ListSessions(self, request: cs_pb2.ListSessionsRequest, context: Context) -> Any:
        sessions, token = await self._gateway.list_sessions(self._tenant(context), request)
        return cs_pb2.ListSessionsResponse(sessions=sessions, next_page_token=token)

    @error_boundary
    async def DeleteSession(self, request: cs_pb2.DeleteSessionRequest, context: Context) -> Any:
        await self._gateway.delete_session(self._tenant(context), request.session_id)
        return cs_pb2.DeleteSessionResponse()

    @error_boundary
    async def SendTurn(self, request: cs_pb2.SendTurnRequest, context: Context) -> None:
        turns = self._turns(context)
        with server_span("salon.gateway.SendTurn", context.invocation_metadata()) as span:
            events = await turns.send(request, span.headers(), _remaining(context))
            await self._writer(context).relay(events, cs_pb2.SendTurnResponse)

    @error_boundary
    async def ResumeTurn(self, request: cs_pb2.ResumeTurnRequest, context: Context) -> None:
        events = self._turns(context).resume(
            request.session_id, request.turn_id, request.after_seq, _remaining(context)
        )
        await self._writer(context).relay(events, cs_pb2.ResumeTurnResponse)

    @error_boundary
    async def CancelTurn(self, request: cs_pb2.CancelTurnRequest, context: Context) -> Any:
        await self._turns(context).cancel(request.session_id, request.turn_id)
        return cs_pb2.CancelTurnResponse()

    @error_boundary
    async def SubmitToolResult(self, request: cs_pb2.SubmitToolResultRequest, context: Context) -> Any:
        return await self._turns(context).submit_tool_result(request)

    @error_boundary
    async def DecideApproval(self, request: cs_pb2.DecideApprovalRequest, context: Context) -> Any:
        return await self._turns(context).decide_approval(request)

    @error_boundary
    async def Converse(self, request_iterator: AsyncIterator[cs_pb2.ConverseRequest], context: Context) -> None:
        call = ConverseCall(self._turns(context), context.invocation_metadata(), self._writer(context))
        await call.run(request_iterator)

    @error_boundary
    async def GetHistory(self, request: cs_pb2.GetHistoryRequest, context: Context) -> Any:
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
