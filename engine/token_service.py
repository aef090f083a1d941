"""``salon.v1.SessionTokenService``: who may have a session token, for what, and for how long.

:class:`TokenIssuer` holds the rules; :class:`SessionTokenServicer` is its gRPC face. Tokens themselves (format,
keys, verification) are ``engine.session_tokens``; what a token may do once issued is ``engine.token_scope``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

from google.protobuf.timestamp_pb2 import Timestamp

from salon.engine.auth import current_identity
from salon.engine.session_tokens import DEFAULT_RIGHTS, Right, SessionTokens, TokenClaims, check_user
from salon.engine.status import error_boundary
from salon.engine.tenants import Identity
from salon.engine.token_scope import OWNER_KEY
from salon.storage.errors import InvalidArgument, NotFound, Unauthenticated
from salon.storage.ids import require_id
from salon.storage.reasons import Reason
from salon.v1 import session_pb2
from salon.v1 import token_service_pb2 as tok_pb2
from salon.v1 import token_service_pb2_grpc as tok_grpc

Context: TypeAlias = Any
log = logging.getLogger(__name__)

_RIGHTS: dict[tok_pb2.TokenRight, Right] = {
    tok_pb2.TOKEN_RIGHT_SEND: Right.SEND,
    tok_pb2.TOKEN_RIGHT_RESUME: Right.RESUME,
    tok_pb2.TOKEN_RIGHT_CANCEL: Right.CANCEL,
    tok_pb2.TOKEN_RIGHT_READ: Right.READ,
    tok_pb2.TOKEN_RIGHT_TOOLS: Right.TOOLS,
    tok_pb2.TOKEN_RIGHT_APPROVE: Right.APPROVE,
    tok_pb2.TOKEN_RIGHT_CREATE_SESSIONS: Right.CREATE,
}
_RIGHT_VALUES = {right: value for value, right in _RIGHTS.items()}

GetSession = Callable[[str, str], Awaitable[session_pb2.Session]]


def rights_from_proto(values: list[tok_pb2.TokenRight]) -> frozenset[Right]:
    """The rights a request names (:class:`InvalidArgument` for an unknown or unspecified one)."""
    rights = set()
    for value in values:
        right = _RIGHTS.get(value)
        if right is None:
            raise InvalidArgument("rights holds an unknown or unspecified right", reason=Reason.BAD_TOKEN_RIGHTS)
        rights.add(right)
    return frozenset(rights)


def rights_to_proto(rights: frozenset[Right]) -> list[tok_pb2.TokenRight]:
    """``rights`` as the API's enum values, in the enum's order."""
    return sorted(_RIGHT_VALUES[r] for r in rights)


class TokenIssuer:
    """Mints session tokens for callers that may have them.

    ``get_session(tenant, session_id)`` reads a session (:class:`NotFound` if the tenant has none by that id);
    ``clock`` returns Unix seconds."""

    def __init__(
        self,
        tokens: SessionTokens,
        get_session: GetSession,
        *,
        default_ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._tokens = tokens
        self._get_session = get_session
        self.default_ttl_s = default_ttl_s
        self._clock = clock

    async def issue(
        self, caller: Identity, request: tok_pb2.IssueSessionTokenRequest
    ) -> tok_pb2.IssueSessionTokenResponse:
        """A token for ``caller``'s tenant as ``request`` asks, or the reason it may not have one."""
        ttl_s = self._ttl(request)
        requested = rights_from_proto(list(request.rights))
        if caller.token is not None:
            user, rights, ttl_s = await self._narrowed(caller.token, request, requested, ttl_s)
        else:
            user, rights = check_user(request.user), requested or DEFAULT_RIGHTS
            await self._check_grant(caller.tenant_id, request.session_id, user, rights)
        token, claims = self._tokens.mint(caller.tenant_id, request.session_id, user=user, rights=rights, ttl_s=ttl_s)
        # Names the token and who asked for it (never the token itself), for audits.
        log.info(
            "session token %s issued for %s/%s (%s) by %s, expires at %d",
            claims.token_id,
            claims.tenant_id,
            claims.session_id or "(user token)",
            ",".join(sorted(claims.rights)),
            caller.credential or "anonymous",
            claims.expires_at,
        )
        return tok_pb2.IssueSessionTokenResponse(
            token=token,
            expire_time=Timestamp(seconds=claims.expires_at),
            session_id=claims.session_id,
            rights=rights_to_proto(claims.rights),
            token_id=claims.token_id,
        )

    def _ttl(self, request: tok_pb2.IssueSessionTokenRequest) -> float:
        ttl = request.ttl.seconds + request.ttl.nanos / 1e9
        if ttl < 0:
            raise InvalidArgument("ttl must not be negative", reason=Reason.INVALID_ARGUMENT)
        if ttl > self._tokens.max_ttl_s:
            raise InvalidArgument(
                f"ttl must be at most {self._tokens.max_ttl_s:.0f} s", reason=Reason.TOKEN_TTL_TOO_LONG
            )
        return ttl or min(self.default_ttl_s, self._tokens.max_ttl_s)

    async def _check_grant(self, tenant_id: str, session_id: str, user: str, rights: frozenset[Right]) -> None:
        """A caller with the tenant's own credentials: a session token for one of its sessions, or a user token."""
        if session_id:
            if Right.CREATE in rights:
                raise InvalidArgument(
                    "the create-sessions right is for user tokens (no session_id)", reason=Reason.BAD_TOKEN_RIGHTS
                )
            await self._get_session(tenant_id, require_id(session_id, "session_id"))
        elif not user or Right.CREATE not in rights:
            raise InvalidArgument(
                "a token without session_id is a user token: it needs user and the create-sessions right",
                reason=Reason.BAD_TOKEN_RIGHTS,
            )

    async def _narrowed(
        self, claims: TokenClaims, request: tok_pb2.IssueSessionTokenRequest, requested: frozenset[Right], ttl_s: float
    ) -> tuple[str, frozenset[Right], float]:
        """What a user token may hand on: a token for a session it created, with no more rights and no longer life
        than its own (``token_scope`` already checked that the caller is a user token with the create right)."""
        require_id(request.session_id, "session_id")
        session = await self._get_session(claims.tenant_id, request.session_id)
        if session.metadata.get(OWNER_KEY) != claims.user or request.user not in ("", claims.user):
            # The same answer as for a session that does not exist: a user learns nothing of others' sessions.
            raise NotFound("session not found", reason=Reason.SESSION_NOT_FOUND)
        rights = requested or (claims.rights - {Right.CREATE})
        if Right.CREATE in rights or not rights <= claims.rights:
            raise InvalidArgument("a user token cannot grant rights it does not hold", reason=Reason.BAD_TOKEN_RIGHTS)
        remaining = claims.expires_at - self._clock()
        if remaining <= 0:
            raise Unauthenticated("the session token has expired", reason=Reason.TOKEN_EXPIRED)
        return claims.user, rights, min(ttl_s, remaining)


class SessionTokenServicer(tok_grpc.SessionTokenServiceServicer):
    """``salon.v1.SessionTokenService`` over a :class:`TokenIssuer`."""

    def __init__(self, issuer: TokenIssuer) -> None:
        self._issuer = issuer

    @error_boundary
    async def IssueSessionToken(self, request: tok_pb2.IssueSessionTokenRequest, context: Context) -> Any:
        caller = current_identity()
        if caller is None:
            raise Unauthenticated("missing or invalid credentials")
        return await self._issuer.issue(caller, request)
