"""The Ray actors: Salon's only Ray code.

``HostActor`` hosts a :class:`~salon.actors.host.SessionHost`; ``WriterActor`` hosts the ledger's
:class:`~salon.storage.writer.BatchWriter`. Both are thin shells: they connect to NATS, build their plain object from a
spec and forward lifecycle calls. Ray restarts them when their process dies; ``__init__`` runs again and they
take up their work, where JetStream redelivers whatever the dead process had not acknowledged.

A process loads only what it uses, when it first uses it: a host imports LanceDB and opens its tables in the
background once it pulls turns (the first turn never waits for the import), and loads the embedding model with
its first retrieval; the writer imports the storage stack in its own process only, and its memory indexer
loads the model with the first memories to embed (:mod:`salon.storage.lazy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import ray

from salon import otel
from salon.actors.host import HostSettings, SessionHost
from salon.actors.model import ModelProvider
from salon.actors.shard_leases import ShardLeases
from salon.actors.tool_servers import ToolServers
from salon.otel import TelemetrySettings
from salon.storage import Names, NotFound, incarnation_of
from salon.storage.jetstream.bus import EventPublisher, ShardPuller
from salon.storage.jetstream.client import close_connection, connect
from salon.storage.jetstream.leases import KvLeaseStore
from salon.storage.jetstream.ledger import LedgerReader, NatsJournal
from salon.storage.jetstream.sessions import KvSessionRegistry
from salon.storage.jetstream.tool_answers import KvAnswerStore
from salon.storage.lazy import LazyEmbedder, LazyRetriever

if TYPE_CHECKING:
    # LanceDB and Arrow: the writer's process imports them when it starts; a host's, when it first retrieves.
    from salon.storage.tables import TranscriptStore
    from salon.storage.writer import BatchWriter, WriterStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HostSpec:
    """Everything a host process needs to build its host (pickled by Ray)."""

    index: int
    shards: tuple[int, ...]
    nats_url: str
    namespace: str
    provider_factory: Callable[[], ModelProvider]
    settings: HostSettings = field(default_factory=HostSettings)
    log_level: str = "WARNING"
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    lancedb_uri: str = ""
    """Where the knowledge base and long-term memories are; empty: sessions retrieve nothing."""
    lancedb_storage_options: dict[str, str] = field(default_factory=dict, repr=False)
    """Storage options of an object-store ``lancedb_uri`` (endpoint, region, credentials)."""
    embedding_model: str = "default"
    tools_factory: Callable[[], ToolServers] | None = None
    """Builds the host's MCP servers (the deployment's and its tenants'); None: none. The host starts and
    closes them."""
    num_shards: int = 0
    lease_s: float = 0.0
    """Shard lease time (``actors.shard_leases``); 0: the host serves ``shards`` for its whole life."""
    expected_hosts: int = 1
    """Hosts started together: each waits (up to the lease time) for the others before taking shards."""
    move_grace_s: float = 10.0
    group: str = ""
    """The engine's name among hosts sharing the namespace (part of the host's lease holder name)."""
    nats_replicas: int = 1
    """Copies of the key-value buckets the host creates (the lease bucket), as the engine's streams have."""


async def serve_control(host: SessionHost, nc: Any, names: Names, shards: tuple[int, ...]) -> list[Any]:
    """Answer the gateway's requests (cancel, tool results and approvals) about the sessions of ``shards``;
    returns the subscriptions."""

    def handler(shard: int) -> Callable[[Any], Awaitable[None]]:
        async def handle(msg: Any) -> None:
            await msg.respond(await host.control_message(msg.data, shard))

        return handle

    return [await nc.subscribe(names.control_subject(shard), cb=handler(shard)) for shard in shards]


