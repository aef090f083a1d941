"""Per-tenant counters in a JetStream key-value bucket (``<ns>_usage``), shared by every gateway so limits and
budgets hold behind a load balancer. Entries expire a few days after their last write.

* Tokens: key ``<tenant>.<day>``, value ``{"<writer>": total, ...}``: each gateway run records its own running
  total, and the tenant's total is their sum (a value from before, a bare number, counts as one writer's).
* Turns: key ``<tenant>.turns``, value a :class:`~salon.storage.usage.TurnWindow`.

Every write is a compare-and-set on the key's revision, retried until it lands: a gateway that loses a race
reads again and writes again. Writes carry absolute figures, so one repeated after an unclear failure counts
nothing twice. A turn admission starts from the key's revision this gateway last wrote or read (one round trip
when no other gateway wrote since) and reads afresh only after losing a race, or before refusing a turn from
what it had cached.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import TypeVar

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from salon.storage.errors import Unavailable
from salon.storage.jetstream.sessions import open_bucket
from salon.storage.subjects import Names
from salon.storage.usage import LEASE_S, TurnFigures, TurnLimits, TurnRefusal, TurnWindow

USAGE_TTL_S = 3 * 86400.0
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)
_CALM_AFTER = 3
"""Compare-and-set attempts before a losing writer waits a little (random, growing) before reading again, so
writers racing on one key do not keep colliding."""

T = TypeVar("T")


def usage_bucket(names: Names) -> str:
    """The deployment's usage bucket."""
    return f"{names.namespace}_usage"


async def open_usage_bucket(js: JetStreamContext, names: Names, *, replicas: int = 0) -> KeyValue:
    """Open (creating if needed, with ``replicas`` copies) the deployment's usage bucket."""
    return await open_bucket(js, usage_bucket(names), replicas=replicas, ttl_s=USAGE_TTL_S)


def _unreachable() -> Unavailable:
    return Unavailable("usage counters are not reachable", reason="STORAGE_UNAVAILABLE", retry_after_s=1.0)


async def _calm(attempt: int) -> None:
    if attempt >= _CALM_AFTER:
        await asyncio.sleep(random.uniform(0, min(0.001 * 2 ** (attempt - _CALM_AFTER), 0.05)))


class _Key:
    """Compare-and-set on one key, remembering the revision last seen."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._seen: dict[str, tuple[int, bytes]] = {}
        """Key → (revision, value) as this process last wrote or read it (revision 0: no entry)."""

    async def read(self, key: str) -> tuple[int, bytes]:
        try:
            entry = await self._kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            seen = (0, b"")
        else:
            seen = (entry.revision or 0, entry.value or b"")
        self._seen[key] = seen
        return seen

    async def change(self, key: str, step: Callable[[bytes, bool], tuple[bytes | None, T]]) -> T:
        """Apply ``step`` (the value now, whether it was just read → the new value or None to write nothing, and
        the result) by compare-and-set until it lands; the result of the step that landed."""
        cached = self._seen.get(key)
        attempt = 0
        try:
            while True:
                fresh = cached is None
                revision, value = cached if cached is not None else await self.read(key)
                new, result = step(value, fresh)
                if new is None:
                    if fresh:
                        return result
                    cached = None  # decided from what was cached: decide again from the store
                    continue
                try:
                    if revision:
                        written = await self._kv.update(key, new, last=revision)
                    else:
                        written = await self._kv.create(key, new)
                except nats.js.errors.KeyWrongLastSequenceError:
                    # Another gateway wrote first: read and decide again.
                    cached = None
                    attempt += 1
                    await _calm(attempt)
                    continue
                self._seen[key] = (written, new)
                return result
        except _NATS_ERRORS as exc:
            self._seen.pop(key, None)
            raise _unreachable() from exc


def _writers(value: bytes) -> dict[str, int]:
    if not value:
        return {}
    raw = json.loads(value)
    if isinstance(raw, int):
        return {"": raw}  # a total from before totals were kept per writer
    return {str(w): int(t) for w, t in raw.items()}


class KvTokenCounters:
    """:class:`~salon.storage.usage.TokenCounters` in a JetStream key-value bucket."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv
        self._keys = _Key(kv)

    @classmethod
    async def open(cls, js: JetStreamContext, names: Names, *, replicas: int = 0) -> KvTokenCounters:
        """Open (creating if needed, with ``replicas`` copies) the deployment's usage bucket."""
        return cls(await open_usage_bucket(js, names, replicas=replicas))

    async def get(self, tenant_id: str, day: int) -> int:
        try:
            _, value = await self._keys.read(f"{tenant_id}.{day}")
        except _NATS_ERRORS as exc:
            raise _unreachable() from exc
        return sum(_writers(value).values())

    async def record(self, tenant_id: str, day: int, writer: str, total: int) -> int:
        def step(value: bytes, fresh: bool) -> tuple[bytes | None, int]:
            writers = _writers(value)
            if writers.get(writer, -1) >= total:
                # Already there (a repeat): nothing to write, provided the store still says so.
                return None, sum(writers.values())
            writers[writer] = total
            return json.dumps(writers, separators=(",", ":")).encode(), sum(writers.values())

        return await self._keys.change(f"{tenant_id}.{day}", step)


class KvTurnCounters:
    """:class:`~salon.storage.usage.TurnCounters` in a JetStream key-value bucket."""

    def __init__(self, kv: KeyValue, lease_s: float = LEASE_S) -> None:
        self._kv = kv
        self._keys = _Key(kv)
        self._lease_s = lease_s

    @classmethod
    async def open(
        cls, js: JetStreamContext, names: Names, lease_s: float = LEASE_S, *, replicas: int = 0
    ) -> KvTurnCounters:
        """Open (creating if needed) the deployment's usage bucket."""
        return cls(await open_usage_bucket(js, names, replicas=replicas), lease_s)

    async def admit(
        self, tenant_id: str, holder: str, active: int, limits: TurnLimits, *, now: float
    ) -> TurnRefusal | None:
        def step(value: bytes, fresh: bool) -> tuple[bytes | None, TurnRefusal | None]:
            window = TurnWindow.from_bytes(value)
            refusal = window.admit(holder, active, limits, now, self._lease_s)
            return (None, refusal) if refusal is not None else (window.to_bytes(), None)

        return await self._keys.change(f"{tenant_id}.turns", step)

    async def hold(self, tenant_id: str, holder: str, active: int, *, now: float) -> None:
        def step(value: bytes, fresh: bool) -> tuple[bytes | None, None]:
            window = TurnWindow.from_bytes(value)
            window.hold(holder, active, now, self._lease_s)
            return window.to_bytes(), None

        await self._keys.change(f"{tenant_id}.turns", step)

    async def figures(self, tenant_id: str, *, now: float) -> TurnFigures:
        try:
            _, value = await self._keys.read(f"{tenant_id}.turns")
        except _NATS_ERRORS as exc:
            raise _unreachable() from exc
        return TurnWindow.from_bytes(value).figures(now)
