"""Real parts for integration tests: one nats-server and one local Ray per test session (started here on
ephemeral ports and temp dirs, always torn down), and engines built on them, each in its own namespace so
no test sees another's streams, buckets or host actors."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import ray
from nats.js.errors import NotFoundError, ServiceUnavailableError

from salon.engine import Config, EmbeddedNats, Engine
from salon.engine.ray_start import ensure_ray
from salon.storage import Names
from salon.storage.jetstream.client import close_connection, connect
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import turn_pb2

_namespaces = itertools.count()


async def release_events_stream(nats_url: str, namespace: str) -> None:
    """Delete a closed engine's in-memory events stream. Each reserves its whole memory cap of the shared
    nats-server's JetStream memory, which the suite's engines together would otherwise exhaust (later streams
    then fail with "insufficient memory resources")."""
    nc = await connect(nats_url, name="salon-test-cleanup")
    try:
        # Best effort: a stream already gone, or a cluster a test left without a quorum, is not this test's result.
        with contextlib.suppress(NotFoundError, ServiceUnavailableError):
            await nc.jetstream().delete_stream(Names(namespace).events_stream)
    finally:
        await close_connection(nc)


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout_s`` (a predicate that hangs included)."""
    limit = asyncio.timeout(timeout_s)
    try:
        async with limit:
            while not await predicate():  # noqa: ASYNC110 - a condition of other processes, polled
                await asyncio.sleep(0.02)  # wait-ok: polls a condition with a deadline
    except TimeoutError:
        if not limit.expired():
            raise
        pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """Local Ray for the whole session (engines built on it leave it running)."""
    started = ensure_ray(Config(num_hosts=1, num_shards=1))
    yield
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
async def nats_url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """A real nats-server with JetStream, on a port it picks, for the whole session."""
    # Every engine's events stream reserves its whole maximum of memory: without a high limit the one server of
    # the test session runs out of reservations after a few dozen engines (nothing is really used).
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"), max_memory_store="1T")
    url = await server.start()
    yield url
    await server.close()


EngineFactory = Callable[..., Awaitable[Engine]]


def engine_config(data_dir: Path, nats_url: str, **overrides: Any) -> Config:
    """The tests' engine settings: the shared NATS, a namespace of its own, 2 hosts on 4 shards, the scripted
    provider with 8 tokens, a short shutdown grace; ``overrides`` win."""
    settings: dict[str, Any] = {
        "data_dir": str(data_dir),
        "grpc_port": 0,
        "nats_url": nats_url,
        "namespace": f"t{next(_namespaces)}",
        "num_hosts": 2,
        "num_shards": 4,
        "model_provider": "scripted",
        "scripted_tokens": 8,
        "shutdown_grace_s": 2.0,
    }
    settings.update(overrides)
    return Config(**settings)


@contextlib.asynccontextmanager
async def running_engine(config: Config) -> AsyncIterator[Engine]:
    """An engine started from ``config``, closed (and its events stream released) on exit."""
    engine = Engine(config)
    try:
        await engine.start()
        yield engine
    finally:
        await engine.close()
        # Only the suite's shared server outlives the engine (an embedded one stopped with it, and a test's
        # own server with credentials is the test's to clean up).
        if config.nats_url and "@" not in config.nats_url:
            await release_events_stream(config.nats_url, config.namespace)


@pytest.fixture
async def make_engine(nats_url: str, ray_session: None, tmp_path: Path) -> AsyncIterator[EngineFactory]:
    """Build engines on the shared NATS and Ray; every engine is closed after the test. For a test that needs
    an engine of its own (a setting, or it kills a part of it); tests that only need some engine share one."""
    async with contextlib.AsyncExitStack() as stack:
        count = itertools.count()

        async def build(**overrides: Any) -> Engine:
            # A test may name its own NATS (or "" for an embedded one) in place of the shared server.
            url = overrides.pop("nats_url", nats_url)
            data_dir = overrides.pop("data_dir", tmp_path / f"data{next(count)}")
            config = engine_config(Path(data_dir), url, **overrides)
            engine: Engine = await stack.enter_async_context(running_engine(config))
            return engine

        yield build


@pytest.fixture(scope="module")
async def shared_engine(
    nats_url: str, ray_session: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Engine]:
    """One engine (scripted provider, 8 tokens) shared by the tests of a module that need no special config."""
    config = engine_config(tmp_path_factory.mktemp("shared"), nats_url, scripted_token_delay_s=0.002)
    async with running_engine(config) as engine:
        yield engine


@pytest.fixture
async def stub(shared_engine: Engine) -> AsyncIterator[cs_grpc.ConversationServiceStub]:
    """A generated stub on a fresh channel to the shared engine."""
    async with grpc.aio.insecure_channel(shared_engine.target) as channel:
        yield cs_grpc.ConversationServiceStub(channel)


async def create_session(stub: cs_grpc.ConversationServiceStub, **fields: Any) -> str:
    """Create a session and return its id."""
    response = await stub.CreateSession(cs_pb2.CreateSessionRequest(**fields))
    return str(response.session.session_id)


async def collect_turn(
    stub: cs_grpc.ConversationServiceStub, session_id: str, text: str, **fields: Any
) -> list[turn_pb2.TurnEvent]:
    """Send a turn and return all its events."""
    timeout = fields.pop("timeout", None)
    request = cs_pb2.SendTurnRequest(session_id=session_id, text=text, **fields)
    return [response.event async for response in stub.SendTurn(request, timeout=timeout)]


def reply_text(events: list[turn_pb2.TurnEvent]) -> str:
    """The answer carried by a turn's delta events."""
    return "".join(e.delta.text for e in events if e.HasField("delta"))


def assert_well_formed(events: list[turn_pb2.TurnEvent], session_id: str) -> None:
    """Sequence 1..n without gaps, accepted first, exactly one terminal event last, all for one turn."""
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[0].HasField("accepted")
    kinds = [e.WhichOneof("kind") for e in events]
    terminal = [k for k in kinds if k in ("completed", "error", "cancelled")]
    assert terminal == [kinds[-1]]
    assert {e.session_id for e in events} == {session_id}
    assert len({e.turn_id for e in events}) == 1
