"""Leases (:class:`~salon.storage.leases.LeaseStore`) in a JetStream key-value bucket whose entries live for the
bucket's time-to-live after their last write. Every write names the revision it expects
(``Nats-Expected-Last-Subject-Sequence``), so the server itself refuses a second holder."""

from __future__ import annotations

import nats.errors
import nats.js.errors
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from salon.storage.errors import Unavailable
from salon.storage.jetstream.read import live_entries
from salon.storage.jetstream.sessions import open_bucket
from salon.storage.leases import Lease
from salon.storage.reasons import Reason
from salon.storage.subjects import Names

_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


def _unavailable() -> Unavailable:
    return Unavailable("the lease bucket is not reachable", reason=Reason.NATS_UNAVAILABLE, retry_after_s=1.0)


class KvLeaseStore:
    """:class:`~salon.storage.leases.LeaseStore` on a JetStream key-value bucket (one value per key)."""

    def __init__(self, js: JetStreamContext, kv: KeyValue, bucket: str, ttl_s: float) -> None:
        self._js = js
        self._kv = kv
        self._bucket = bucket
        self._ttl_s = ttl_s

    @classmethod
    async def open(cls, js: JetStreamContext, names: Names, ttl_s: float, *, replicas: int = 0) -> KvLeaseStore:
        """The deployment's lease bucket, created with ``ttl_s`` and ``replicas`` copies (or brought to them)
        when need be."""
        kv = await open_bucket(js, names.leases_bucket, replicas=replicas, ttl_s=ttl_s)
        status = await kv.status()
        if status.ttl is not None and abs(status.ttl - ttl_s) > 1e-3:
            # The deployment changed its lease time: every holder must agree on it, so the bucket follows.
            config = status.stream_info.config
            config.max_age = ttl_s
            await js.update_stream(config)
        return cls(js, kv, names.leases_bucket, ttl_s)

    @property
    def ttl_s(self) -> float:
        """How long a lease lives after its last write."""
        return self._ttl_s

    async def create(self, key: str, holder: str) -> Lease | None:
        """Take ``key`` for ``holder`` when nobody holds it; None when someone does."""
        try:
            revision = await self._kv.create(key, holder.encode())
        except nats.js.errors.KeyWrongLastSequenceError:
            return None
        except _NATS_ERRORS as exc:
            raise _unavailable() from exc
        return Lease(key, holder, revision)

    async def renew(self, lease: Lease) -> Lease | None:
        """Extend ``lease``; None when it is lost (expired, released or taken since)."""
        try:
            # Read first, as :meth:`held` reads: a lease the bucket no longer shows is lost, even while the server
            # has yet to drop its expired message from the subject's last sequence.
            current = await self._kv.get(lease.key)
            if current.revision != lease.revision or not current.value:
                return None
            revision = await self._kv.update(lease.key, lease.holder.encode(), last=lease.revision)
        except (nats.js.errors.KeyWrongLastSequenceError, nats.js.errors.KeyNotFoundError):
            return None
        except _NATS_ERRORS as exc:
            raise _unavailable() from exc
        return Lease(lease.key, lease.holder, revision)

    async def release(self, lease: Lease) -> None:
        """Give ``lease`` up (a no-op when it is no longer current)."""
        try:
            await self._kv.delete(lease.key, last=lease.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return
        except nats.js.errors.APIError as exc:
            if exc.err_code in (10071, 10164):  # wrong last sequence: someone else's now
                return
            raise _unavailable() from exc
        except _NATS_ERRORS as exc:
            raise _unavailable() from exc

    async def held(self) -> dict[str, Lease]:
        """Every lease alive now, by key (one pass over the bucket's latest values). Read with a pull consumer:
        nats-py's watcher can say "that is all" before an entry already on its way (seen in CI: a held lease
        missing from the list)."""
        prefix = f"$KV.{self._bucket}."
        try:
            msgs = await live_entries(self._js, self._bucket)
        except _NATS_ERRORS as exc:
            raise _unavailable() from exc
        leases: dict[str, Lease] = {}
        for msg in msgs:
            if msg.data:
                key = msg.subject[len(prefix) :]
                leases[key] = Lease(key, msg.data.decode(), msg.metadata.sequence.stream)
        return leases
