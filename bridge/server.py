"""The bridge as a running HTTP server: a Starlette app on uvicorn, inside whatever asyncio loop starts it.

``salon serve --web PORT`` runs it in the engine's process (``Engine`` starts and stops it with the gateway);
``python -m bridge --target HOST:PORT`` runs it alone in front of any gateway. Either way it is a client of the
gateway's gRPC API and holds no secret.

Uvicorn is driven step by step (``startup``, its tick loop, ``shutdown``) rather than through ``serve()``, which
would install its own SIGINT/SIGTERM handlers over the engine's drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from salon.bridge.errors import BridgeError
from salon.bridge.routes import Limits, Routes, error_response
from salon.bridge.upstream import Upstream

log = logging.getLogger(__name__)

DEFAULT_PAGE_DIR = Path(__file__).parent / "web"
"""The example chat page (``clients/web``: one HTML file, one JS module, one stylesheet; no build step),
installed with the package as ``salon/bridge/web`` (in the repository a link to ``clients/web``)."""

_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = (
    ("content-security-policy", _CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)


@dataclass(frozen=True)
class BridgeSettings:
    """Where the bridge listens and what it serves. ``port`` 0 picks a free one; ``page_dir`` None serves no page."""

    host: str = "127.0.0.1"
    port: int = 0
    allowed_origins: tuple[str, ...] = ()
    page_dir: Path | None = DEFAULT_PAGE_DIR
    limits: Limits = field(default_factory=Limits)
    shutdown_grace_s: float = 5.0


class SecurityHeaders:
    """Adds the page's security headers to every response (a plain ASGI middleware, so streams stay streams)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _HEADERS:
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    # Unknown paths and methods answer in the same JSON shape as every other refusal.
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    reason = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}.get(status, "HTTP_ERROR")
    message = {404: "no such endpoint or file", 405: "this endpoint does not take this method"}.get(status, "")
    code = grpc.StatusCode.NOT_FOUND if status == 404 else grpc.StatusCode.INVALID_ARGUMENT
    return error_response(BridgeError(code, reason, message or "the request cannot be served", status=status))


async def _internal(request: Request, exc: Exception) -> Response:
    log.error("the web bridge failed to handle a request", exc_info=exc)
    return JSONResponse(
        BridgeError(grpc.StatusCode.INTERNAL, "INTERNAL", "the bridge failed to handle this request").body(),
        status_code=500,
    )


def build_app(upstream: Upstream, settings: BridgeSettings) -> Starlette:
    """The bridge's ASGI app: the API under ``/v1``, ``/healthz``, and the chat page at ``/``."""
    endpoints = Routes(upstream, settings.limits)
    api = [Route(path, endpoint, methods=[method]) for method, path, endpoint in endpoints.endpoints()]
    # The API in a mount of its own: an unknown path or method under /v1 never falls through to the page's files.
    routes: list[BaseRoute] = [Route("/healthz", endpoints.health, methods=["GET"]), Mount("/v1", routes=api)]
    if settings.page_dir is not None:
        routes.append(Mount("/", app=StaticFiles(directory=settings.page_dir, html=True), name="page"))
    middleware = [Middleware(SecurityHeaders)]
    if settings.allowed_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(settings.allowed_origins),
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "last-event-id", "traceparent", "tracestate"],
                max_age=600,
            )
        )
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={HTTPException: _http_error, Exception: _internal},
    )


class WebBridge:
    """The bridge to the gateway at ``target``. Lifecycle: ``start`` then ``close`` (both idempotent)."""

    def __init__(
        self, target: str, settings: BridgeSettings, *, credentials: grpc.ChannelCredentials | None = None
    ) -> None:
        self.settings = settings
        self._upstream = Upstream(target, credentials=credentials)
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._ticks: asyncio.Task[None] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """The bridge's base URL (``http://host:port``)."""
        host = self.settings.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    async def start(self) -> None:
        """Listen (the port is known when this returns)."""
        if self._server is not None:
            return
        self._upstream.start()
        settings = self.settings
        config = uvicorn.Config(
            build_app(self._upstream, settings),
            http="h11",
            ws="none",
            lifespan="off",
            log_config=None,  # the engine's logging stays as the engine set it up
            access_log=False,  # access lines would carry ?access_token= of EventSource clients
            server_header=False,
            timeout_graceful_shutdown=max(1, math.ceil(settings.shutdown_grace_s)),
        )
        config.load()
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
        sock.set_inheritable(True)
        self._socket = sock
        self.port = sock.getsockname()[1]
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)  # as serve() would, before startup
        self._server = server
        await server.startup(sockets=[sock])
        self._ticks = asyncio.create_task(server.main_loop(), name="salon-web-bridge")
        log.info("web bridge on %s (gateway %s)", self.url, self._upstream.target)

    async def close(self) -> None:
        """Stop taking connections; streams still open get ``shutdown_grace_s`` to end, then are cut (their
        clients resume elsewhere). Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
            ticks, self._ticks = self._ticks, None
            if ticks is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await ticks
            if server.started:
                await server.shutdown(sockets=[self._socket] if self._socket is not None else None)
        if self._socket is not None:
            self._socket.close()
        self._socket = None
        await self._upstream.close()
