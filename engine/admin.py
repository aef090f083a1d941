"""The gRPC face of operating a deployment (``salon.v1.AdminService``): a tenant's usage against its limits, and
erasing a user of a tenant."""

from __future__ import annotations

from typing import Any

from salon.engine.auth import current_identity
from salon.engine.erasure import UserEraser
from salon.engine.limits import TenantLimiter, Usage
from salon.engine.status import error_boundary
from salon.engine.tenants import Identity, TenantRegistry
from salon.storage import PermissionDenied, Unauthenticated, Unavailable, require_id
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

    def __init__(self, limiter: TenantLimiter, tenants: TenantRegistry, eraser: UserEraser | None = None) -> None:
        self._limiter = limiter
        self._tenants = tenants
        self._eraser = eraser

    @error_boundary
    async def EraseUser(self, request: admin_pb2.EraseUserRequest, context: Any) -> Any:
        identity = _identity()
        tenant = request.tenant_id or identity.tenant_id
        require_id(tenant, "tenant_id")
        if tenant != identity.tenant_id and not identity.admin:
            raise PermissionDenied("only an admin key may erase users of other tenants", reason=Reason.NOT_ADMIN)
        require_id(request.user_id, "user_id")
        if self._eraser is None:
            raise Unavailable("erasure is not available here", reason=Reason.UNAVAILABLE)
        erased = await self._eraser.erase(tenant, request.user_id)
        return admin_pb2.EraseUserResponse(sessions_deleted=erased.sessions, memories_deleted=erased.memories)

    @error_boundary
    async def GetUsage(self, request: admin_pb2.GetUsageRequest, context: Any) -> Any:
        identity = _identity()
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


def _identity() -> Identity:
    identity = current_identity()
    if identity is None:
        raise Unauthenticated("missing or invalid credentials")
    return identity
