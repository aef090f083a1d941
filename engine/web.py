"""An engine's browser side: the session tokens, the service that issues them, and the web bridge run in the
engine's process (``web_port``).

The in-process bridge reaches the gateway over its own listener, a Unix socket in a private directory: plaintext
and local, so it works whatever the public port requires (TLS, client certificates) without the bridge holding a
certificate or key. Every call on it still carries the browser's session token through the same interceptors.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from salon.bridge import DEFAULT_PAGE_DIR, BridgeSettings, WebBridge
from salon.engine.config import Config
from salon.engine.session_tokens import SessionTokens
from salon.engine.token_service import SessionTokenServicer, TokenIssuer
from salon.v1 import session_pb2
from salon.v1 import token_service_pb2 as tok_pb2
from salon.v1 import token_service_pb2_grpc as tok_grpc

log = logging.getLogger(__name__)

TOKEN_SERVICE_NAME = tok_pb2.DESCRIPTOR.services_by_name["SessionTokenService"].full_name


class BrowserAccess:
    """Session tokens and, when ``config.web_port`` is not -1, the web bridge of one engine.

    Lifecycle, driven by the engine: :meth:`open` (keys), :meth:`add_to_server` (before the gRPC server starts),
    :meth:`start_bridge` (after it started), :meth:`close` (idempotent)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.tokens = SessionTokens(
            config.session_token_keys_path,
            max_ttl_s=config.session_token_max_ttl_s,
            rotate_s=config.session_token_rotate_s,
        )
        self.bridge: WebBridge | None = None
        self._socket_dir: Path | None = None

    @property
    def web_enabled(self) -> bool:
        """Whether this engine serves the web bridge."""
        return self.config.web_port >= 0

    @property
    def web_url(self) -> str:
        """The bridge's base URL (empty when it is off or not started)."""
        return self.bridge.url if self.bridge is not None else ""

    async def open(self) -> None:
        """Read (or create) the signing keys; a bad keys file stops the engine's start."""
        await asyncio.to_thread(self.tokens.open)

    def add_to_server(self, server: Any, get_session: Callable[[str, str], Awaitable[session_pb2.Session]]) -> None:
        """Register the token service on ``server``, and the bridge's private listener when the bridge is on."""
        issuer = TokenIssuer(self.tokens, get_session, default_ttl_s=self.config.session_token_ttl_s)
        tok_grpc.add_SessionTokenServiceServicer_to_server(SessionTokenServicer(issuer), server)  # type: ignore[no-untyped-call]
        if self.web_enabled:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="salon-web-"))  # mode 0700: this user only
            server.add_insecure_port(f"unix:{self._socket_dir / 'gateway.sock'}")

    async def start_bridge(self) -> None:
        """Start the web bridge (when on), once the gRPC server it calls is serving."""
        if not self.web_enabled or self.bridge is not None or self._socket_dir is None:
            return
        config = self.config
        settings = BridgeSettings(
            host=config.web_host,
            port=config.web_port,
            allowed_origins=tuple(o.strip() for o in config.web_allowed_origins.split(",") if o.strip()),
            page_dir=DEFAULT_PAGE_DIR if config.web_page else None,
            shutdown_grace_s=config.shutdown_grace_s,
        )
        self.bridge = WebBridge(f"unix:{self._socket_dir / 'gateway.sock'}", settings)
        await self.bridge.start()

    async def close(self) -> None:
        """Stop the bridge (open streams get the shutdown grace, then their clients resume elsewhere)."""
        bridge, self.bridge = self.bridge, None
        if bridge is not None:
            await bridge.close()
        socket_dir, self._socket_dir = self._socket_dir, None
        if socket_dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(socket_dir)
