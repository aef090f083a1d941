"""The session registry contract (:class:`salon.storage.sessions.SessionRegistry`), on the in-memory registry and on
a JetStream key-value bucket; incarnations tell re-created sessions apart.

(Session state lives in the ledger: see test_journal.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NatsClient

from salon.storage import Names, SessionRegistry
from salon.storage.errors import AlreadyExists, NotFound
from salon.storage.inmemory import InMemorySessionRegistry
from salon.storage.jetstream.sessions import KvSessionRegistry
from salon.storage.sessions import incarnation_of
from salon.v1 import session_pb2


@pytest.fixture
async def registry(nats: NatsClient | None, names: Names) -> AsyncIterator[SessionRegistry]:
    if nats is None:
        yield InMemorySessionRegistry()
        return
    js = nats.jetstream()
    yield await KvSessionRegistry.open(js, names)
    await js.delete_key_value(names.sessions_bucket)


def _session(session_id: str, prompt: str = "") -> session_pb2.Session:
    return session_pb2.Session(session_id=session_id, system_prompt=prompt)


async def test_create_then_get_returns_the_definition(registry: SessionRegistry) -> None:
    await registry.create("acme", _session("s1", "be brief"))
    got = await registry.get("acme", "s1")
    assert got.session_id == "s1"
    assert got.system_prompt == "be brief"


async def test_get_returns_a_copy(registry: SessionRegistry) -> None:
    await registry.create("acme", _session("s1", "original"))
    got = await registry.get("acme", "s1")
    got.system_prompt = "changed by caller"
    assert (await registry.get("acme", "s1")).system_prompt == "original"


async def test_duplicate_create_raises_already_exists_and_keeps_the_first(registry: SessionRegistry) -> None:
    await registry.create("acme", _session("s1", "first"))
    with pytest.raises(AlreadyExists) as info:
        await registry.create("acme", _session("s1", "second"))
    assert info.value.reason == "SESSION_EXISTS"
    assert (await registry.get("acme", "s1")).system_prompt == "first"


async def test_missing_session_raises_not_found(registry: SessionRegistry) -> None:
    with pytest.raises(NotFound) as info:
        await registry.get("acme", "nope")
    assert info.value.reason == "SESSION_NOT_FOUND"
    with pytest.raises(NotFound):
        await registry.delete("acme", "nope")


async def test_put_overwrites(registry: SessionRegistry) -> None:
    await registry.create("acme", _session("s1", "old"))
    await registry.put("acme", _session("s1", "new"))
    assert (await registry.get("acme", "s1")).system_prompt == "new"


async def test_delete_then_get_and_recreate(registry: SessionRegistry) -> None:
    await registry.create("acme", _session("s1"))
    await registry.delete("acme", "s1")
    with pytest.raises(NotFound):
        await registry.get("acme", "s1")
    await registry.create("acme", _session("s1", "again"))
    assert (await registry.get("acme", "s1")).system_prompt == "again"


async def test_list_ids_is_sorted_and_per_tenant(registry: SessionRegistry) -> None:
    for sid in ["b", "c", "a"]:
        await registry.create("acme", _session(sid))
    await registry.create("other", _session("z"))
    assert await registry.list_ids("acme") == ["a", "b", "c"]
    assert await registry.list_ids("other") == ["z"]
    assert await registry.list_ids("nobody") == []


async def test_tenants_are_isolated(registry: SessionRegistry) -> None:
    await registry.create("tenant-a", _session("shared-id", "a's prompt"))
    with pytest.raises(NotFound):
        await registry.get("tenant-b", "shared-id")
    with pytest.raises(NotFound):
        await registry.delete("tenant-b", "shared-id")
    assert await registry.list_ids("tenant-b") == []
    # The same id in tenant B is a different session and does not collide.
    await registry.create("tenant-b", _session("shared-id", "b's prompt"))
    assert (await registry.get("tenant-a", "shared-id")).system_prompt == "a's prompt"
    assert (await registry.get("tenant-b", "shared-id")).system_prompt == "b's prompt"


async def test_a_recreated_session_is_a_new_incarnation(registry: SessionRegistry) -> None:
    await registry.create("acme", session_pb2.Session(session_id="s1", create_time=Timestamp(seconds=100)))
    first = incarnation_of(await registry.get("acme", "s1"))
    assert first == incarnation_of(await registry.get("acme", "s1"))  # stable across reads
    assert first == str(100 * 10**9)
    await registry.delete("acme", "s1")
    await registry.create("acme", session_pb2.Session(session_id="s1", create_time=Timestamp(seconds=100, nanos=1)))
    assert incarnation_of(await registry.get("acme", "s1")) != first
