"""Session definitions in a dict: the reference :class:`~salon.storage.sessions.SessionRegistry` for unit tests."""

from __future__ import annotations

from salon.storage.errors import AlreadyExists, NotFound
from salon.storage.sessions import NOT_FOUND_MESSAGE
from salon.v1 import session_pb2


class InMemorySessionRegistry:
    """A :class:`~salon.storage.sessions.SessionRegistry` in a dict. Stores the serialized definition, so a caller
    changing what it got changes nothing stored (as with the real one)."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], bytes] = {}

    async def create(self, tenant_id: str, session: session_pb2.Session) -> None:
        key = (tenant_id, session.session_id)
        if key in self._data:
            raise AlreadyExists("a session with this id already exists", reason="SESSION_EXISTS")
        self._data[key] = session.SerializeToString()

    async def get(self, tenant_id: str, session_id: str) -> session_pb2.Session:
        try:
            session: session_pb2.Session = session_pb2.Session.FromString(self._data[(tenant_id, session_id)])
            return session
        except KeyError:
            raise NotFound(NOT_FOUND_MESSAGE, reason="SESSION_NOT_FOUND") from None

    async def put(self, tenant_id: str, session: session_pb2.Session) -> None:
        self._data[(tenant_id, session.session_id)] = session.SerializeToString()

    async def delete(self, tenant_id: str, session_id: str) -> None:
        if self._data.pop((tenant_id, session_id), None) is None:
            raise NotFound(NOT_FOUND_MESSAGE, reason="SESSION_NOT_FOUND")

    async def list_ids(self, tenant_id: str) -> list[str]:
        return sorted(s for t, s in self._data if t == tenant_id)
