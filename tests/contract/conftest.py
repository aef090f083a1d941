"""Each storage contract, run against its in-memory reference and its real adapter.

A seam's fixture is parametrised by ``backend``: ``in-memory``, or the real one (``jetstream``: a real
nats-server started here on a port it picks, once per test session, each test in its own namespace;
``lance``: LanceDB in the test's temp dir). The JetStream variants are marked ``integration``.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from nats.aio.client import Client as NatsClient

from salon.engine.nats_server import EmbeddedNats
from salon.storage import Names
from salon.storage.jetstream.client import close_connection, connect

IN_MEMORY = "in-memory"
JETSTREAM = "jetstream"

_namespaces = itertools.count()


@pytest.fixture(scope="session")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A real nats-server with JetStream for the whole session (started only if a JetStream variant runs)."""
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    url = await server.start()
    yield url
    await server.close()


@dataclass(frozen=True)
class Backend:
    """Which implementation a test runs against, and what the real one needs."""

    kind: str
    nats_url: str = ""


@pytest.fixture(params=[IN_MEMORY, pytest.param(JETSTREAM, marks=pytest.mark.integration)])
def nats_backend(request: pytest.FixtureRequest) -> Backend:
    """The in-memory reference or JetStream (a NATS-backed contract's variants)."""
    kind: str = request.param
    # Looked up here, in a plain fixture, so the in-memory variant never starts a server.
    return Backend(kind, request.getfixturevalue("nats_url") if kind == JETSTREAM else "")


@pytest.fixture
def names() -> Names:
    """A namespace of its own for the test: no other test sees its streams or buckets."""
    return Names(f"c{next(_namespaces)}")


@pytest.fixture
async def nats(nats_backend: Backend) -> AsyncIterator[NatsClient | None]:
    """A connection to the session's nats-server for the JetStream variant (None for the in-memory one)."""
    if nats_backend.kind != JETSTREAM:
        yield None
        return
    nc = await connect(nats_backend.nats_url, name="salon-contract-test")
    yield nc
    await close_connection(nc)
