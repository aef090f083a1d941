"""Token totals per tenant and UTC day in a JetStream key-value bucket (``<ns>_usage``, key
``<tenant>.<day>``) updated by compare-and-set, so budgets hold behind a load balancer. Entries expire after
a few days."""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from salon.storage.errors import Unavailable
from salon.storage.jetstream.sessions import open_bucket
from salon.storage.subjects import Names

USAGE_TTL_S = 3 * 86400.0
_ATTEMPTS = 20
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


def usage_bucket(names: Names) -> str:
    """The deployment's usage bucket."""
    return f"{names.namespace}_usage"


class KvTokenCounters:
    """:class:`~salon.storage.usage.TokenCounters` in a JetStream key-value bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, names: Names, *, replicas: int = 0) -> KvTokenCounters:
        """Open (creating if needed, with ``replicas`` copies) the deployment's usage bucket."""
        return cls(await open_bucket(js, usage_bucket(names), replicas=replicas, ttl_s=USAGE_TTL_S))

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
