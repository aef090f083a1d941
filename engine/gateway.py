"""The gateway's logic: sessions in the registry, turns onto the bus, events back.

It holds no session state, so any number of gateways can serve the same deployment. The gRPC servicer
(``engine.servicer``) is a thin adapter over this class.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncIterator, Mapping

from google.protobuf.timestamp_pb2 import Timestamp

from actors import shard_for
from engine.config import Config
from engine.validation import check_create_session, check_send_turn, page_size
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import session_pb2, turn_pb2
from storage import (
    InvalidArgument,
    Names,
    SessionRegistry,
    SnapshotStore,
    TurnEnvelope,
    TurnPublisher,
    require_id,
    uuid7,
)


def incarnation_of(session: session_pb2.Session) -> str:
    """A session's incarnation: its creation time, unique per (tenant, id) over time."""
    return str(session.create_time.ToNanoseconds())


def _encode_token(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode()


def _decode_token(token: str) -> str:
    try:
        last_id = base64.urlsafe_b64decode(token.encode()).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidArgument("page_token is not valid", reason="BAD_PAGE_TOKEN") from None
    require_id(last_id, "page_token")
    return last_id


class Gateway:
    """Session management and the turn path, for one tenant at a time (the caller's)."""

    def __init__(
        self,
        config: Config,
        publisher: TurnPublisher,
        registry: SessionRegistry,
        snapshots: SnapshotStore,
    ) -> None:
        self._config = config
        self._publisher = publisher
        self._registry = registry
        self._snapshots = snapshots
        self.names = Names(config.namespace)

    @property
    def bus_connected(self) -> bool:
        """Whether the turn bus is reachable now."""
        return self._publisher.connected

    async def create_session(self, tenant_id: str, request: cs_pb2.CreateSessionRequest) -> session_pb2.Session:
        """Store a new session (named by the caller or with a new UUIDv7)."""
        check_create_session(request)
        now = time.time_ns()
        session = session_pb2.Session(
            session_id=request.session_id or uuid7(),
            metadata=dict(request.metadata),
            system_prompt=request.system_prompt,
            memory=request.memory,
            double_texting=request.double_texting or session_pb2.DOUBLE_TEXTING_POLICY_ENQUEUE,
            model=request.model,
            create_time=Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000),
        )
        await self._registry.create(tenant_id, session)
        return session

    async def get_session(self, tenant_id: str, session_id: str) -> session_pb2.Session:
        """The session with its live counters; NOT_FOUND if the tenant has none by that id."""
        require_id(session_id, "session_id")
        session = await self._registry.get(tenant_id, session_id)
        snapshot = await self._snapshots.load(tenant_id, session_id)
        if snapshot and snapshot.get("incarnation") == incarnation_of(session):
            session.turn_count = int(snapshot.get("turn_count", 0))
        return session

    async def list_sessions(
        self, tenant_id: str, request: cs_pb2.ListSessionsRequest
    ) -> tuple[list[session_pb2.Session], str]:
        """One page of the tenant's sessions (ordered by id) matching the metadata filter."""
        size = page_size(request.page_size)
        after = _decode_token(request.page_token) if request.page_token else ""
        wanted = dict(request.metadata_filter)
        ids = [i for i in await self._registry.list_ids(tenant_id) if i > after]
        page: list[session_pb2.Session] = []
        for index, session_id in enumerate(ids):
            try:
                session = await self._registry.get(tenant_id, session_id)
            except Exception:
                continue  # deleted while listing
            if all(session.metadata.get(k) == v for k, v in wanted.items()):
                page.append(session)
            if len(page) == size:
                more = index + 1 < len(ids)
                return page, _encode_token(session_id) if more else ""
        return page, ""

    async def delete_session(self, tenant_id: str, session_id: str) -> None:
        """Remove the session and its state."""
        require_id(session_id, "session_id")
        await self._registry.delete(tenant_id, session_id)
        await self._snapshots.delete(tenant_id, session_id)

    async def send_turn(
        self,
        tenant_id: str,
        request: cs_pb2.SendTurnRequest,
        *,
        trace_headers: Mapping[str, str],
        timeout_s: float | None = None,
    ) -> AsyncIterator[turn_pb2.TurnEvent]:
        """Validate, publish the turn, and yield its events until the terminal one.

        The turn is named by the idempotency key when given, so a retry finds the same turn: running, it is
        joined; finished within the event retention, its events are replayed.
        """
        check_send_turn(request, self._config.max_text_bytes)
        session = await self._registry.get(tenant_id, request.session_id)
        turn_id = request.idempotency_key or uuid7()
        envelope = TurnEnvelope(
            tenant_id=tenant_id,
            turn_id=turn_id,
            request=request,
            trace_headers=trace_headers,
            enqueued_at_ns=time.time_ns(),
            incarnation=incarnation_of(session),
        )
        shard = shard_for(tenant_id, request.session_id, self._config.num_shards)
        await self._publisher.publish(envelope, shard)
        wait = self._config.turn_timeout_s if timeout_s is None else min(timeout_s, self._config.turn_timeout_s)
        async for event in self._publisher.events(tenant_id, request.session_id, turn_id, timeout_s=wait):
            yield event
