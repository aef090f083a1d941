"""The gRPC face of operating a deployment (``salon.v1.AdminService``): a tenant's usage against its limits."""

from __future__ import annotations

from typing import Any

from salon.engine.auth import current_identity
from salon.engine.limits import TenantLimiter, Usage
from salon.engine.status import error_boundary
from salon.engine.tenants import TenantRegistry
from salon.storage import PermissionDenied, Unauthenticated, require_id
from salon.storage.reasons import Reason
from salon.v1 import admin_service_pb2 as admin_pb2
from salon.v1 import admin_service_pb2_grpc as admin_grpc


def usage_to_proto(usage: Usage) -> admin_pb2.TenantUsage:
    """A :class:`Usage` as the API's message."""
    limits = usage.limits
    return admin_pb2.TenantUsage(
        tenant_id=usage.tenant_id,
        turns_last_minute=usage.turns_last_minute,
        concurrent_turns=usage.concurrent_turns,
        tokens_today=usage.tokens_today,
        sessions=usage.sessions,
        limits=admin_pb2.TenantLimits(
            turns_per_minute=limits.turns_per_minute,
            concurrent_turns=limits.concurrent_turns,
            tokens_per_day=limits.tokens_per_day,
            max_message_bytes=limits.max_message_bytes,
            max_sessions=limits.max_sessions,
        ),
    )


class AdminServicer(admin_grpc.AdminServiceServicer):
    """``salon.v1.AdminService``: a caller sees its own tenant; an admin key sees any."""

    def __init__(self, limiter: TenantLimiter, tenants: TenantRegistry) -> None:
        self._limiter = limiter
        self._tenants = tenants

    @error_boundary
    async def GetUsage(self, request: admin_pb2.GetUsageRequest, context: Any) -> Any:
        identity = current_identity()
        if identity is None:
            raise Unauthenticated("missing or invalid credentials")
        wanted = request.tenant_id or identity.tenant_id
        require_id(wanted, "tenant_id")
        if (request.all_tenants or wanted != identity.tenant_id) and not identity.admin:
            raise PermissionDenied("only an admin key may read other tenants' usage", reason=Reason.NOT_ADMIN)
        if request.all_tenants:
            tenants = sorted({*self._tenants.tenant_ids(), *self._limiter.known_tenants(), wanted})
        else:
            tenants = [wanted]
        usage = [usage_to_proto(await self._limiter.usage(t)) for t in tenants]
        return admin_pb2.GetUsageResponse(usage=usage)
