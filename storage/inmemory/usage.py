"""Token totals in a dict: the counters of a single gateway, and the reference
:class:`~salon.storage.usage.TokenCounters` for unit tests."""

from __future__ import annotations


class InMemoryTokenCounters:
    """A :class:`~salon.storage.usage.TokenCounters` in a dict (one gateway, unit tests)."""

    def __init__(self) -> None:
        self._totals: dict[tuple[str, int], int] = {}

    async def get(self, tenant_id: str, day: int) -> int:
        return self._totals.get((tenant_id, day), 0)

    async def add(self, tenant_id: str, day: int, tokens: int) -> int:
        total = self._totals.get((tenant_id, day), 0) + tokens
        self._totals[(tenant_id, day)] = total
        # Only today's and yesterday's totals matter; drop the rest.
        for stale in [k for k in self._totals if k[1] < day - 1]:
            del self._totals[stale]
        return total
