"""One caller's turn operations as the gRPC calls run them: the tenant's limits applied and its usage counted,
and its answers to tool calls routed to the turns waiting for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from salon.engine.gateway import Gateway
from salon.engine.limits import TenantLimiter
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2


class TenantTurns:
    """Starting, resuming and cancelling turns for ``tenant`` over a :class:`Gateway` (and a limiter, if any)."""

    def __init__(self, gateway: Gateway, limiter: TenantLimiter | None, tenant: str, credential: str = "") -> None:
        self._gateway = gateway
        self._limiter = limiter
        self.tenant = tenant
        self.credential = credential
        """Which of the tenant's credentials calls (a key id or certificate name; recorded with approvals)."""

    async def send(
        self, request: cs_pb2.SendTurnRequest, trace_headers: Mapping[str, str], timeout_s: float | None = None
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """A new turn's events. Limits first: a refused turn (ResourceExhausted) never reaches the bus."""
        events = self._gateway.send_turn(self.tenant, request, trace_headers=trace_headers, timeout_s=timeout_s)
        if self._limiter is None:
            return events
        slot = await self._limiter.admit_turn(self.tenant, request.text)
        return self._limiter.metered(self.tenant, slot, events)

    def resume(
        self, session_id: str, turn_id: str, after_seq: int, timeout_s: float | None = None
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """A turn's events after ``after_seq``, its usage counted (if no earlier stream counted it)."""
        events = self._gateway.resume_turn(self.tenant, session_id, turn_id, after_seq=after_seq, timeout_s=timeout_s)
        return events if self._limiter is None else self._limiter.counted(self.tenant, events)

    async def cancel(self, session_id: str, turn_id: str) -> None:
        """Stop a running or queued turn."""
        await self._gateway.cancel_turn(self.tenant, session_id, turn_id)

    async def submit_tool_result(self, request: cs_pb2.SubmitToolResultRequest) -> cs_pb2.SubmitToolResultResponse:
        """Answer a tool call the client ran."""
        return await self._gateway.submit_tool_result(self.tenant, request)

    async def decide_approval(self, request: cs_pb2.DecideApprovalRequest) -> cs_pb2.DecideApprovalResponse:
        """Approve or reject a tool call waiting for a person."""
        return await self._gateway.decide_approval(self.tenant, self.credential, request)
