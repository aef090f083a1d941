"""The session registry's change feed on a real nats-server: every create and delete after it starts reaches the
gateway's cache, which then forgets the session."""

from __future__ import annotations

from conftest import wait_for

from salon.engine.session_cache import SessionCache
from salon.storage import Names, NotFound
from salon.storage.jetstream.client import close_connection, connect
from salon.storage.jetstream.session_changes import SessionChanges
from salon.storage.jetstream.sessions import KvSessionRegistry
from salon.v1 import session_pb2


async def test_changes_written_by_another_gateway_reach_the_cache(nats_url: str) -> None:
    names = Names("feed")
    ours, theirs = await connect(nats_url, name="gateway-a"), await connect(nats_url, name="gateway-b")
    try:
        registry = await KvSessionRegistry.open(ours.jetstream(), names)
        other = await KvSessionRegistry.open(theirs.jetstream(), names)
        await registry.create("t", session_pb2.Session(session_id="s", system_prompt="old"))
        cache = SessionCache(registry, ttl_s=3600.0)  # only the feed can make it forget within the test
        seen: list[tuple[str, str]] = []

        def changed(tenant_id: str, session_id: str) -> None:
            seen.append((tenant_id, session_id))
            cache.forget(tenant_id, session_id)

        feed = SessionChanges(ours.jetstream(), names, changed)
        await feed.start()
        cache.enable(lambda: int(ours.stats["reconnects"]))
        try:
            assert (await cache.get("t", "s")).system_prompt == "old"
            await other.delete("t", "s")  # through the other gateway's connection
            await other.create("t", session_pb2.Session(session_id="s", system_prompt="new"))

            async def fresh() -> bool:
                try:
                    return (await cache.get("t", "s")).system_prompt == "new"
                except NotFound:
                    return False

            await wait_for(fresh, what="the cache to see the other gateway's changes")
            assert ("t", "s") in seen
        finally:
            await feed.close()
            await feed.close()
    finally:
        await ours.jetstream().delete_key_value(names.sessions_bucket)
        await close_connection(ours)
        await close_connection(theirs)
