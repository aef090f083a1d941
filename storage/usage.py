"""Token totals per tenant and UTC day, shared by every gateway of a deployment: a JetStream key-value bucket
(``<ns>_usage``, key ``<tenant>.<day>``) updated by compare-and-set, so budgets hold behind a load balancer.
Entries expire after a few days. An in-memory version serves unit tests and a gateway without NATS."""

from __future__ import annotations

from typing import Protocol

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from storage.errors import Unavailable
from storage.subjects import Names

USAGE_TTL_S = 3 * 86400.0
_ATTEMPTS = 20
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


class TokenCounters(Protocol):
    """Tokens used per tenant and day."""

    async def add(self, tenant_id: str, day: int, tokens: int) -> int:
        """Add ``tokens`` and return the new total."""
        ...

    async def get(self, tenant_id: str, day: int) -> int:
        """The total so far (0 if none)."""
        ...


def usage_bucket(names: Names) -> str:
    """The deployment's usage bucket."""
    return f"{names.namespace}_usage"


class KvTokenCounters:
    """:class:`TokenCounters` in a JetStream key-value bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, names: Names) -> KvTokenCounters:
        """Open (creating if needed) the deployment's usage bucket."""
        bucket = usage_bucket(names)
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(
                api.KeyValueConfig(bucket=bucket, history=1, ttl=USAGE_TTL_S, storage=api.StorageType.FILE)
            )
        return cls(kv)

    async def get(self, tenant_id: str, day: int) -> int:
        try:
            entry = await self._kv.get(f"{tenant_id}.{day}")
        except nats.js.errors.KeyNotFoundError:
            return 0
        except _NATS_ERRORS as exc:
            raise Unavailable("usage counters are not reachable", reason="STORAGE_UNAVAILABLE") from exc
        return int(entry.value or b"0")

    async def add(self, tenant_id: str, day: int, tokens: int) -> int:
        key = f"{tenant_id}.{day}"
        try:
            for _ in range(_ATTEMPTS):
                # Compare-and-set: another gateway adding at the same moment makes one of us read again.
                try:
                    entry = await self._kv.get(key)
                except nats.js.errors.KeyNotFoundError:
                    try:
                        await self._kv.create(key, str(tokens).encode())
                        return tokens
                    except nats.js.errors.KeyWrongLastSequenceError:
                        continue
                total = int(entry.value or b"0") + tokens
                try:
                    await self._kv.update(key, str(total).encode(), last=entry.revision)
                    return total
                except nats.js.errors.KeyWrongLastSequenceError:
                    continue
        except _NATS_ERRORS as exc:
            raise Unavailable("usage counters are not reachable", reason="STORAGE_UNAVAILABLE") from exc
        raise Unavailable("usage counters are too contended", reason="STORAGE_UNAVAILABLE", retry_after_s=1.0)


class InMemoryTokenCounters:
    """:class:`TokenCounters` in a dict (one gateway, unit tests)."""

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
