"""The lease contract (:class:`salon.storage.leases.LeaseStore`), on the in-memory store and on a JetStream key-value
bucket: one holder per key, revision-checked renewal and release, and expiry after the lease time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from nats.aio.client import Client as NatsClient
from nats.js import errors as nats_errors

from salon.storage import LeaseStore, Names
from salon.storage.inmemory import InMemoryLeaseStore
from salon.storage.jetstream.leases import KvLeaseStore

LONG_TTL_S = 60.0
"""Lease time of the tests that do not wait for expiry: no stall of a loaded machine outlasts it."""
SHORT_TTL_S = 1.0
"""Lease time of the expiry test."""

StoreOpener = Callable[[float], Awaitable[LeaseStore]]


@pytest.fixture
async def open_store(nats: NatsClient | None, names: Names) -> AsyncIterator[StoreOpener]:
    async def open_(ttl_s: float) -> LeaseStore:
        if nats is None:
            return InMemoryLeaseStore(ttl_s)
        return await KvLeaseStore.open(nats.jetstream(), names, ttl_s)

    yield open_
    if nats is not None:
        with contextlib.suppress(nats_errors.NotFoundError):  # a test that opened none
            await nats.jetstream().delete_key_value(names.leases_bucket)


@pytest.fixture
async def store(open_store: StoreOpener) -> LeaseStore:
    return await open_store(LONG_TTL_S)


async def test_a_free_key_is_taken_once(store: LeaseStore) -> None:
    first = await store.create("shard.1", "host-a")
    assert first is not None and first.holder == "host-a"
    assert await store.create("shard.1", "host-b") is None
    held = await store.held()
    assert {k: v.holder for k, v in held.items()} == {"shard.1": "host-a"}
    assert held["shard.1"].revision == first.revision


async def test_a_renewal_must_name_the_current_revision(store: LeaseStore) -> None:
    lease = await store.create("shard.2", "host-a")
    assert lease is not None
    renewed = await store.renew(lease)
    assert renewed is not None and renewed.revision != lease.revision
    assert await store.renew(lease) is None, "a stale revision is refused"
    assert (await store.held())["shard.2"].revision == renewed.revision


async def test_a_release_frees_the_key_and_a_stale_one_does_not(store: LeaseStore) -> None:
    lease = await store.create("shard.3", "host-a")
    assert lease is not None
    renewed = await store.renew(lease)
    assert renewed is not None
    await store.release(lease)
    assert "shard.3" in await store.held()
    await store.release(renewed)
    assert "shard.3" not in await store.held()
    taken = await store.create("shard.3", "host-b")
    assert taken is not None and taken.holder == "host-b"
    assert await store.renew(renewed) is None, "the old holder's lease is gone"


async def test_a_lease_not_renewed_expires_and_the_key_can_be_taken(open_store: StoreOpener) -> None:
    store = await open_store(SHORT_TTL_S)
    lease = await store.create("shard.4", "host-a")
    assert lease is not None
    deadline = time.monotonic() + 30
    while "shard.4" in await store.held():
        assert time.monotonic() < deadline, "the lease never expired"
        await asyncio.sleep(0.1)  # wait-ok: polls a condition with a deadline
    assert await store.renew(lease) is None
    assert await store.create("shard.4", "host-b") is not None


async def test_an_empty_store_holds_nothing(store: LeaseStore) -> None:
    assert await store.held() == {}
