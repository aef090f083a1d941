"""The composition root: builds and runs a whole engine from a :class:`Config`.

Order of start: Ray begins on a thread of its own (:class:`~salon.engine.ray_start.RayStart`; `salon serve` begins
it before importing this module) while the data directory, NATS (embedded or configured) and its streams and buckets
come up → once Ray is up, the session hosts (waited for) and the batch writer (not waited for: it opens its tables
and consumes the ledger while the engine already serves, turns waiting durably in the ledger meanwhile), while the
gateway opens its stores → the gRPC gateway → the web bridge (when ``web_port`` is set). Shutdown runs the other
way: intake stops first, running turns get a grace period, then everything closes, leaving no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from salon import otel
from salon.engine.admin import AdminServicer
from salon.engine.auth import Authenticator, AuthInterceptor
from salon.engine.config import Config
from salon.engine.disk import DiskGuard, local_directory
from salon.engine.erasure import UserEraser
from salon.engine.figures import FiguresPoller
from salon.engine.gates import Availability, AvailabilityGate, MetadataLimitInterceptor
from salon.engine.gateway import Gateway
from salon.engine.health_watch import HealthWatch
from salon.engine.knowledge import Knowledge
from salon.engine.knowledge_servicer import KnowledgeServicer
from salon.engine.limits import TenantLimiter
from salon.engine.nats_server import EmbeddedNats
from salon.engine.ray_runtime import (
    HOST_CLOSE_OUTAGE_TIMEOUT_S,
    HOST_CLOSE_TIMEOUT_S,
    HostGroup,
    WriterHandle,
    host_specs,
)
from salon.engine.ray_start import RayStart
from salon.engine.servicer import ConversationServicer
from salon.engine.tenants import Limits, TenantRegistry
from salon.engine.transport import server_options
from salon.engine.web import TOKEN_SERVICE_NAME, BrowserAccess
from salon.storage import InvalidArgument, Names, redact_url
from salon.storage.jetstream.bus import BusSettings, TurnPublisher, ensure_bus
from salon.storage.jetstream.client import JetStream, close_connection, connect, stream_replicas, warn_unless_synced
from salon.storage.jetstream.erasure import event_purger
from salon.storage.jetstream.ledger import LedgerSettings, NatsJournal, ensure_ledger
from salon.storage.jetstream.ledger_floor import writer_ack_floor
from salon.storage.jetstream.session_changes import SessionChanges
from salon.storage.jetstream.sessions import KvSessionRegistry
from salon.storage.jetstream.tool_answers import KvAnswerStore
from salon.storage.jetstream.usage import KvTokenCounters, KvTurnCounters
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.lance.memory_search import MemorySearch
from salon.storage.lazy import LazyEmbedder
from salon.storage.tables import TranscriptStore
from salon.v1 import admin_service_pb2 as admin_pb2
from salon.v1 import admin_service_pb2_grpc as admin_grpc
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import knowledge_service_pb2_grpc as ks_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = cs_pb2.DESCRIPTOR.services_by_name["ConversationService"].full_name
KNOWLEDGE_SERVICE_NAME = ks_pb2.DESCRIPTOR.services_by_name["KnowledgeService"].full_name
ADMIN_SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name
NATS_METHOD_PREFIXES = (f"/{SERVICE_NAME}/", f"/{ADMIN_SERVICE_NAME}/")
"""Methods that need NATS (sessions, turns, usage counters): refused at once while it is away."""
WRITING_METHODS = frozenset(
    {
        f"/{SERVICE_NAME}/CreateSession",
        f"/{SERVICE_NAME}/SendTurn",
        f"/{SERVICE_NAME}/Converse",
        f"/{KNOWLEDGE_SERVICE_NAME}/IngestDocuments",
    }
)
"""Methods that make the engine write new data: refused while its disk is full (deleting still works)."""


def default_limits(config: Config) -> Limits:
    """The limits of a tenant the tenants file does not limit otherwise."""
    return Limits(
        turns_per_minute=config.tenant_turns_per_minute,
        concurrent_turns=config.tenant_concurrent_turns,
        tokens_per_day=config.tenant_tokens_per_day,
        max_message_bytes=config.tenant_max_message_bytes,
        max_sessions=config.tenant_max_sessions,
    )


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    """TLS credentials of the gRPC port (None: plaintext), requiring and verifying client certificates when a
    client CA is set (gRPC Python can only require a client certificate or not ask for one at all)."""
    if not config.tls_cert_file:
        return None
    try:
        chain = Path(config.tls_cert_file).read_bytes()
        key = Path(config.tls_key_file).read_bytes()
        client_ca = Path(config.tls_client_ca_file).read_bytes() if config.tls_client_ca_file else None
    except OSError:
        raise InvalidArgument("a TLS certificate or key file cannot be read", reason="INVALID_CONFIG") from None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


class Engine:
    """A running Salon: ``async with Engine(config) as engine: ...`` or ``start``/``drain``/``close``.

    ``ray_start``: a start of Ray begun earlier for this engine (the command line begins it before importing the
    engine); the engine owns it from then on, and shuts down the Ray it started. None: the engine begins its own."""

    def __init__(self, config: Config, *, ray_start: RayStart | None = None) -> None:
        self.config = config
        self.names = Names(config.namespace)
        self.nats_url = config.nats_url
        self.grpc_port = 0
        self._embedded_nats: EmbeddedNats | None = None
        self._nc: Any = None
        self.replicas = 1
        """Replicas of the streams and buckets this engine creates (set once connected)."""
        self._sync_check: asyncio.Task[None] | None = None
        self._hosts: HostGroup | None = None
        self._writer: WriterHandle | None = None
        self._store: TranscriptStore | None = None
        self._knowledge: KnowledgeBase | None = None
        self._memory_search: MemorySearch | None = None
        self._availability = Availability(NATS_METHOD_PREFIXES, WRITING_METHODS)
        self._watch = self._health_watch()
        self._figures: FiguresPoller | None = None
        self._server: grpc.aio.Server | None = None
        self._health = HealthServicer()
        self._ray_start = ray_start
        self._state = "new"
        self.tenants = TenantRegistry(
            config.tenants_file or None, default_limits(config), reload_interval_s=config.tenants_reload_s
        )
        self.limiter: TenantLimiter | None = None
        self._session_changes: SessionChanges | None = None
        self.browser = BrowserAccess(config)

    @property
    def target(self) -> str:
        """``host:port`` of the gRPC gateway, for clients."""
        return f"{self.config.grpc_host}:{self.grpc_port}"

    @property
    def web_url(self) -> str:
        """``http://host:port`` of the web bridge (empty when ``web_port`` is -1)."""
        return self.browser.web_url

    @property
    def writer(self) -> WriterHandle:
        """The batch writer actor."""
        assert self._writer is not None, "engine not started"
        return self._writer

    @property
    def hosts(self) -> HostGroup:
        """The session host actors."""
        assert self._hosts is not None, "engine not started"
        return self._hosts

    async def start(self) -> None:
        """Bring every part up; on failure, close what was started and re-raise."""
        if self._state != "new":
            return
        self._state = "starting"
        try:
            await self._start()
        except BaseException:
            await self.close()
            raise
        self._state = "running"

    def _tool_servers_for(self) -> Callable[[str], tuple[str, ...]]:
        """The MCP servers a tenant's sessions may name: the deployment's file is read now (a bad one stops the
        start), the tenants' from the tenants file as it stands."""
        deployment = tuple(self.config.mcp_servers())
        return lambda tenant: (*deployment, *self.tenants.mcp_servers_for(tenant))

    async def _start(self) -> None:
        # The order matters; see the module documentation.
        self._start_telemetry_and_tenants()
        credentials = server_credentials(self.config)
        if not self.config.gateway_only:
            # Ray's start is mostly waiting for its own processes: it goes on beside NATS's.
            self._ray_start = (self._ray_start or RayStart(self.config)).begin()
        js = await self._start_nats()
        if self._ray_start is not None:
            # Before any store opens: Ray forks helper processes; LanceDB's runtime must not be running in a forking
            # process.
            await self._ray_start.started()
        gateway = await self._gateway_beside_workers(js)
        await self._start_server(gateway, credentials)
        self._watch.start()
        await self._set_serving(self._availability.serving)
        # The web bridge calls the gateway: it starts once the gateway serves.
        await self.browser.start_bridge()
        self._start_figures()
        log.info(
            "salon listening on %s (%s, auth %s; NATS %s)",
            self.target,
            "TLS" if credentials is not None else "plaintext",
            self.config.auth,
            redact_url(self.nats_url),
        )

    async def _gateway_beside_workers(self, js: JetStream) -> Gateway:
        """The gateway's stores and the gateway, while the host and writer processes start (they take seconds to
        import and connect; the stores a fraction of one). Ray started its helper processes already, so opening
        LanceDB here no longer precedes a fork."""

        async def gateway() -> Gateway:
            await self._open_stores()
            return await self._build_gateway(js)

        try:
            async with asyncio.TaskGroup() as group:
                built = group.create_task(gateway())
                if not self.config.gateway_only:
                    group.create_task(self._start_workers())
        except BaseExceptionGroup as failed:
            # The first failure, as a sequential start would have raised it (callers map errors by type).
            raise failed.exceptions[0]  # noqa: B904
        return built.result()

    def _start_telemetry_and_tenants(self) -> None:
        config = self.config
        otel.setup(otel.TelemetrySettings.from_config(config), process="gateway", serve_metrics=True)
        self.tenants.load()  # a bad tenants file stops the start, before anything runs
        self.tenants.start()
        if config.auth == "off":
            log.warning(
                "AUTH IS OFF: every caller is tenant %r; listening on loopback %s only",
                config.default_tenant,
                config.grpc_host,
            )

    async def _start_nats(self) -> JetStream:
        """The data directory, the embedded NATS server (unless one is configured), the gateway's connection,
        and the turn bus and ledger streams; returns the connection's JetStream context."""
        config = self.config
        data = config.data_path
        data.mkdir(parents=True, exist_ok=True)
        if not self.nats_url:
            self._embedded_nats = EmbeddedNats(data / "nats", binary=config.nats_server_bin, namespace=config.namespace)
            self.nats_url = await self._embedded_nats.start()
        nc = await connect(self.nats_url, name="salon-gateway", on_state=self._on_nats_state)
        self._nc = nc
        self.replicas = stream_replicas(nc, config.nats_replicas)
        if self._embedded_nats is None:
            # The embedded server fsyncs every write; an operator's servers must be configured to.
            self._sync_check = asyncio.create_task(warn_unless_synced(nc), name="salon-nats-sync-check")
        await self._ensure_streams()
        return nc.jetstream()

    async def _open_stores(self) -> None:
        """The transcript store, the knowledge base and the memory search (with the embedding model)."""
        config = self.config
        options = config.lancedb_storage_options()
        # The embedding model loads with the first ingestion, knowledge or memory search (off the event loop): a
        # gateway that never embeds never holds it. One model for both.
        embedder = LazyEmbedder(config.embedding_model)
        # Before the transcript store: this opens (and brings up to date) the memories table the store reads.
        self._memory_search = await MemorySearch.open(config.lancedb_location, embedder, storage_options=options)
        self._store = await TranscriptStore.open(config.lancedb_location, storage_options=options)
        self._knowledge = await KnowledgeBase.open(
            config.lancedb_location,
            embedder,
            max_document_bytes=config.max_document_bytes,
            chunk_tokens=config.chunk_tokens,
            overlap_tokens=config.chunk_overlap_tokens,
            storage_options=options,
            vector_index_min_rows=config.vector_index_min_rows,
        )

    async def _build_gateway(self, js: JetStream) -> Gateway:
        """The session registry, the tenant limiter and the gateway over them."""
        assert self._store is not None
        registry = await KvSessionRegistry.open(js, self.names, replicas=self.replicas)

        async def count_sessions(tenant_id: str) -> int:
            return len(await registry.list_ids(tenant_id))

        self.limiter = TenantLimiter(
            self.tenants.policy,
            count_sessions=count_sessions,
            tokens=await KvTokenCounters.open(js, self.names, replicas=self.replicas),
            turns=await KvTurnCounters.open(js, self.names, replicas=self.replicas),
        )
        self.limiter.start()
        gateway = Gateway(
            self.config,
            TurnPublisher(self._nc, self.names),
            registry,
            NatsJournal(js, self.names),
            self._store,
            store_healthy=lambda: self._availability.store_healthy,
            halted=self._availability.halt,
            guardrails_for=self.tenants.guardrails_for,
            stored_floor=writer_ack_floor(js, self.names),
            tool_servers_for=self._tool_servers_for(),
            tool_answers=await KvAnswerStore.open(js, self.names, replicas=self.replicas),
        )
        # The turn path keeps session definitions while the registry's changes are watched (engine.session_cache).
        self._session_changes = SessionChanges(js, self.names, gateway.sessions.forget)
        await self._session_changes.start()
        gateway.sessions.enable(lambda: int(self._nc.stats["reconnects"]) if self._nc is not None else -1)
        return gateway

    async def _start_workers(self) -> None:
        """The session hosts and the batch writer (Ray actors)."""
        specs = host_specs(self.config, self.nats_url, self.tenants.all_mcp_servers(), nats_replicas=self.replicas)
        self._hosts = HostGroup(specs, self.config.namespace, resources=self.config.ray_actor_resources())
        self._writer = WriterHandle(self.config, self.nats_url)
        await asyncio.gather(self._hosts.start(), self._writer.start())

    async def _start_server(self, gateway: Gateway, credentials: grpc.ServerCredentials | None) -> None:
        """The gRPC server with every service on it, listening."""
        config = self.config
        assert self._knowledge is not None and self.limiter is not None
        await self.browser.open()
        authenticator = Authenticator(
            self.tenants,
            required=config.auth == "on",
            default_tenant=config.default_tenant,
            tokens=self.browser.tokens,
        )
        self._server = server = grpc.aio.server(
            # Outermost first: oversized metadata is refused before authentication reads it.
            interceptors=[
                MetadataLimitInterceptor(),
                AvailabilityGate(self._availability),
                AuthInterceptor(authenticator),
            ],
            options=server_options(config),
        )
        conversation = ConversationServicer(
            # None: the tenant of every call comes from the auth interceptor, never from a default.
            gateway,
            None,
            write_timeout_s=config.stream_write_timeout_s,
            limiter=self.limiter,
        )
        cs_grpc.add_ConversationServiceServicer_to_server(conversation, server)  # type: ignore[no-untyped-call]
        # The knowledge service names the caller's tenant exactly as the conversation service does.
        knowledge = Knowledge(
            self._knowledge,
            max_text_bytes=config.max_text_bytes,
            memory=self._memory_search,
            session_of=gateway.registry.get,
        )
        ks_grpc.add_KnowledgeServiceServicer_to_server(  # type: ignore[no-untyped-call]
            KnowledgeServicer(knowledge, conversation._tenant), server
        )
        purge = event_purger(self._nc.jetstream(), self.names)
        eraser = UserEraser(gateway.registry, gateway.delete_session, gateway.store.erase_user, purge_events=purge)
        admin_grpc.add_AdminServiceServicer_to_server(  # type: ignore[no-untyped-call]
            AdminServicer(self.limiter, self.tenants, eraser), server
        )
        self.browser.add_to_server(server, gateway.get_session)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                KNOWLEDGE_SERVICE_NAME,
                ADMIN_SERVICE_NAME,
                TOKEN_SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        address = f"{config.grpc_host}:{config.grpc_port}"
        if credentials is None:
            self.grpc_port = server.add_insecure_port(address)
        else:
            self.grpc_port = server.add_secure_port(address, credentials)
        await server.start()

    def _start_figures(self) -> None:
        hosts, writer = self._hosts, self._writer
        self._figures = FiguresPoller(
            hosts.stats if hosts is not None else None,
            writer.status if writer is not None else None,
            self._waiting_turns,
        )
        self._figures.start()

    def _health_watch(self) -> HealthWatch:
        return HealthWatch(
            self._availability,
            set_serving=self._set_serving,
            live=lambda: self._state == "running",
            restore_bus=self._ensure_streams,
            connected=lambda: bool(self._nc is not None and self._nc.is_connected),
            disk=DiskGuard(self._written_paths()),
            interval_s=self.config.store_check_interval_s,
            writer=lambda: self._writer,
            nats_server=lambda: self._embedded_nats,
        )

    def _bus_settings(self) -> BusSettings:
        config = self.config
        return BusSettings(
            num_shards=config.num_shards,
            dedupe_window_s=config.dedupe_window_s,
            event_retention_s=config.event_retention_s,
            ack_wait_s=config.ack_wait_s,
            replicas=self.replicas,
        )

    def _ledger_settings(self) -> LedgerSettings:
        config = self.config
        return LedgerSettings(
            retention_s=config.ledger_retention_s,
            dedupe_window_s=config.dedupe_window_s,
            writer_ack_wait_s=config.writer_ack_wait_s,
            replicas=self.replicas,
        )

    async def _set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self._health.set("", status)
        await self._health.set(SERVICE_NAME, status)
        await self._health.set(KNOWLEDGE_SERVICE_NAME, status)

    def _written_paths(self) -> list[Path]:
        """Where this engine writes on local disk: the data directory and a local LanceDB elsewhere."""
        paths = [self.config.data_path]
        lancedb_dir = local_directory(self.config.lancedb_location)
        if lancedb_dir is not None:
            paths.append(lancedb_dir)
        return paths

    async def _on_nats_state(self, connected: bool) -> None:
        await self._watch.on_nats_state(connected)

    async def _ensure_streams(self) -> None:
        """The turn bus and the ledger on the current connection (again after a restarted server)."""
        js = self._nc.jetstream()
        await ensure_bus(js, self.names, self._bus_settings())
        await ensure_ledger(js, self.names, self._ledger_settings())

    async def drain(self) -> None:
        """Stop intake and give running turns ``shutdown_grace_s`` to finish. Idempotent."""
        if self._state not in {"running", "starting"}:
            return
        self._state = "draining"
        grace = self.config.shutdown_grace_s
        await self._health.enter_graceful_shutdown()
        # New calls are refused at once; calls in flight and the turns behind them share the grace period.
        # Turns still queued on the bus stay there and run after the next start.
        # The web bridge stops with the gateway: its open streams share the same grace.
        waits = [self.browser.close()]
        log.info("draining: intake stopped, running turns get %.0f s", grace)
        if self._server is not None:
            waits.append(self._server.stop(grace=grace))
        if self._hosts is not None:
            waits.append(self._hosts.drain(grace))
        await asyncio.gather(*waits)
        if self.limiter is not None:
            await self.limiter.flush()  # the tokens of the turns just ended, while NATS is surely up
        log.info("drained")

    async def _waiting_turns(self) -> dict[int, int]:
        """Turns published and not yet taken by a host, per shard (each shard consumer's pending count)."""
        js = self._nc.jetstream()
        shards = range(self.config.num_shards)
        infos = await asyncio.gather(
            *(js.consumer_info(self.names.turns_stream, self.names.shard_consumer(s)) for s in shards)
        )
        return {s: int(info.num_pending or 0) for s, info in zip(shards, infos, strict=True)}

    async def close(self) -> None:
        """Stop everything, in reverse order of start. Idempotent."""
        if self._state == "closed":
            return
        if self._state == "running":
            await self.drain()
        self._state = "closed"
        await self._watch.close()
        if self._figures is not None:
            await self._figures.close()
        await self.tenants.close()
        await self.browser.close()
        if self._server is not None:
            await self._server.stop(grace=None)
            self._server = None
        if self.limiter is not None:
            await self.limiter.close()  # before NATS closes: the last tokens recorded, leases given back
        if self._session_changes is not None:
            await self._session_changes.close()
        await self._close_workers()
        await self._close_infrastructure()
        otel.shutdown()  # last: flushes the gateway's spans, stops the metrics endpoint

    async def _close_workers(self) -> None:
        if self._hosts is not None:
            reachable = self._nc is not None and self._nc.is_connected
            await self._hosts.close(HOST_CLOSE_TIMEOUT_S if reachable else HOST_CLOSE_OUTAGE_TIMEOUT_S)
            self._hosts = None
            log.info("session hosts closed")
        if self._writer is not None:
            # After the hosts: the writer flushes what they recorded last.
            await self._writer.close()
            self._writer = None
            log.info("batch writer closed")

    async def _close_infrastructure(self) -> None:
        if self._sync_check is not None:
            check, self._sync_check = self._sync_check, None
            check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await check
        if self._store is not None:
            await self._store.close()
            self._store = None
        if self._knowledge is not None:
            await self._knowledge.close()
            self._knowledge = None
        if self._memory_search is not None:
            await self._memory_search.close()
            self._memory_search = None
        if self._ray_start is not None:
            # Also a start still running (the engine's start failed beside it): it ends, then what it started stops.
            ray_start, self._ray_start = self._ray_start, None
            await ray_start.close()
        if self._nc is not None:
            nc, self._nc = self._nc, None
            await close_connection(nc)
        if self._embedded_nats is not None:
            await self._embedded_nats.close()
            self._embedded_nats = None

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
