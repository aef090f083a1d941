"""The session registry's contract: session definitions (what ``CreateSession`` stored), per tenant.

The JetStream key-value registry is :mod:`salon.storage.jetstream.sessions`; :mod:`salon.storage.inmemory` holds a
reference for unit tests. (Session state lives in the ledger: :mod:`salon.storage.ledger`.)
"""

from __future__ import annotations

from typing import Protocol

from salon.v1 import session_pb2

NOT_FOUND_MESSAGE = "session not found"


class SessionRegistry(Protocol):
    """Session definitions (what ``CreateSession`` stored), per tenant."""

    async def create(self, tenant_id: str, session: session_pb2.Session) -> None:
        """Store a new session; :class:`AlreadyExists` if the id is taken in this tenant."""
        ...

    async def get(self, tenant_id: str, session_id: str) -> session_pb2.Session:
        """The session; :class:`NotFound` if this tenant has no such session."""
        ...

    async def put(self, tenant_id: str, session: session_pb2.Session) -> None:
        """Overwrite an existing session's definition."""
        ...

    async def delete(self, tenant_id: str, session_id: str) -> None:
        """Remove the session; :class:`NotFound` if this tenant has no such session."""
        ...

    async def list_ids(self, tenant_id: str) -> list[str]:
        """Ids of the tenant's sessions, sorted."""
        ...


def incarnation_of(session: session_pb2.Session) -> str:
    """A session's incarnation: its creation time, unique per (tenant, id) over time. A session deleted and
    created again under the same id is a new incarnation and must not inherit the old one's memory."""
    return str(session.create_time.ToNanoseconds())
