"""Who is calling: API keys (``authorization: Bearer <key>``) and client certificates (mutual TLS).

:class:`AuthInterceptor` wraps every handler of the server (every service, present and future): before the
handler runs it establishes the caller's :class:`~salon.engine.tenants.Identity` from the call's credentials (health
excepted), or ends the call with ``UNAUTHENTICATED``, one message for every cause. Handlers then read the
tenant with :func:`caller_tenant`; no request field can name it. It also parses the request itself, so bytes
that are no valid message get ``INVALID_ARGUMENT`` rather than grpc's ``UNKNOWN`` with the parser's text.

A client certificate names its tenant with a URI subject alternative name ``salon://tenant/<id>`` (or, when it
has none, its subject common name); the tenant must be listed in the tenants file. With both a key and a
certificate, the key decides.

A session token (``authorization: Bearer sst1.…``, see ``engine.session_tokens``) is verified whether auth is on or
off: its holder is its tenant, held to its session and rights (``engine.token_scope``, applied once the request is
parsed). An expired or invalid token is refused with its own reason (``TOKEN_EXPIRED``, ``TOKEN_INVALID``), so a
page knows to fetch a new one; everything else about credentials keeps one message for every cause.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc

from salon import otel
from salon.engine.session_tokens import PREFIX as TOKEN_PREFIX
from salon.engine.session_tokens import SessionTokens
from salon.engine.status import abort
from salon.engine.tenants import Identity, TenantRegistry
from salon.engine.token_scope import apply_scope
from salon.storage.errors import InvalidArgument, PermissionDenied, Unauthenticated
from salon.storage.ids import is_valid_id
from salon.storage.reasons import Reason

log = logging.getLogger(__name__)

TENANT_URI_PREFIX = "salon://tenant/"
OPEN_METHOD_PREFIXES = ("/grpc.health.v1.Health/",)
"""Methods callable without credentials: load balancers and orchestrators probe health anonymously."""

_MESSAGE = "missing or invalid credentials"
_caller: contextvars.ContextVar[Identity | None] = contextvars.ContextVar("salon_caller", default=None)


def current_identity() -> Identity | None:
    """The identity of the call being handled (None outside a call the interceptor saw)."""
    return _caller.get()


def caller_tenant() -> str:
    """The tenant of the call being handled; :class:`Unauthenticated` if none was established (a handler
    reached without the interceptor fails closed instead of falling back to some tenant)."""
    identity = _caller.get()
    if identity is None:
        raise Unauthenticated(_MESSAGE)
    return identity.tenant_id


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    """The token of an ``authorization: Bearer <token>`` entry, if any."""
    for key, value in metadata:
        if key.lower() != "authorization" or not isinstance(value, str):
            continue
        scheme, _, token = value.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return ""  # present but malformed: never falls through to another credential
    return None


def tenant_from_certificate(auth_context: Mapping[str, Sequence[bytes]]) -> str | None:
    """The tenant a verified client certificate names (URI SAN ``salon://tenant/<id>``, else its CN)."""
    if b"ssl" not in auth_context.get("transport_security_type", []):
        return None
    names = [*auth_context.get("x509_subject_alternative_name", []), *auth_context.get("peer_uri", [])]
    for raw in names:
        value = raw.decode("utf-8", "replace")
        if value.startswith(TENANT_URI_PREFIX):
            tenant = value[len(TENANT_URI_PREFIX) :]
            return tenant if is_valid_id(tenant) else None
    for raw in auth_context.get("x509_common_name", []):
        tenant = raw.decode("utf-8", "replace")
        return tenant if is_valid_id(tenant) else None
    return None


class Authenticator:
    """Turns a call's credentials into an :class:`Identity`.

    With ``required`` False (auth off, loopback only) every call is ``default_tenant`` and credentials are
    ignored, except a session token, which is verified and scoped either way. With it True a call needs a valid
    key or session token, or a client certificate verified by the TLS layer (against ``tls_client_ca_file``) that
    names a tenant listed in the tenants file.
    """

    def __init__(
        self,
        tenants: TenantRegistry,
        *,
        required: bool,
        default_tenant: str,
        tokens: SessionTokens | None = None,
    ) -> None:
        self.tenants = tenants
        self.required = required
        self.tokens = tokens
        # Auth off is allowed on loopback only, where every caller is the machine's operator: admin.
        self._anonymous = Identity(default_tenant, credential="none", admin=True)

    def identify(
        self, metadata: Iterable[tuple[str, str | bytes]], auth_context: Mapping[str, Sequence[bytes]]
    ) -> Identity:
        """The caller, or :class:`Unauthenticated` (same message whatever was wrong, but for session tokens)."""
        token = bearer_token(metadata)
        if token is not None and self.tokens is not None and token.startswith(TOKEN_PREFIX + "."):
            return self._token_identity(self.tokens, token)
        if not self.required:
            return self._anonymous
        if token is not None:
            identity = self.tenants.verify_key(token)
            if identity is None:
                raise Unauthenticated(_MESSAGE)
            return identity
        tenant = tenant_from_certificate(auth_context)
        if tenant is not None and self.tenants.is_listed(tenant):
            return Identity(tenant, credential="certificate")
        raise Unauthenticated(_MESSAGE)

    def _token_identity(self, tokens: SessionTokens, token: str) -> Identity:
        claims = tokens.verify(token)
        if self.required and not self.tenants.is_listed(claims.tenant_id):
            # The tenant left the tenants file: its tokens die with its keys.
            raise Unauthenticated("the session token is not valid", reason=Reason.TOKEN_INVALID)
        return Identity(claims.tenant_id, credential=f"token:{claims.token_id}", token=claims)


Handler = Any  # grpc.RpcMethodHandler: grpc ships no type information


class AuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Establishes the caller of every call (except health) before its handler runs."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._auth = authenticator

    async def intercept_service(
        self, continuation: Callable[[Any], Awaitable[Handler]], handler_call_details: Any
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method or ""
        return _guarded(handler, None if method.startswith(OPEN_METHOD_PREFIXES) else self._auth, method)


def _guarded(handler: Handler, auth: Authenticator | None, method: str = "") -> Handler:
    """The same handler, each of its behaviours preceded by authentication (unless ``auth`` is None) and taking
    raw bytes: a request that does not parse ends with INVALID_ARGUMENT (``MALFORMED_REQUEST``) instead of
    grpc's UNKNOWN with the parser's error text. Each call's status is counted (``salon.rpc.responses``)."""
    for kind, make in (
        ("unary_unary", grpc.unary_unary_rpc_method_handler),
        ("unary_stream", grpc.unary_stream_rpc_method_handler),
        ("stream_unary", grpc.stream_unary_rpc_method_handler),
        ("stream_stream", grpc.stream_stream_rpc_method_handler),
    ):
        behavior = getattr(handler, kind)
        if behavior is not None:
            parse = handler.request_deserializer or (lambda raw: raw)
            return make(
                _guard(behavior, auth, parse, method, streaming_requests=kind.startswith("stream")),
                request_deserializer=None,
                response_serializer=handler.response_serializer,
            )
    return handler


_MALFORMED = InvalidArgument("the request is not a valid message of this method", reason=Reason.MALFORMED_REQUEST)


async def _decode(request: Any, context: Any, parse: Callable[[bytes], Any], streaming: bool) -> Any:
    """The parsed request (or a parsing iterator of a request stream); aborts the call if it does not parse."""
    if streaming:

        async def parsed() -> AsyncIterator[Any]:
            async for raw in request:
                try:
                    item = parse(raw)
                except Exception:
                    await abort(context, _MALFORMED)
                    return
                yield item

        return parsed()
    try:
        return parse(request)
    except Exception:
        await abort(context, _MALFORMED)


async def _establish(auth: Authenticator | None, context: Any) -> bool:
    if auth is None:
        return True
    try:
        identity = auth.identify(context.invocation_metadata() or (), context.auth_context() or {})
    except Unauthenticated as exc:
        await abort(context, exc)
        return False
    # Each call runs in its own task (and context): the identity cannot leak into another call.
    _caller.set(identity)
    return True


async def _authorize(method: str, request: Any, context: Any, streaming: bool) -> bool:
    """Hold a session token's caller to its session and rights (other callers pass); abort the call otherwise."""
    identity = _caller.get()
    if identity is None or identity.token is None:
        return True
    try:
        apply_scope(identity.token, method, None if streaming else request, streaming=streaming)
    except PermissionDenied as exc:
        await abort(context, exc)
        return False
    return True


def _guard(
    behavior: Callable[..., Any],
    auth: Authenticator | None,
    parse: Callable[[bytes], Any],
    method: str,
    *,
    streaming_requests: bool,
) -> Callable[..., Any]:
    # grpc.aio picks how to drive a handler from its kind (coroutine function or async generator function):
    # the wrapper must be of the same kind.
    if inspect.isasyncgenfunction(behavior):
        return _guard_stream(behavior, auth, parse, method, streaming_requests=streaming_requests)
    if inspect.iscoroutinefunction(behavior):

        async def call(request: Any, context: Any) -> Any:
            outcome = "UNKNOWN"
            try:
                result = None
                if await _establish(auth, context):
                    parsed = await _decode(request, context, parse, streaming_requests)
                    if await _authorize(method, parsed, context, streaming_requests):
                        result = await behavior(parsed, context)
                outcome = "OK"
                return result
            except asyncio.CancelledError:
                outcome = "CANCELLED"
                raise
            finally:
                _count(method, context, outcome)

        return call

    # A synchronous handler would run in a thread pool; the engine registers none. Refuse rather than serve
    # it unauthenticated.
    async def refuse(request: Any, context: Any) -> Any:
        log.error("a synchronous gRPC handler cannot be guarded; refusing the call")
        await abort(context, Unauthenticated(_MESSAGE))

    return refuse


def _guard_stream(
    behavior: Callable[..., Any],
    auth: Authenticator | None,
    parse: Callable[[bytes], Any],
    method: str,
    *,
    streaming_requests: bool,
) -> Callable[..., Any]:
    """:func:`_guard` of an async generator handler (an async generator itself)."""

    async def generate(request: Any, context: Any) -> Any:
        outcome = "UNKNOWN"
        try:
            if await _establish(auth, context):
                parsed = await _decode(request, context, parse, streaming_requests)
                if await _authorize(method, parsed, context, streaming_requests):
                    async for item in behavior(parsed, context):
                        yield item
            outcome = "OK"
        except asyncio.CancelledError:
            outcome = "CANCELLED"
            raise
        finally:
            _count(method, context, outcome)

    return generate


def _count(method: str, context: Any, outcome: str) -> None:
    """Count the call's status: the code a handler set (an abort sets one), else ``outcome`` (OK when the
    handler returned, CANCELLED when the client went away, UNKNOWN when it raised)."""
    metrics = otel.metrics()
    if metrics is None:
        return
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        outcome = code.name
    elif isinstance(code, int):  # some grpc versions keep the bare number
        outcome = next((c.name for c in grpc.StatusCode if c.value[0] == code), outcome)
    metrics.rpc_ended(method, outcome)
