"""The async client: sessions as objects, turns as async iterators of events."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import grpc

from salon.client.errors import SalonError
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import session_pb2, turn_pb2


@dataclass
class Reply:
    """A whole turn, collected: the answer text and how the turn ended."""

    turn_id: str
    text: str
    events: list[turn_pb2.TurnEvent] = field(default_factory=list)
    time_to_first_token_s: float | None = None
    outcome: str = ""
    """``completed``, ``error`` or ``cancelled``."""

    @property
    def usage(self) -> turn_pb2.Usage | None:
        """The turn's usage event, if it had one."""
        for event in self.events:
            if event.HasField("usage"):
                return event.usage
        return None

    @property
    def error(self) -> turn_pb2.TurnError | None:
        """The turn's error event, if it failed."""
        for event in self.events:
            if event.HasField("error"):
                return event.error
        return None


class Session:
    """A session on the server; send it turns."""

    def __init__(self, client: SalonClient, proto: session_pb2.Session) -> None:
        self._client = client
        self.proto = proto

    @property
    def id(self) -> str:
        """The session id."""
        return self.proto.session_id

    def send(
        self, text: str, *, idempotency_key: str | None = None, timeout_s: float | None = None
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """Send a turn and iterate over its events until the turn ends.

        Every turn carries an idempotency key (a new one unless given), so resending the same turn with the
        same key never runs it twice.
        """
        return self._client.send_turn(self.id, text, idempotency_key=idempotency_key, timeout_s=timeout_s)

    async def ask(self, text: str, *, idempotency_key: str | None = None, timeout_s: float | None = None) -> Reply:
        """Send a turn and collect its whole answer."""
        start = time.perf_counter()
        reply = Reply(turn_id="", text="")
        parts: list[str] = []
        async for event in self.send(text, idempotency_key=idempotency_key, timeout_s=timeout_s):
            reply.turn_id = event.turn_id
            reply.events.append(event)
            kind = event.WhichOneof("kind")
            if kind == "delta":
                if reply.time_to_first_token_s is None:
                    reply.time_to_first_token_s = time.perf_counter() - start
                parts.append(event.delta.text)
            elif kind in ("completed", "error", "cancelled"):
                reply.outcome = kind
        reply.text = "".join(parts)
        return reply

    async def refresh(self) -> Session:
        """Reload the session from the server."""
        self.proto = (await self._client.get_session(self.id)).proto
        return self

    async def delete(self) -> None:
        """Delete the session."""
        await self._client.delete_session(self.id)


class SalonClient:
    """A connection to a Salon gateway. Use as ``async with SalonClient(target) as client``."""

    def __init__(
        self,
        target: str,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        metadata: Sequence[tuple[str, str]] = (),
        options: Sequence[tuple[str, object]] = (),
    ) -> None:
        self.target = target
        self._metadata = tuple(metadata)
        opts = list(options)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=opts)
        else:
            self._channel = grpc.aio.secure_channel(target, credentials, options=opts)
        self.stub = cs_grpc.ConversationServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> SalonClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel. Idempotent."""
        await self._channel.close()

    async def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until the channel is connected."""
        await asyncio.wait_for(self._channel.channel_ready(), timeout_s)

    async def create_session(
        self,
        *,
        session_id: str = "",
        system_prompt: str = "",
        metadata: Mapping[str, str] | None = None,
        memory: session_pb2.MemorySettings | None = None,
        model: session_pb2.ModelSettings | None = None,
        double_texting: session_pb2.DoubleTextingPolicy = session_pb2.DOUBLE_TEXTING_POLICY_UNSPECIFIED,
    ) -> Session:
        """Open a session (with a chosen id, or let the server name it)."""
        request = cs_pb2.CreateSessionRequest(
            session_id=session_id,
            system_prompt=system_prompt,
            metadata=dict(metadata or {}),
            memory=memory,
            model=model,
            double_texting=double_texting,
        )
        response = await self._unary(self.stub.CreateSession, request)
        return Session(self, response.session)

    async def get_session(self, session_id: str) -> Session:
        """The session with this id."""
        response = await self._unary(self.stub.GetSession, cs_pb2.GetSessionRequest(session_id=session_id))
        return Session(self, response.session)

    async def list_sessions(
        self, *, metadata_filter: Mapping[str, str] | None = None, page_size: int = 0
    ) -> AsyncIterator[Session]:
        """Every session of the caller (matching the filter), following pages."""
        token = ""
        while True:
            request = cs_pb2.ListSessionsRequest(
                page_size=page_size, page_token=token, metadata_filter=dict(metadata_filter or {})
            )
            response = await self._unary(self.stub.ListSessions, request)
            for proto in response.sessions:
                yield Session(self, proto)
            token = response.next_page_token
            if not token:
                return

    async def delete_session(self, session_id: str) -> None:
        """Delete a session."""
        await self._unary(self.stub.DeleteSession, cs_pb2.DeleteSessionRequest(session_id=session_id))

    async def send_turn(
        self, session_id: str, text: str, *, idempotency_key: str | None = None, timeout_s: float | None = None
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """Send a turn to a session and iterate over its events until the turn ends."""
        request = cs_pb2.SendTurnRequest(
            session_id=session_id, text=text, idempotency_key=idempotency_key or str(uuid.uuid4())
        )
        call = self.stub.SendTurn(request, metadata=self._metadata, timeout=timeout_s)
        try:
            async for response in call:
                yield response.event
        except grpc.aio.AioRpcError as exc:
            raise SalonError.from_rpc_error(exc) from None
        finally:
            call.cancel()

    async def _unary(self, method: Any, request: object) -> Any:
        try:
            return await method(request, metadata=self._metadata)
        except grpc.aio.AioRpcError as exc:
            raise SalonError.from_rpc_error(exc) from None
