"""Erasing a user (a GDPR erasure): every session of the user goes the way ``DeleteSession`` takes (definition,
ledger entries, transcripts, snapshots, memories), its turns' events (kept for resuming streams) are purged,
then every row still carrying the user's id is deleted (memories indexed after their session was deleted,
transcript rows of a session deleted earlier).

The knowledge base has no owner below the tenant, so it holds nothing of a user to erase.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from salon.storage import NotFound, SessionRegistry, require_id

SessionAction = Callable[[str, str], Awaitable[None]]
"""Something done to one session: ``(tenant_id, session_id)``."""
RowEraser = Callable[[str, str], Awaitable[int]]
"""``(tenant_id, user_id)`` -> memory rows deleted: :meth:`salon.storage.tables.TranscriptStore.erase_user`."""


@dataclass(frozen=True, slots=True)
class Erased:
    """What an erasure removed."""

    sessions: int
    memories: int
    """Memory rows removed besides those of the sessions deleted now."""


class UserEraser:
    """Finds a user's sessions in the registry and deletes them and every row of the user."""

    def __init__(
        self,
        registry: SessionRegistry,
        delete_session: SessionAction,
        erase_rows: RowEraser,
        purge_events: SessionAction | None = None,
    ) -> None:
        self._registry = registry
        self._delete_session = delete_session
        self._erase_rows = erase_rows
        self._purge_events = purge_events

    async def erase(self, tenant_id: str, user_id: str) -> Erased:
        """Erase the user ``user_id`` of ``tenant_id``; erasing one with nothing stored removes nothing.

        Sessions first, then the rows by user id: a memory the indexer writes for a session between the two
        steps carries the user's id, so the second step removes it."""
        require_id(tenant_id, "tenant_id")
        require_id(user_id, "user_id")
        deleted = 0
        for session_id in await self._registry.list_ids(tenant_id):
            try:
                session = await self._registry.get(tenant_id, session_id)
            except NotFound:
                continue  # deleted meanwhile
            if session.user_id != user_id:
                continue
            try:
                await self._delete_session(tenant_id, session_id)
            except NotFound:
                continue
            if self._purge_events is not None:
                await self._purge_events(tenant_id, session_id)
            deleted += 1
        memories = await self._erase_rows(tenant_id, user_id)
        return Erased(sessions=deleted, memories=memories)
