"""Salon in the browser: an HTTP bridge to the gateway's gRPC API, with Server-Sent Events for turn streams.

Why SSE over plain HTTP (and not gRPC-Web, Connect or WebSocket): a frontend team needs nothing of ours to use it,
no generated code, no proxy and no build chain. ``fetch`` and ``EventSource`` are in every browser, ``curl -N``
reads a stream, and SSE's ``id:`` / ``Last-Event-ID`` are exactly Salon's per-turn sequence numbers, so a dropped
stream resumes without gaps or repeats by the standard's own mechanism. Turns are server-to-client streams; the
few client-to-server actions (cancel, tool results, approvals) are ordinary POSTs, so a WebSocket's two-way
channel would add a protocol of our own to define and keep, while losing HTTP's caching-free, proxy-friendly,
per-request status codes. gRPC-Web needs a proxy or a maintained Python server implementation (the one there is
has not moved since 2023) and generated client code in the page.

The bridge is a thin client of the gateway: each endpoint is one gRPC call made with the browser's session token
(``authorization: Bearer sst1.…``), which the gateway verifies and scopes. The bridge takes no API key, holds no
secret and keeps no state, so it runs in the engine's process (``salon serve --web PORT``) or alone in front of
any gateway (``python -m bridge``).
"""

from __future__ import annotations

from salon.bridge.errors import BridgeError
from salon.bridge.links import PAGE_RIGHTS, PageLink, mint_page_link, page_url
from salon.bridge.routes import Limits
from salon.bridge.server import DEFAULT_PAGE_DIR, BridgeSettings, WebBridge
from salon.bridge.sse import SseDecoder, SseMessage

__all__ = [
    "DEFAULT_PAGE_DIR",
    "PAGE_RIGHTS",
    "BridgeError",
    "BridgeSettings",
    "Limits",
    "PageLink",
    "SseDecoder",
    "SseMessage",
    "WebBridge",
    "mint_page_link",
    "page_url",
]