class ShardServing:
    """Serves the shards whose leases the host holds: their turns (pulled by the host) and their control
    subjects. Lifecycle: :meth:`start`, then :meth:`leave` or :meth:`close`."""

    def __init__(self, host: SessionHost, nc: Any, names: Names, spec: HostSpec) -> None:
        self._host = host
        self._nc = nc
        self._names = names
        self._spec = spec
        self._control: dict[int, Any] = {}
        self.leases: ShardLeases | None = None

    async def start(self) -> None:
        """Open the lease bucket and start the lease rounds."""
        spec = self._spec
        store = await KvLeaseStore.open(self._nc.jetstream(), self._names, spec.lease_s, replicas=spec.nats_replicas)
        self.leases = ShardLeases(
            store,
            # Stable across restarts of the actor (and of the engine): a restarted host takes its own leases back.
            holder=f"{spec.group}-host-{spec.index}" if spec.group else f"host-{spec.index}",
            num_shards=spec.num_shards,
            on_take=self._take,
            on_give_up=self._give_up,
            preferred=spec.shards,
            expected_hosts=spec.expected_hosts,
            move_grace_s=spec.move_grace_s,
        )
        await self.leases.start()

    async def _take(self, shard: int) -> None:
        await self._host.add_shard(ShardPuller(self._nc, self._names, shard))
        if shard not in self._control:
            try:
                self._control[shard] = (await serve_control(self._host, self._nc, self._names, (shard,)))[0]
            except BaseException:
                # The lease is released on failure: the shard must not stay pulled here without it.
                await self._host.remove_shard(shard, 0.0)
                raise

    async def _give_up(self, shard: int, grace_s: float) -> None:
        # Control stays answered while the shard's turns finish: a cancel during the move still lands.
        await self._host.remove_shard(shard, grace_s)
        sub = self._control.pop(shard, None)
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def leave(self, grace_s: float) -> None:
        """Give every shard up for the other hosts."""
        if self.leases is not None:
            await self.leases.leave(grace_s)

    async def close(self) -> None:
        """Stop the rounds and answering control (leases still held expire)."""
        if self.leases is not None:
            await self.leases.close()
        subs, self._control = list(self._control.values()), {}
        for sub in subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def build_host(spec: HostSpec) -> tuple[SessionHost, Any]:
    """Connect to NATS and build the host described by ``spec`` (returns the host and its connection)."""
    names = Names(spec.namespace)
    # Opened on first use (see the module documentation): the host pulls turns without waiting for it.
    retriever = (
        LazyRetriever(
            spec.lancedb_uri, LazyEmbedder(spec.embedding_model), storage_options=spec.lancedb_storage_options
        )
        if spec.lancedb_uri
        else None
    )
    nc = await connect(spec.nats_url, name=f"salon-host-{spec.index}")
    js = nc.jetstream()
    host = SessionHost(
        name=f"host-{spec.index}",
        pullers=[] if spec.lease_s > 0 else [ShardPuller(nc, names, shard) for shard in spec.shards],
        events=EventPublisher(nc, names),
        registry=await KvSessionRegistry.open(js, names),
        journal=NatsJournal(js, names),
        provider=spec.provider_factory(),
        settings=spec.settings,
        retriever=retriever,
        tool_servers=spec.tools_factory() if spec.tools_factory is not None else None,
        tool_answers=await KvAnswerStore.open(js, names),
    )
    return host, nc


@ray.remote(max_restarts=-1, num_cpus=0)
class HostActor:
    """Ray shell around one :class:`SessionHost`."""

    def __init__(self, spec: HostSpec) -> None:
        otel.setup_logging(spec.log_level, spec.telemetry.log_format, process=f"host-{spec.index}")
        otel.setup(spec.telemetry, process=f"host-{spec.index}")  # this process's spans: its own exporter
        self._spec = spec
        self._host: SessionHost | None = None
        self._nc: Any = None
        self._control: list[Any] = []
        self._serving: ShardServing | None = None
        # Async actors run __init__ inside the actor's event loop: start here so a restarted actor resumes
        # its shards without anyone calling it.
        self._started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        self._host, self._nc = await build_host(self._spec)
        await self._host.start()
        names = Names(self._spec.namespace)
        if self._spec.lease_s > 0:
            self._serving = ShardServing(self._host, self._nc, names, self._spec)
            await self._serving.start()
        else:
            self._control = await serve_control(self._host, self._nc, names, self._spec.shards)
        if self._spec.settings.retrieval_top_k > 0:
            # Retrieval is on by default: the first turns will query the tables, so they open now, in the
            # background (LanceDB imported off the event loop; the model still loads on first use). The host is
            # ready without waiting for them: a turn that retrieves meanwhile waits for the opening itself
            # (actors.prompt.RETRIEVER_OPEN_WAIT_S), so the first turns still retrieve. (Off, only a session that
            # turns it on for itself opens them, on its first turn.)
            self._host.warm()

    async def ready(self) -> dict[str, Any]:
        """Wait until the host pulls its shards; returns its pid, node and shards."""
        await self._started
        return {
            "pid": os.getpid(),
            "index": self._spec.index,
            "node_id": ray.get_runtime_context().get_node_id(),
            "shards": await self.shards(),
        }

    async def shards(self) -> list[int]:
        """The shards the host serves now."""
        await self._started
        assert self._host is not None
        return sorted(self._host.shards)

    async def joined(self) -> bool:
        """Whether the host has begun taking shards (always, with fixed ownership)."""
        await self._started
        leases = self._serving.leases if self._serving is not None else None
        return leases is None or leases.joined

    async def leave(self, grace_s: float) -> None:
        """Give every shard up to the other hosts (their running turns get ``grace_s``), and take none again."""
        await self._started
        if self._serving is not None:
            await self._serving.leave(grace_s)

    async def stats(self) -> dict[str, int]:
        """The host's live figures."""
        await self._started
        assert self._host is not None
        leases = self._serving.leases if self._serving is not None else None
        return {**self._host.stats(), **(leases.stats() if leases is not None else {})}

    async def task_stacks(self) -> list[str]:
        """Where each of the host's asyncio tasks waits (names and lines, no content): for a host that stops
        making progress. Answers even before the host has started."""
        return otel.task_stacks()

    async def model_health(self) -> dict[str, str]:
        """Circuit-breaker state of each model provider on this host."""
        await self._started
        assert self._host is not None
        return self._host.model_health()

    async def drain(self, grace_s: float) -> None:
        """Stop taking turns; let running ones finish within ``grace_s``."""
        await self._started
        assert self._host is not None
        await self._host.drain(grace_s)

    async def close(self) -> None:
        """Close the host and its NATS connection. Idempotent."""
        await self._started
        if self._serving is not None:
            # Released, not left to expire: a new start of the deployment takes the shards at once.
            await self._serving.leave(0.0)
            await self._serving.close()
        for sub in self._control:
            await sub.unsubscribe()
        self._control = []
        if self._host is not None:
            await self._host.close()
        if self._nc is not None:
            nc, self._nc = self._nc, None
            await close_connection(nc)
        otel.shutdown()  # exports the spans still queued before Ray kills the process


