"""Per-tenant counters in dicts: the counters of a single gateway, and the references of
:class:`~salon.storage.usage.TokenCounters` and :class:`~salon.storage.usage.TurnCounters` for unit tests."""

from __future__ import annotations

from salon.storage.usage import LEASE_S, TurnFigures, TurnLimits, TurnRefusal, TurnWindow


class InMemoryTokenCounters:
    """A :class:`~salon.storage.usage.TokenCounters` in a dict (one gateway, unit tests)."""

    def __init__(self) -> None:
        self._totals: dict[tuple[str, int], dict[str, int]] = {}

    async def get(self, tenant_id: str, day: int) -> int:
        return sum(self._totals.get((tenant_id, day), {}).values())

    async def record(self, tenant_id: str, day: int, writer: str, total: int) -> int:
        writers = self._totals.setdefault((tenant_id, day), {})
        writers[writer] = max(writers.get(writer, 0), total)
        # Only today's and yesterday's totals matter; drop the rest.
        for stale in [k for k in self._totals if k[1] < day - 1]:
            del self._totals[stale]
        return sum(writers.values())


class InMemoryTurnCounters:
    """A :class:`~salon.storage.usage.TurnCounters` in a dict (one gateway, unit tests)."""

    def __init__(self, lease_s: float = LEASE_S) -> None:
        self._lease_s = lease_s
        self._windows: dict[str, TurnWindow] = {}

    async def admit(
        self, tenant_id: str, holder: str, active: int, limits: TurnLimits, *, now: float
    ) -> TurnRefusal | None:
        return self._windows.setdefault(tenant_id, TurnWindow()).admit(holder, active, limits, now, self._lease_s)

    async def hold(self, tenant_id: str, holder: str, active: int, *, now: float) -> None:
        self._windows.setdefault(tenant_id, TurnWindow()).hold(holder, active, now, self._lease_s)

    async def figures(self, tenant_id: str, *, now: float) -> TurnFigures:
        return self._windows.get(tenant_id, TurnWindow()).figures(now)
