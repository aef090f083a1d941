"""Where session definitions and session state snapshots live.

Both are JetStream key-value buckets keyed ``<tenant>.<session>``: replicated with the NATS cluster, shared by
every gateway and host, and with compare-and-set for creation. In-memory versions serve unit tests and pass
the same contract tests.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import nats.errors
import nats.js.errors
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from salon.v1 import session_pb2
from storage.errors import AlreadyExists, NotFound, Unavailable
from storage.subjects import Names

_NOT_FOUND = "session not found"
_NATS_ERRORS = (nats.errors.Error, nats.js.errors.Error, TimeoutError)


class SessionRegistry(Protocol):
    """Session definitions (what ``CreateSession`` stored), per tenant."""

    async def create(self, tenant_id: str, session: session_pb2.Session) -> None:
        """Store a new session; :class:`AlreadyExists` if the id is taken in this tenant."""
        ...

    async def get(self, tenant_id: str, session_id: str) -> session_pb2.Session:
        """The session; :class:`NotFound` if this tenant has no such session."""
        ...

    async def put(self, tenant_id: str, session: session_pb2.Session) -> None:
        """Overwrite an existing session's definition."""
        ...

    async def delete(self, tenant_id: str, session_id: str) -> None:
        """Remove the session; :class:`NotFound` if this tenant has no such session."""
        ...

    async def list_ids(self, tenant_id: str) -> list[str]:
        """Ids of the tenant's sessions, sorted."""
        ...


class SnapshotStore(Protocol):
    """Session state snapshots (JSON-ready dicts)."""

    async def load(self, tenant_id: str, session_id: str) -> dict[str, Any] | None:
        """The latest snapshot, or None for a session that has none yet."""
        ...

    async def save(self, tenant_id: str, session_id: str, snapshot: dict[str, Any]) -> None:
        """Replace the snapshot."""
        ...

    async def delete(self, tenant_id: str, session_id: str) -> None:
        """Forget the snapshot (no error if there is none)."""
        ...


async def open_bucket(js: JetStreamContext, bucket: str) -> KeyValue:
    """The bucket, created (file storage, one revision per key) if it does not exist."""
    try:
        return await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        return await js.create_key_value(api.KeyValueConfig(bucket=bucket, history=1, storage=api.StorageType.FILE))


def _unavailable(exc: BaseException) -> Unavailable:
    return Unavailable("session storage is not reachable", reason="STORAGE_UNAVAILABLE", retry_after_s=1.0)


class KvSessionRegistry:
    """:class:`SessionRegistry` on a JetStream key-value bucket."""

    def __init__(self, kv: KeyValue, js: JetStreamContext, bucket: str) -> None:
        self._kv = kv
        self._js = js
        self._bucket = bucket

    @classmethod
    async def open(cls, js: JetStreamContext, names: Names) -> KvSessionRegistry:
        """Open (creating if needed) the deployment's session bucket."""
        return cls(await open_bucket(js, names.sessions_bucket), js, names.sessions_bucket)

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
            raise NotFound(_NOT_FOUND, reason="SESSION_NOT_FOUND") from None
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
    """Live keys under ``prefix`` (a whole key token), without it, sorted.

    A pull consumer filtered by the server to the prefix, last value per key, headers only. nats-py's
    ``keys()`` is avoided: it streams every key of the bucket and filters substrings on the client, and its
    push-based watcher can signal "no more keys" before in-flight ones arrive.
    """
    stream, subject_prefix = f"KV_{bucket}", f"$KV.{bucket}."
    sub = await js.pull_subscribe(
        f"{subject_prefix}{prefix}*",
        stream=stream,
        config=api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.LAST_PER_SUBJECT,
            ack_policy=api.AckPolicy.NONE,
            headers_only=True,
            inactive_threshold=60.0,
        ),
    )
    ids: list[str] = []
    try:
        # Nothing is delivered before the first fetch, so this count is exact.
        remaining = (await sub.consumer_info()).num_pending or 0
        while remaining > 0:
            msgs = await sub.fetch(min(remaining, 256), timeout=5.0)
            for msg in msgs:
                if (msg.headers or {}).get("KV-Operation") in ("DEL", "PURGE"):
                    continue
                ids.append(msg.subject[len(subject_prefix) + len(prefix) :])
            remaining = (msgs[-1].metadata.num_pending or 0) if msgs else 0
    finally:
        await sub.unsubscribe()
    return sorted(ids)


class KvSnapshotStore:
    """:class:`SnapshotStore` on a JetStream key-value bucket (JSON values)."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, names: Names) -> KvSnapshotStore:
        """Open (creating if needed) the deployment's snapshot bucket."""
        return cls(await open_bucket(js, names.snapshots_bucket))

    async def load(self, tenant_id: str, session_id: str) -> dict[str, Any] | None:
        try:
            entry = await self._kv.get(Names.session_key(tenant_id, session_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc
        loaded: dict[str, Any] = json.loads(entry.value or b"{}")
        return loaded

    async def save(self, tenant_id: str, session_id: str, snapshot: dict[str, Any]) -> None:
        try:
            await self._kv.put(Names.session_key(tenant_id, session_id), json.dumps(snapshot).encode())
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc

    async def delete(self, tenant_id: str, session_id: str) -> None:
        try:
            await self._kv.purge(Names.session_key(tenant_id, session_id))
        except _NATS_ERRORS as exc:
            raise _unavailable(exc) from exc


class InMemorySessionRegistry:
    """:class:`SessionRegistry` in a dict, for unit tests."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], bytes] = {}

    async def create(self, tenant_id: str, session: session_pb2.Session) -> None:
        key = (tenant_id, session.session_id)
        if key in self._data:
            raise AlreadyExists("a session with this id already exists", reason="SESSION_EXISTS")
        self._data[key] = session.SerializeToString()

    async def get(self, tenant_id: str, session_id: str) -> session_pb2.Session:
        try:
            session: session_pb2.Session = session_pb2.Session.FromString(self._data[(tenant_id, session_id)])
            return session
        except KeyError:
            raise NotFound(_NOT_FOUND, reason="SESSION_NOT_FOUND") from None

    async def put(self, tenant_id: str, session: session_pb2.Session) -> None:
        self._data[(tenant_id, session.session_id)] = session.SerializeToString()

    async def delete(self, tenant_id: str, session_id: str) -> None:
        if self._data.pop((tenant_id, session_id), None) is None:
            raise NotFound(_NOT_FOUND, reason="SESSION_NOT_FOUND")

    async def list_ids(self, tenant_id: str) -> list[str]:
        return sorted(s for t, s in self._data if t == tenant_id)


class InMemorySnapshotStore:
    """:class:`SnapshotStore` in a dict, for unit tests."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str], str] = {}

    async def load(self, tenant_id: str, session_id: str) -> dict[str, Any] | None:
        raw = self._data.get((tenant_id, session_id))
        return None if raw is None else dict(json.loads(raw))

    async def save(self, tenant_id: str, session_id: str, snapshot: dict[str, Any]) -> None:
        self._data[(tenant_id, session_id)] = json.dumps(snapshot)

    async def delete(self, tenant_id: str, session_id: str) -> None:
        self._data.pop((tenant_id, session_id), None)
