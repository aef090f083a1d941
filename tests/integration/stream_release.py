"""Engines that give back their JetStream memory when their test ends.

Every engine reserves the memory cap of its in-memory events stream on the shared nats-server of the test
session, and a closed engine's namespace keeps its streams: after a few dozen engines the server refuses
new streams ("insufficient memory resources"). Tests that build their own engines use this factory, which
closes them and deletes their events streams at the end of the test."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import EngineFactory

from engine import Engine
from storage import close_connection, connect


@pytest.fixture(name="released_engine")
async def released_engine_fixture(make_engine: EngineFactory, nats_url: str) -> AsyncIterator[EngineFactory]:
    """Like ``make_engine``; the engines' events streams are deleted after the test."""
    built: list[Engine] = []

    async def build(**overrides: Any) -> Engine:
        engine = await make_engine(**overrides)
        built.append(engine)
        return engine

    yield build
    nc = await connect(nats_url, name="test-release")
    try:
        js = nc.jetstream()
        for engine in built:
            await engine.close()  # idempotent: make_engine's own teardown finds it closed
            with contextlib.suppress(Exception):
                await js.delete_stream(engine.names.events_stream)
    finally:
        await close_connection(nc)
