"""Session definitions in a JetStream key-value bucket keyed ``<tenant>.<session>``, replicated with the NATS
cluster, shared by every gateway and host, with compare-and-set for creation."""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from salon.storage.errors import AlreadyExists, NotFound, Unavailable
from salon.storage.jetstream.client import ensure_replicas
from salon.storage.jetstream.read import live_entries
from salon.storage.sessions import NOT_FOUND_MESSAGE
from salon.storage.subjects import Names
from salon.v1 import session_pb2

_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


async def _looked_up(js: JetStreamContext, bucket: str, attempts: int = 3) -> KeyValue:
    """The bucket's handle; an API request that times out is asked again (a cluster electing a JetStream leader,
    or a busy server at start, answers late) before the error is raised."""
    for attempt in range(attempts):
        try:
            return await js.key_value(bucket)
        except nats.errors.TimeoutError:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


async def open_bucket(js: JetStreamContext, bucket: str, *, replicas: int = 0, ttl_s: float | None = None) -> KeyValue:
    """The bucket, created (file storage, one revision per key, ``replicas`` copies, entries expiring after
    ``ttl_s``) if it does not exist. An existing bucket is given ``replicas`` copies if it has others (0: leave
    it as it is), so a deployment moved onto a cluster replicates what it made before.

    A replicated bucket takes no direct gets: those are answered by any replica, and one that lags returns a
    value older than a write already acknowledged (a session just created would not be found; a
    compare-and-set would read a stale revision again and again). Reads then go to the stream's leader."""
    direct = replicas <= 1
    try:
        kv = await _looked_up(js, bucket)
    except nats.js.errors.BucketNotFoundError:
        config = api.KeyValueConfig(
            bucket=bucket, history=1, ttl=ttl_s, storage=api.StorageType.FILE, replicas=replicas or 1, direct=direct
        )
        try:
            return await js.create_key_value(config)
        except nats.js.errors.BadRequestError:
            kv = await js.key_value(bucket)  # another process created it meanwhile
    if replicas and await ensure_replicas(js, f"KV_{bucket}", replicas, allow_direct=direct):
        return await js.key_value(bucket)  # the handle reads as the stream now says
    return kv


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable("session storage is not reachable", reason="STORAGE_UNAVAILABLE", retry_after_s=1.0)


class KvSessionRegistry:
    """:class:`~salon.storage.sessions.SessionRegistry` on a JetStream key-value bucket."""

    def __init__(self, kv: KeyValue, js: JetStreamContext, bucket: str) -> None:
        self._kv = kv
        self._js = js
        self._bucket = bucket

    @classmethod
    async def open(cls, js: JetStreamContext, names: Names, *, replicas: int = 0) -> KvSessionRegistry:
        """Open (creating if needed, with ``replicas`` copies) the deployment's session bucket."""
        return cls(await open_bucket(js, names.sessions_bucket, replicas=replicas), js, names.sessions_bucket)

    async def create(self, tenant_id: str, session: session_pb2.Session) -> None:
        try:
            await self._kv.create(Names.session_key(tenant_id, session.session_id), session.SerializeToString())
        except nats.js.errors.KeyWrongLastSequenceError:
            raise AlreadyExists("a session with this id already exists", reason="SESSION_EXISTS") from None
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def get(self, tenant_id: str, session_id: str) -> session_pb2.Session:
        try:
            entry = await self._kv.get(Names.session_key(tenant_id, session_id))
        except nats.js.errors.KeyNotFoundError:
            raise NotFound(NOT_FOUND_MESSAGE, reason="SESSION_NOT_FOUND") from None
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc
        session: session_pb2.Session = session_pb2.Session.FromString(entry.value or b"")
        return session

    async def put(self, tenant_id: str, session: session_pb2.Session) -> None:
        try:
            await self._kv.put(Names.session_key(tenant_id, session.session_id), session.SerializeToString())
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def delete(self, tenant_id: str, session_id: str) -> None:
        await self.get(tenant_id, session_id)
        try:
            await self._kv.purge(Names.session_key(tenant_id, session_id))
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def list_ids(self, tenant_id: str) -> list[str]:
        try:
            return await _list_keys(self._js, self._bucket, f"{tenant_id}.")
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc


async def _list_keys(js: JetStreamContext, bucket: str, prefix: str) -> list[str]:
    """Live keys under ``prefix`` (a whole key token), without it, sorted. Filtered by the server (nats-py's
    ``keys()`` streams every key of the bucket and matches substrings on the client)."""
    start = len(f"$KV.{bucket}.{prefix}")
    return sorted(m.subject[start:] for m in await live_entries(js, bucket, f"{prefix}*", headers_only=True))
