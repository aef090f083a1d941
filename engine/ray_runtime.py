"""The session host actors and the batch writer on Ray (joining or starting Ray is :mod:`salon.engine.ray_start`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import ray

from salon.actors import HostSettings, shards_of_host
from salon.actors.ray_host import HostActor, HostSpec, WriterActor, WriterSpec
from salon.engine.config import Config
from salon.otel import TelemetrySettings
from salon.providers.mcp.config import McpHubSpec, McpServerConfig
from salon.storage.writer import WriterStatus

log = logging.getLogger(__name__)

HOST_GROUP_FILE = "host-group-id"


def host_group_id(config: Config) -> str:
    """This engine's name among the hosts sharing its namespace's shard leases: kept in the data directory, so a
    restarted engine's hosts take their own leases back at once, while another engine on the same NATS and
    namespace (another data directory) never takes its hosts for its own."""
    path = config.data_path / HOST_GROUP_FILE
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        found = ""
    if found:
        return found
    made = uuid.uuid4().hex[:8]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(made + "\n")
    return made


def host_specs(
    config: Config,
    nats_url: str,
    tenant_mcp_servers: Mapping[str, Mapping[str, McpServerConfig]] | None = None,
    *,
    nats_replicas: int = 1,
) -> list[HostSpec]:
    """One spec per host, each owning its shards (and calling the deployment's MCP servers and
    ``tenant_mcp_servers``, each tenant's own); buckets the hosts create get ``nats_replicas`` copies."""
    settings = HostSettings(
        session_idle_s=config.session_idle_s,
        max_sessions=config.max_sessions_per_host,
        ack_wait_s=config.ack_wait_s,
        window_max_messages=config.window_max_messages,
        window_token_budget=config.window_token_budget,
        max_tokens=config.max_tokens,
        snapshot_every_turns=config.snapshot_every_turns,
        max_inflight_turns=config.max_turns_per_host,
        max_inflight_per_tenant=config.max_turns_per_tenant,
        retrieval_top_k=config.retrieval_top_k,
        retrieval_min_score=config.retrieval_min_score,
        retrieval_token_budget=config.retrieval_token_budget,
        summary_max_tokens=config.summary_max_tokens,
        summary_min_messages=config.summary_min_messages,
        tool_policy=config.tool_policy(),
    )
    provider = config.provider_spec()
    group = host_group_id(config) if config.shard_lease_s > 0 else ""
    tools = McpHubSpec(config.mcp_servers(), dict(tenant_mcp_servers or {}))
    return [
        HostSpec(
            index=i,
            shards=tuple(shards_of_host(i, config.num_hosts, config.num_shards)),
            nats_url=nats_url,
            namespace=config.namespace,
            provider_factory=provider.build,
            tools_factory=tools.build,
            settings=settings,
            log_level=config.log_level,
            telemetry=TelemetrySettings.from_config(config),
            lancedb_uri=config.lancedb_location,
            lancedb_storage_options=config.lancedb_storage_options(),
            embedding_model=config.embedding_model,
            num_shards=config.num_shards,
            lease_s=config.shard_lease_s,
            expected_hosts=config.num_hosts,
            move_grace_s=config.shard_move_grace_s,
            group=group,
            nats_replicas=nats_replicas,
        )
        for i in range(config.num_hosts)
    ]


def joining_host_specs(
    config: Config,
    tenant_mcp_servers: Mapping[str, Mapping[str, McpServerConfig]],
    *,
    count: int,
    group: str,
    nats_replicas: int = 1,
) -> list[HostSpec]:
    """Specs of ``count`` hosts joining the running deployment on ``config.nats_url`` as lease holders named
    ``group``: none is given shards at start or waits for the others; each takes its share by lease."""
    base = host_specs(config, config.nats_url, tenant_mcp_servers, nats_replicas=nats_replicas)[0]
    return [dataclasses.replace(base, index=i, shards=(), expected_hosts=1, group=group) for i in range(count)]


SPREAD = "SPREAD"
"""How Ray places the hosts: over as many nodes as it can (a node lost takes fewer shards with it), and a host whose
node died is restarted on any live one. (Soft node affinity was tried and did not hold: Ray placed hosts on other
nodes than the ones named.)"""


HOST_CLOSE_TIMEOUT_S = 30.0
"""How long a host may take to close (give its leases back, store its last events, export its spans)."""
HOST_CLOSE_OUTAGE_TIMEOUT_S = 2.0
"""The same while NATS is unreachable: nothing it would store can be stored, so waiting only delays the exit."""


class HostGroup:
    """The deployment's host actors, spread over the Ray cluster's nodes. Lifecycle: :meth:`start`, :meth:`drain`,
    :meth:`close`; with shard leases, hosts can be added (:meth:`add_host`) and removed (:meth:`remove_host`)
    while it runs."""

    def __init__(
        self,
        specs: list[HostSpec],
        namespace: str,
        *,
        resources: Mapping[str, float] | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        self._specs = specs
        self._namespace = namespace
        self._resources = dict(resources or {})
        self._start_timeout_s = start_timeout_s
        self._next_index = len(specs)
        self.handles: list[Any] = []
        self.indexes: list[int] = []
        self.info: list[dict[str, Any]] = []

    def _create(self, spec: HostSpec) -> Any:
        return HostActor.options(  # type: ignore[attr-defined]
            name=f"{self._namespace}-host-{spec.index}",
            lifetime="non_detached",
            get_if_exists=False,
            scheduling_strategy=SPREAD,
            resources=self._resources,
        ).remote(spec)

    async def start(self, *, balanced: bool = True) -> None:
        """Create the host actors (spread over the cluster's nodes) and, when ``balanced``, wait until they
        serve every shard between them (hosts joining a deployment's other hosts do not wait for that)."""
        for spec in self._specs:
            self.handles.append(self._create(spec))
            self.indexes.append(spec.index)
        self.info = list(await asyncio.gather(*(h.ready.remote() for h in self.handles)))
        if balanced and self._specs and self._specs[0].lease_s > 0:
            await self.wait_balanced(self._start_timeout_s)
            self.info = list(await asyncio.gather(*(h.ready.remote() for h in self.handles)))

    async def shards(self) -> dict[int, list[int]]:
        """The shards each host (by index) serves now."""
        owned = await asyncio.gather(*(h.shards.remote() for h in self.handles))
        return dict(zip(self.indexes, owned, strict=True))

    async def wait_balanced(self, timeout_s: float) -> dict[int, list[int]]:
        """Wait until every shard is served by exactly one host and each host serves its fair share (within
        one); returns who serves what. Raises TimeoutError past ``timeout_s``."""
        num_shards = self._specs[0].num_shards
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            try:
                # Bounded too: a host that does not answer must not hold the caller past its deadline.
                owned = await asyncio.wait_for(self.shards(), max(deadline - loop.time(), 0.1))
            except (ray.exceptions.RayError, TimeoutError):
                owned = {}  # a host is restarting (its node died), or did not answer in time: ask again
            counts = [len(v) for v in owned.values()]
            served = sorted(s for v in owned.values() for s in v)
            if served == list(range(num_shards)) and counts and max(counts) - min(counts) <= 1:
                return owned
            if loop.time() >= deadline:
                raise TimeoutError(f"shards not balanced after {timeout_s:.0f} s: {owned}")
            await asyncio.sleep(0.1)

    async def add_host(self) -> int:
        """Start one more host: it takes about its share of the shards from the others. Returns its index."""
        if not self._specs or self._specs[0].lease_s <= 0:
            raise RuntimeError("hosts can join only with shard leases (shard_lease_s > 0)")
        index, self._next_index = self._next_index, self._next_index + 1
        spec = dataclasses.replace(self._specs[0], index=index, shards=(), expected_hosts=1)
        handle = self._create(spec)
        try:
            info = await asyncio.wait_for(handle.ready.remote(), self._start_timeout_s)
        except BaseException:
            # Not started in time (or the caller gave up): nothing may keep running half-started, taking shards.
            ray.kill(handle, no_restart=True)
            raise
        self.handles.append(handle)
        self.indexes.append(index)
        self.info.append(info)
        return index

    def kill_host(self, index: int) -> None:
        """End host ``index`` at once, as a crash would, and let Ray not restart it: its leases expire and the
        other hosts take its shards after the lease time (for fault tests and benchmarks)."""
        position = self.indexes.index(index)
        handle = self.handles.pop(position)
        self.indexes.pop(position)
        self.info.pop(position)
        ray.kill(handle, no_restart=True)

    async def remove_host(self, index: int, grace_s: float) -> bool:
        """Stop host ``index``: it gives its shards up to the others (running turns get ``grace_s``), then it
        closes. Bounded: a host that does not leave within ``grace_s`` + ``HOST_CLOSE_TIMEOUT_S`` (or close
        within ``HOST_CLOSE_TIMEOUT_S``) is stopped anyway: the leases it still holds expire, and what it had
        acknowledged is in JetStream already. Returns whether it left and closed in time."""
        position = self.indexes.index(index)
        handle = self.handles.pop(position)
        self.indexes.pop(position)
        self.info.pop(position)
        doing = "leave"
        try:
            await asyncio.wait_for(handle.leave.remote(grace_s), grace_s + HOST_CLOSE_TIMEOUT_S)
            doing = "close"
            await asyncio.wait_for(handle.close.remote(), HOST_CLOSE_TIMEOUT_S)
        except TimeoutError:
            # Where it waits, for whoever reads the log: a leave that hangs is a bug to find.
            try:
                stacks = "\n  ".join(await asyncio.wait_for(handle.task_stacks.remote(), 10.0))
            except (TimeoutError, ray.exceptions.RayError) as exc:
                stacks = f"(no answer: {type(exc).__name__})"
            log.warning("host %d did not %s in time; stopping it. Its tasks:\n  %s", index, doing, stacks)
            return False
        finally:
            ray.kill(handle, no_restart=True)
        return True

    async def stats(self) -> list[dict[str, int]]:
        """Each host's live figures."""
        return list(await asyncio.gather(*(h.stats.remote() for h in self.handles)))

    async def task_stacks(self, timeout_s: float = 10.0) -> dict[int, list[str] | str]:
        """Where each host's asyncio tasks wait, by host index; a host that does not answer within ``timeout_s``
        (its event loop blocked, or the actor gone) is named with the reason instead."""

        async def one(handle: Any) -> list[str] | str:
            try:
                return list(await asyncio.wait_for(handle.task_stacks.remote(), timeout_s))
            except (TimeoutError, ray.exceptions.RayError) as exc:
                return f"no answer ({type(exc).__name__})"

        stacks = await asyncio.gather(*(one(h) for h in self.handles))
        return dict(zip(self.indexes, stacks, strict=True))

    async def drain(self, grace_s: float) -> None:
        """Stop intake on every host; let running turns finish within ``grace_s``."""
        await asyncio.gather(*(h.drain.remote(grace_s) for h in self.handles), return_exceptions=True)

    async def close(self, timeout_s: float = HOST_CLOSE_TIMEOUT_S) -> None:
        """Close every host and remove its actor; a host not closed within ``timeout_s`` is stopped anyway (what
        it had acknowledged is in JetStream already; its leases expire). Idempotent."""
        handles, self.handles = self.handles, []
        self.indexes = []

        async def close_one(handle: Any) -> None:
            await asyncio.wait_for(handle.close.remote(), timeout_s)

        results = await asyncio.gather(*(close_one(h) for h in handles), return_exceptions=True)
        for result in results:
            if isinstance(result, TimeoutError):
                log.warning("a host did not close within %.0f s; stopping it", timeout_s)
            elif isinstance(result, BaseException):
                log.warning("a host did not close cleanly: %s", type(result).__name__)
        for handle in handles:
            ray.kill(handle, no_restart=True)


class WriterHandle:
    """The batch writer actor. Lifecycle: :meth:`start`, :meth:`close`; :meth:`started` waits for its start."""

    def __init__(self, config: Config, nats_url: str) -> None:
        self._spec = WriterSpec(
            nats_url=nats_url,
            namespace=config.namespace,
            lancedb_uri=config.lancedb_location,
            lancedb_storage_options=config.lancedb_storage_options(),
            flush_rows=config.flush_rows,
            flush_interval_s=config.flush_interval_s,
            log_level=config.log_level,
            embedding_model=config.embedding_model if config.long_term_memory else "",
            vector_index_min_rows=config.vector_index_min_rows,
            telemetry=TelemetrySettings.from_config(config),
        )
        self._name = f"{config.namespace}-writer"
        self._resources = config.ray_actor_resources()
        self.handle: Any = None
        self.info: dict[str, Any] = {}
        self._ready: asyncio.Task[dict[str, Any]] | None = None

    async def start(self) -> None:
        """Create the writer actor, which then opens its tables and consumes the ledger (see :meth:`started`).
        Nothing waits for that: accepted turns wait durably in the ledger, and reads merge the ledger's turns
        with the stored ones, so the engine serves while the writer imports LanceDB (the last part of a start
        otherwise). Idempotent."""
        if self.handle is not None:
            return
        self.handle = WriterActor.options(  # type: ignore[attr-defined]
            name=self._name, lifetime="non_detached", resources=self._resources
        ).remote(self._spec)
        self._ready = asyncio.get_running_loop().create_task(self._wait_ready(), name="salon-writer-start")

    async def _wait_ready(self) -> dict[str, Any]:
        self.info = dict(await self.handle.ready.remote())
        return self.info

    async def started(self) -> dict[str, Any]:
        """Wait until the writer consumes the ledger; returns its pid and node. Raises what its start raised."""
        if self._ready is None:
            raise RuntimeError("the batch writer was not started")
        # Shielded: a caller that gives up does not cancel the wait the others share.
        return await asyncio.shield(self._ready)

    async def status(self) -> WriterStatus:
        """The writer's health and figures."""
        status: WriterStatus = await self.handle.status.remote()
        return status

    async def flush(self) -> None:
        """Write what the writer holds now."""
        await self.handle.flush.remote()

    async def close(self) -> None:
        """Flush, stop and remove the actor. Idempotent."""
        handle, self.handle = self.handle, None
        ready, self._ready = self._ready, None
        if ready is not None and not ready.done():
            ready.cancel()
        if ready is not None:
            await asyncio.wait({ready})
            if not ready.cancelled() and ready.exception() is not None:
                log.warning("the batch writer had not started: %s", type(ready.exception()).__name__)
        if handle is None:
            return
        try:
            # Bounded as a host's close is: a writer still opening its tables waits for them before it closes.
            # What it has not written stays in the ledger for the next writer.
            async with asyncio.timeout(HOST_CLOSE_TIMEOUT_S):
                await handle.close.remote()
        except Exception as exc:
            log.warning("the batch writer did not close cleanly: %s", type(exc).__name__)
        ray.kill(handle, no_restart=True)
