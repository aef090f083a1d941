"""The in-memory session registry and snapshot store honour the storage contract."""

from __future__ import annotations

import pytest

from salon.v1 import session_pb2
from storage.errors import AlreadyExists, NotFound
from storage.sessions import InMemorySessionRegistry, InMemorySnapshotStore


def _session(session_id: str, prompt: str = "") -> session_pb2.Session:
    return session_pb2.Session(session_id=session_id, system_prompt=prompt)


async def test_create_then_get_returns_the_definition() -> None:
    registry = InMemorySessionRegistry()
    await registry.create("acme", _session("s1", "be brief"))
    got = await registry.get("acme", "s1")
    assert got.session_id == "s1"
    assert got.system_prompt == "be brief"


async def test_get_returns_a_copy() -> None:
    registry = InMemorySessionRegistry()
    await registry.create("acme", _session("s1", "original"))
    got = await registry.get("acme", "s1")
    got.system_prompt = "changed by caller"
    assert (await registry.get("acme", "s1")).system_prompt == "original"


async def test_duplicate_create_raises_already_exists_and_keeps_the_first() -> None:
    registry = InMemorySessionRegistry()
    await registry.create("acme", _session("s1", "first"))
    with pytest.raises(AlreadyExists) as info:
        await registry.create("acme", _session("s1", "second"))
    assert info.value.reason == "SESSION_EXISTS"
    assert (await registry.get("acme", "s1")).system_prompt == "first"


async def test_missing_session_raises_not_found() -> None:
    registry = InMemorySessionRegistry()
    with pytest.raises(NotFound) as info:
        await registry.get("acme", "nope")
    assert info.value.reason == "SESSION_NOT_FOUND"
    with pytest.raises(NotFound):
        await registry.delete("acme", "nope")


async def test_put_overwrites() -> None:
    registry = InMemorySessionRegistry()
    await registry.create("acme", _session("s1", "old"))
    await registry.put("acme", _session("s1", "new"))
    assert (await registry.get("acme", "s1")).system_prompt == "new"


async def test_delete_then_get_and_recreate() -> None:
    registry = InMemorySessionRegistry()
    await registry.create("acme", _session("s1"))
    await registry.delete("acme", "s1")
    with pytest.raises(NotFound):
        await registry.get("acme", "s1")
    await registry.create("acme", _session("s1", "again"))
    assert (await registry.get("acme", "s1")).system_prompt == "again"


async def test_list_ids_is_sorted_and_per_tenant() -> None:
    registry = InMemorySessionRegistry()
    for sid in ["b", "c", "a"]:
        await registry.create("acme", _session(sid))
    await registry.create("other", _session("z"))
    assert await registry.list_ids("acme") == ["a", "b", "c"]
    assert await registry.list_ids("other") == ["z"]
    assert await registry.list_ids("nobody") == []


async def test_tenants_are_isolated() -> None:
    registry = InMemorySessionRegistry()
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


async def test_snapshot_store_round_trip_and_isolation() -> None:
    store = InMemorySnapshotStore()
    assert await store.load("acme", "s1") is None
    await store.save("acme", "s1", {"turn_count": 2, "messages": [["user", "hi", "t1"]]})
    assert await store.load("acme", "s1") == {"turn_count": 2, "messages": [["user", "hi", "t1"]]}
    assert await store.load("other", "s1") is None
    await store.save("acme", "s1", {"turn_count": 3})
    assert await store.load("acme", "s1") == {"turn_count": 3}
    await store.delete("acme", "s1")
    assert await store.load("acme", "s1") is None
    await store.delete("acme", "s1")  # no error when absent
