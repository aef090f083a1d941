"""Session hosts that join a running deployment: ``salon hosts``.

With shard leases (``shard_lease_s`` > 0) the hosts of a deployment are whoever holds the leases in its NATS
namespace, not a list fixed at start. A process running :class:`ExtraHosts` starts more hosts on its Ray (the
deployment's cluster, or a local one: hosts talk to the rest of the deployment through NATS and LanceDB only);
they take about their share of the shards from the others. Stopping it gives those shards back first, so
scaling in loses nothing and keeps sessions waiting only for the move.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

from salon.engine.app import default_limits
from salon.engine.config import Config
from salon.engine.ray_runtime import HostGroup, joining_host_specs
from salon.engine.ray_start import ensure_ray, shutdown_ray
from salon.engine.tenants import TenantRegistry
from salon.storage import InvalidArgument
from salon.storage.jetstream.client import close_connection, connect, stream_replicas
from salon.storage.reasons import Reason

log = logging.getLogger(__name__)


class ExtraHosts:
    """``count`` session hosts joining the deployment whose NATS is ``config.nats_url``. Lifecycle:
    :meth:`start`, then :meth:`close` (idempotent); ``async with`` does both."""

    def __init__(self, config: Config, count: int) -> None:
        if count < 1:
            raise InvalidArgument("count must be at least 1", reason=Reason.INVALID_CONFIG)
        if not config.nats_url:
            raise InvalidArgument(
                "joining a deployment needs its NATS: set SALON_NATS_URL", reason=Reason.INVALID_CONFIG
            )
        if config.shard_lease_s <= 0:
            raise InvalidArgument(
                "hosts join only a deployment with shard leases (SALON_SHARD_LEASE_S > 0)", reason=Reason.INVALID_CONFIG
            )
        self.config = config
        self.count = count
        # A name of its own among the lease holders: never one of the deployment's own hosts (or another
        # `salon hosts` process's), whose leases it would otherwise take for its own.
        self.group = f"x{uuid.uuid4().hex[:8]}"
        self._hosts: HostGroup | None = None
        self._started_ray = False

    async def start(self) -> None:
        """Start the hosts and wait until each holds about its share of the shards."""
        config = self.config
        tenants = TenantRegistry(config.tenants_file or None, default_limits(config))
        tenants.load()  # the tenants' own MCP servers run on every host
        nc = await connect(config.nats_url, name="salon-hosts")
        try:
            replicas = stream_replicas(nc, config.nats_replicas)
        finally:
            await close_connection(nc)
        specs = joining_host_specs(
            config, tenants.all_mcp_servers(), count=self.count, group=self.group, nats_replicas=replicas
        )
        self._started_ray = ensure_ray(config)
        self._hosts = HostGroup(specs, f"{config.namespace}-{self.group}", resources=config.ray_actor_resources())
        await self._hosts.start(balanced=False)
        await self._wait_for_shards()

    async def _wait_for_shards(self) -> None:
        """Wait (up to a few lease times) until each new host serves shards: the others give theirs up at
        their next lease round. More hosts than shards leave some idle; that is logged, not an error."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 4 * self.config.shard_lease_s
        while not all((await self.shards()).values()):
            if loop.time() >= deadline:
                log.warning("some joining hosts serve no shard yet (more hosts than shards?)")
                return
            await asyncio.sleep(0.2)

    async def shards(self) -> dict[int, list[int]]:
        """The shards each of these hosts serves now."""
        return await self._hosts.shards() if self._hosts is not None else {}

    async def close(self) -> None:
        """Give every shard back to the deployment's other hosts (running turns get ``shutdown_grace_s``), then
        stop. Idempotent."""
        hosts, self._hosts = self._hosts, None
        if hosts is not None:
            for index in list(hosts.indexes):
                try:
                    await hosts.remove_host(index, self.config.shutdown_grace_s)  # logs one that overran
                except Exception as exc:  # a host already gone: its leases expire on their own
                    log.warning("host %d did not leave cleanly: %s", index, type(exc).__name__)
            await hosts.close()
        if self._started_ray:
            self._started_ray = False
            shutdown_ray()

    async def __aenter__(self) -> ExtraHosts:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
