"""Session definitions the gateway read recently, so a turn does not wait for a registry read.

A definition never changes after ``CreateSession``: it is only deleted (and perhaps created again under the
same id, as a new incarnation). So an entry is right until its session is deleted, and it is forgotten then:
at once when this gateway deletes it, and within moments when another gateway does, through the registry's
change feed (:class:`~salon.storage.jetstream.session_changes.SessionChanges`). Entries are only kept while the
feed runs on an unbroken connection (a reconnect clears the cache: the feed may have missed changes) and for
at most ``ttl_s`` in any case.

A stale entry could only make a turn carry a deleted incarnation; the host then refuses it (``NOT_FOUND``) or
runs it on the live incarnation, as it does for a turn that raced a delete.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

from salon.storage import SessionRegistry
from salon.v1 import session_pb2

CACHE_TTL_S = 10.0
CACHE_ENTRIES = 10_000
FEED_RECOVERY_S = 20.0
"""After a reconnect, how long nothing is kept: the change feed's consumer notices the break by missed
heartbeats and goes on from its last change within this time."""


class SessionCache:
    """Reads definitions through ``registry``, keeping them once :meth:`enable` says changes are watched."""

    def __init__(
        self,
        registry: SessionRegistry,
        *,
        ttl_s: float = CACHE_TTL_S,
        max_entries: int = CACHE_ENTRIES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._ttl_s = ttl_s
        self._max_entries = max_entries
        self._clock = clock
        self._entries: collections.OrderedDict[tuple[str, str], tuple[session_pb2.Session, float]] = (
            collections.OrderedDict()
        )
        self._epoch = 0
        """Bumped by every forget: a read that began before one is not kept (it may be what was forgotten)."""
        self._watched: Callable[[], int] | None = None
        self._connection = 0
        self._paused_until = 0.0

    def enable(self, connection: Callable[[], int]) -> None:
        """Keep entries from now on; ``connection`` numbers the NATS connection the change feed runs on (its
        reconnect count): when it moves, everything is forgotten."""
        self._watched = connection
        self._connection = connection()

    def _current(self) -> bool:
        watched = self._watched
        if watched is None:
            return False
        if watched() != self._connection:
            self._connection = watched()
            self.clear()
            self._paused_until = self._clock() + FEED_RECOVERY_S
        return self._clock() >= self._paused_until

    async def get(self, tenant_id: str, session_id: str) -> session_pb2.Session:
        """The session (do not change it: it may be shared); :class:`NotFound` if the tenant has none by that id."""
        key = (tenant_id, session_id)
        if self._current():
            hit = self._entries.get(key)
            if hit is not None and self._clock() < hit[1]:
                self._entries.move_to_end(key)
                return hit[0]
        epoch = self._epoch
        session = await self._registry.get(tenant_id, session_id)
        if epoch == self._epoch and self._current():
            self._entries[key] = (session, self._clock() + self._ttl_s)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        return session

    def forget(self, tenant_id: str, session_id: str) -> None:
        """Drop the session's entry (it was written: deleted, or created again)."""
        self._epoch += 1
        self._entries.pop((tenant_id, session_id), None)

    def clear(self) -> None:
        """Drop every entry."""
        self._epoch += 1
        self._entries.clear()
