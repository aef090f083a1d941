"""The bridge's side of the gateway: one gRPC channel, the stubs on it, and the metadata of each call.

Each call carries the browser's session token as its credential (the gateway verifies and scopes it) and, when
the page sent them, its W3C trace context headers, so a frontend's trace continues into the turn's.
"""

from __future__ import annotations

import re

import grpc
from starlette.requests import Request

from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import token_service_pb2_grpc as tok_grpc

_TRACE_HEADERS = ("traceparent", "tracestate")
_TRACE_VALUE = re.compile(r"[\x20-\x7e]{1,512}")

Metadata = tuple[tuple[str, str], ...]


class Upstream:
    """A channel to the gateway at ``target`` (plaintext unless ``credentials``) and its stubs.

    Lifecycle: ``start`` (idempotent) then ``close``."""

    def __init__(self, target: str, *, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.target = target
        self._credentials = credentials
        self._channel: grpc.aio.Channel | None = None
        self.conversation: cs_grpc.ConversationServiceStub
        self.tokens: tok_grpc.SessionTokenServiceStub

    def start(self) -> None:
        """Open the channel (it connects on first use and reconnects by itself)."""
        if self._channel is not None:
            return
        options = [("grpc.keepalive_time_ms", 30_000), ("grpc.primary_user_agent", "salon-web-bridge")]
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(self.target, options=options)
        else:
            self._channel = grpc.aio.secure_channel(self.target, self._credentials, options=options)
        self.conversation = cs_grpc.ConversationServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self.tokens = tok_grpc.SessionTokenServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        """Close the channel, cancelling calls still open. Idempotent."""
        channel, self._channel = self._channel, None
        if channel is not None:
            await channel.close()


def call_metadata(token: str, request: Request) -> Metadata:
    """The metadata of a call made for ``request`` with its ``token``."""
    metadata = [("authorization", f"Bearer {token}")]
    for name in _TRACE_HEADERS:
        value = request.headers.get(name)
        if value is not None and _TRACE_VALUE.fullmatch(value):
            metadata.append((name, value))
    return tuple(metadata)