@dataclass(frozen=True)
class WriterSpec:
    """What the writer process needs (pickled by Ray)."""

    nats_url: str
    namespace: str
    lancedb_uri: str
    lancedb_storage_options: dict[str, str] = field(default_factory=dict, repr=False)
    flush_rows: int = 512
    flush_interval_s: float = 1.0
    optimize_every: int = 50
    embedding_model: str = "default"
    """Embeds each completed turn into long-term memory (a second consumer of the ledger); empty: no memories."""
    vector_index_min_rows: int = 50_000
    """Rows past which ``memories`` gets its ANN index (built by the memory store; 0: never)."""
    log_level: str = "WARNING"
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)


@ray.remote(max_restarts=-1, num_cpus=0)
class WriterActor:
    """Ray shell around the :class:`~salon.storage.writer.BatchWriter` that turns ledger entries into LanceDB rows."""

    def __init__(self, spec: WriterSpec) -> None:
        otel.setup_logging(spec.log_level, spec.telemetry.log_format, process="writer")
        otel.setup(spec.telemetry, process="writer")
        self._spec = spec
        self._writer: BatchWriter | None = None
        self._source: LedgerReader | None = None
        self._store: TranscriptStore | None = None
        self._memory_writer: BatchWriter | None = None
        self._memory_source: LedgerReader | None = None
        self._memory_store: TranscriptStore | None = None
        self._nc: Any = None
        self._started = asyncio.get_running_loop().create_task(self._start())

    async def _start(self) -> None:
        from salon.storage.tables import MemoryIndexer, TranscriptStore
        from salon.storage.writer import BatchWriter

        spec = self._spec
        names = Names(spec.namespace)
        self._nc = await connect(spec.nats_url, name="salon-writer")
        js = self._nc.jetstream()
        registry = await KvSessionRegistry.open(js, names)

        async def session_exists(tenant_id: str, session_id: str, incarnation: str) -> bool:
            try:
                session = await registry.get(tenant_id, session_id)
            except NotFound:
                return False
            return incarnation_of(session) == incarnation

        self._store = await TranscriptStore.open(spec.lancedb_uri, storage_options=spec.lancedb_storage_options)
        self._source = LedgerReader(js, names)
        self._writer = BatchWriter(
            self._source,
            self._store,
            flush_rows=spec.flush_rows,
            flush_interval_s=spec.flush_interval_s,
            optimize_every=spec.optimize_every,
            session_exists=session_exists,
        )
        await self._writer.start()
        if spec.embedding_model:
            # Long-term memory has its own consumer and store: embedding never holds up the transcripts. The
            # model loads with the first memories to embed.
            self._memory_store = await TranscriptStore.open(
                spec.lancedb_uri,
                embedder=LazyEmbedder(spec.embedding_model),
                storage_options=spec.lancedb_storage_options,
                vector_index_min_rows=spec.vector_index_min_rows,
            )
            self._memory_source = LedgerReader(js, names, names.memory_consumer)
            self._memory_writer = BatchWriter(
                self._memory_source,
                MemoryIndexer(self._memory_store),
                flush_rows=spec.flush_rows,
                flush_interval_s=spec.flush_interval_s,
                # Asked after every flush: the indexer paces its optimizations by time (see MemoryIndexer).
                optimize_every=1,
                session_exists=session_exists,
            )
            await self._memory_writer.start()

    async def ready(self) -> dict[str, Any]:
        """Wait until the writer consumes the ledger; returns its pid and node."""
        await self._started
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}

    async def status(self) -> WriterStatus:
        """The writer's health and figures."""
        await self._started
        assert self._writer is not None
        return self._writer.status()

    async def memory_status(self) -> WriterStatus | None:
        """The long-term memory indexer's health and figures (None when memories are off)."""
        await self._started
        return None if self._memory_writer is None else self._memory_writer.status()

    async def flush(self) -> None:
        """Write what is buffered now (transcripts, then memories)."""
        await self._started
        assert self._writer is not None
        await self._writer.flush()
        if self._memory_writer is not None:
            await self._memory_writer.flush()

    async def close(self) -> None:
        """Flush and stop. Idempotent."""
        await self._started
        for writer in (self._writer, self._memory_writer):
            if writer is not None:
                await writer.close()
        for source in (self._source, self._memory_source):
            if source is not None:
                await source.close()
        for store in (self._store, self._memory_store):
            if store is not None:
                await store.close()
        if self._nc is not None:
            nc, self._nc = self._nc, None
            await close_connection(nc)
        otel.shutdown()
