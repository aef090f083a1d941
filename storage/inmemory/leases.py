"""In-memory reference of :class:`~salon.storage.leases.LeaseStore`, with an injected clock."""

from __future__ import annotations

import time
from collections.abc import Callable

from salon.storage.leases import Lease


class InMemoryLeaseStore:
    """Leases in a dict: each write takes the next revision, and a lease expires ``ttl_s`` after it."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._revision = 0
        self._leases: dict[str, tuple[Lease, float]] = {}
        """Each key's lease and when it expires."""

    @property
    def ttl_s(self) -> float:
        """How long a lease lives after its last write."""
        return self._ttl_s

    def _current(self, key: str) -> Lease | None:
        entry = self._leases.get(key)
        if entry is None:
            return None
        lease, expires = entry
        if self._clock() >= expires:
            del self._leases[key]
            return None
        return lease

    def _write(self, key: str, holder: str) -> Lease:
        self._revision += 1
        lease = Lease(key, holder, self._revision)
        self._leases[key] = (lease, self._clock() + self._ttl_s)
        return lease

    async def create(self, key: str, holder: str) -> Lease | None:
        """Take ``key`` for ``holder`` when nobody holds it; None when someone does."""
        if self._current(key) is not None:
            return None
        return self._write(key, holder)

    async def renew(self, lease: Lease) -> Lease | None:
        """Extend ``lease``; None when it is lost."""
        current = self._current(lease.key)
        if current is None or current.revision != lease.revision:
            return None
        return self._write(lease.key, lease.holder)

    async def release(self, lease: Lease) -> None:
        """Give ``lease`` up (a no-op when it is no longer current)."""
        current = self._current(lease.key)
        if current is not None and current.revision == lease.revision:
            del self._leases[lease.key]

    async def held(self) -> dict[str, Lease]:
        """Every lease alive now, by key."""
        return {key: lease for key in list(self._leases) if (lease := self._current(key)) is not None}
