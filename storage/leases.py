"""The lease contract: keys held by one holder at a time for a time-to-live, renewed by the holder.

Shard ownership is built on it (``actors.shard_leases``): a key per shard names the host that owns it, and a key
per host says the host is alive. Every change is checked against the revision the caller last saw, so two
holders never both hold a key: a holder that missed a renewal finds its next one refused, and a key whose holder
died expires after the time-to-live and can be created anew.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Lease:
    """One held key: who holds it, and the revision its next renewal or release must name."""

    key: str
    holder: str
    revision: int


class LeaseStore(Protocol):
    """Leases with a time-to-live. Every method raises :class:`~salon.storage.errors.Unavailable` when the store
    cannot be reached."""

    @property
    def ttl_s(self) -> float:
        """How long a lease lives after its last write."""
        ...

    async def create(self, key: str, holder: str) -> Lease | None:
        """Take ``key`` for ``holder`` when nobody holds it; None when someone does."""
        ...

    async def renew(self, lease: Lease) -> Lease | None:
        """Extend ``lease`` by the time-to-live; None when it is lost (expired, released or taken since)."""
        ...

    async def release(self, lease: Lease) -> None:
        """Give ``lease`` up (nothing happens when it is no longer current)."""
        ...

    async def held(self) -> dict[str, Lease]:
        """Every lease alive now, by key."""
        ...
