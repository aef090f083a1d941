"""The token counters' contract: tokens used per tenant and UTC day, shared by every gateway of a deployment
so budgets hold behind a load balancer. The JetStream key-value counters are :mod:`salon.storage.jetstream.usage`;
:mod:`salon.storage.inmemory` holds the one-gateway version (also the reference for unit tests)."""

from __future__ import annotations

from typing import Protocol


class TokenCounters(Protocol):
    """Tokens used per tenant and day."""

    async def add(self, tenant_id: str, day: int, tokens: int) -> int:
        """Add ``tokens`` and return the new total."""
        ...

    async def get(self, tenant_id: str, day: int) -> int:
        """The total so far (0 if none)."""
        ...
