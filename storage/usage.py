"""Per-tenant counters shared by every gateway of a deployment, so limits and budgets hold behind a load
balancer: tokens used per UTC day (:class:`TokenCounters`), and turns started in the last minute and running now
(:class:`TurnCounters`).

The JetStream key-value versions are :mod:`salon.storage.jetstream.usage`; :mod:`salon.storage.inmemory` holds
the one-process versions (also the references for unit tests). Both keep a tenant's turns in a
:class:`TurnWindow`, so the rules are the same code on either.

Counts are written as absolute figures per writer (one gateway's run), never as increments: a write repeated
after an unclear failure (a timeout after the server stored it) counts nothing twice, so no retry can inflate a
total and none is ever given up on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from salon.storage.reasons import Reason

WINDOW_S = 60.0
"""The span of the turns-per-minute limit (sliding)."""
LEASE_S = 15.0
"""How long a gateway's running turns count after it last said so: a gateway that dies without releasing its
turns stops holding their places this long after its last renewal (it renews every third of it)."""
CONCURRENT_RETRY_S = 1.0
"""The retry hint of a refusal for too many running turns (when one ends cannot be known)."""


class TokenCounters(Protocol):
    """Tokens used per tenant and day, counted by writers (gateways) that each record their own running total."""

    async def record(self, tenant_id: str, day: int, writer: str, total: int) -> int:
        """Record that ``writer`` has counted ``total`` tokens of the tenant on ``day`` so far, and return the
        tenant's total over every writer. Recording the same figure again counts nothing twice; a figure lower
        than the one recorded changes nothing. Raises :class:`~salon.storage.errors.Unavailable` when the store
        cannot be reached (nothing recorded: try again later)."""
        ...

    async def get(self, tenant_id: str, day: int) -> int:
        """The tenant's total on ``day`` over every writer (0 if none)."""
        ...


@dataclass(frozen=True, slots=True)
class TurnLimits:
    """The limits a tenant's new turn is checked against (0: none)."""

    turns_per_minute: int = 0
    concurrent_turns: int = 0


@dataclass(frozen=True, slots=True)
class TurnRefusal:
    """Why a turn may not start now, and when trying again can help."""

    reason: Reason
    retry_after_s: float


@dataclass(frozen=True, slots=True)
class TurnFigures:
    """A tenant's turns started in the last minute and running now, over every gateway."""

    turns_last_minute: int
    concurrent_turns: int


class TurnCounters(Protocol):
    """A tenant's turns started in the last minute and its running turns, over every holder (gateway run).

    ``now`` is the wall clock in seconds (gateways' clocks are assumed to agree to well under a second)."""

    async def admit(
        self, tenant_id: str, holder: str, active: int, limits: TurnLimits, *, now: float
    ) -> TurnRefusal | None:
        """In one step: refuse the turn if the last minute holds ``limits.turns_per_minute`` started turns or the
        running turns of the other holders plus ``active`` (``holder``'s own, before this one) reach
        ``limits.concurrent_turns``; otherwise count it as started and set ``holder``'s running turns to
        ``active + 1``, leased for :data:`LEASE_S`. Raises :class:`~salon.storage.errors.Unavailable` when the
        store cannot be reached."""
        ...

    async def hold(self, tenant_id: str, holder: str, active: int, *, now: float) -> None:
        """Set ``holder``'s running turns to ``active`` (absolute, so repeating it is harmless) and renew its
        lease; 0 removes the holder."""
        ...

    async def figures(self, tenant_id: str, *, now: float) -> TurnFigures:
        """The tenant's figures now."""
        ...


class TurnWindow:
    """One tenant's turns: those started in the last minute, per second of the wall clock (how many, and when
    the latest of them started), and the running ones, per holder (how many, and until when its lease runs).

    A second's turns leave the window a minute after the latest of them started, so no sliding minute ever
    holds more than the limit, whatever the number of turns (the state stays at most 61 entries plus one per
    holder)."""

    __slots__ = ("holders", "started")

    def __init__(
        self,
        started: dict[int, tuple[int, float]] | None = None,
        holders: dict[str, tuple[int, float]] | None = None,
    ) -> None:
        self.started: dict[int, tuple[int, float]] = started if started is not None else {}
        self.holders: dict[str, tuple[int, float]] = holders if holders is not None else {}

    def prune(self, now: float) -> None:
        """Forget turns that left the window and holders whose lease ran out."""
        for second in [s for s, (_, latest) in self.started.items() if latest <= now - WINDOW_S]:
            del self.started[second]
        for holder in [h for h, (_, until) in self.holders.items() if until <= now]:
            del self.holders[holder]

    def figures(self, now: float) -> TurnFigures:
        """Started and running turns now (over every live holder)."""
        self.prune(now)
        return TurnFigures(
            turns_last_minute=sum(count for count, _ in self.started.values()),
            concurrent_turns=sum(count for count, _ in self.holders.values()),
        )

    def admit(
        self, holder: str, active: int, limits: TurnLimits, now: float, lease_s: float = LEASE_S
    ) -> TurnRefusal | None:
        """See :meth:`TurnCounters.admit`."""
        self.prune(now)
        if limits.turns_per_minute:
            started = sum(count for count, _ in self.started.values())
            if started >= limits.turns_per_minute:
                oldest = min(latest for _, latest in self.started.values())
                return TurnRefusal(Reason.TURNS_PER_MINUTE, max(oldest + WINDOW_S - now, 0.001))
        if limits.concurrent_turns:
            others = sum(count for h, (count, _) in self.holders.items() if h != holder)
            if others + active >= limits.concurrent_turns:
                return TurnRefusal(Reason.CONCURRENT_TURNS, CONCURRENT_RETRY_S)
        second = int(now)
        count, latest = self.started.get(second, (0, now))
        self.started[second] = (count + 1, max(latest, now))
        self.holders[holder] = (active + 1, now + lease_s)
        return None

    def hold(self, holder: str, active: int, now: float, lease_s: float = LEASE_S) -> None:
        """See :meth:`TurnCounters.hold`."""
        self.prune(now)
        if active > 0:
            self.holders[holder] = (active, now + lease_s)
        else:
            self.holders.pop(holder, None)

    def to_bytes(self) -> bytes:
        """The window as stored (compact JSON)."""
        return json.dumps(
            {
                "s": [[s, c, t] for s, (c, t) in self.started.items()],
                "h": {h: [c, u] for h, (c, u) in self.holders.items()},
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes | None) -> TurnWindow:
        """A stored window (empty for no data)."""
        if not data:
            return cls()
        raw = json.loads(data)
        return cls(
            {int(s): (int(c), float(t)) for s, c, t in raw.get("s", [])},
            {str(h): (int(c), float(u)) for h, (c, u) in raw.get("h", {}).items()},
        )
