"""A host's MCP servers: the deployment's (connected when the host starts) and each tenant's own (connected on
the tenant's first use), as the :class:`~salon.actors.tool_servers.ToolServers` its sessions call.

A tenant's server of the same name as a deployment's takes its place for that tenant's sessions. Every call
runs with its server's timeout and output cap, and never raises: a failure is an error result the model sees.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from salon.actors.model import ToolCall, ToolResult, ToolSpec
from salon.providers.mcp.client import McpTools
from salon.providers.mcp.config import McpServerConfig


class McpHub:
    """MCP servers by tenant. Lifecycle: :meth:`start` (the deployment's servers start connecting), :meth:`close`
    (idempotent: every session and stdio server process ends)."""

    def __init__(
        self,
        deployment: Mapping[str, McpServerConfig],
        tenants: Mapping[str, Mapping[str, McpServerConfig]] | None = None,
    ) -> None:
        self._deployment = McpTools(deployment)
        self._tenant_configs = {tenant: dict(servers) for tenant, servers in (tenants or {}).items()}
        self._tenants: dict[str, McpTools] = {}
        self._closed = False

    def configured(self, tenant_id: str) -> tuple[str, ...]:
        """The servers the tenant's sessions may name: the deployment's and the tenant's own."""
        return tuple(dict.fromkeys((*self._deployment.servers, *self._tenant_configs.get(tenant_id, {}))))

    def all_sessions(self, tenant_id: str) -> tuple[str, ...]:
        """The servers offered to every session of the tenant."""
        own = self._tenant_configs.get(tenant_id, {})
        shared = [name for name in self._deployment.all_sessions() if name not in own]
        return (*shared, *(name for name, config in own.items() if config.all_sessions))

    async def listed(self, tenant_id: str, servers: Sequence[str]) -> Mapping[str, Sequence[ToolSpec]]:
        """The tools each named server lists (the tenant's own server where one has that name)."""
        own = self._tenant_configs.get(tenant_id, {})
        mine = [s for s in servers if s in own]
        shared = [s for s in servers if s not in own]
        found: dict[str, Sequence[ToolSpec]] = dict(await self._deployment.listed(shared)) if shared else {}
        if mine:
            found.update(await self._for(tenant_id).listed(mine))
        return found

    async def call(self, tenant_id: str, call: ToolCall, server: str) -> ToolResult:
        """Run ``call`` on ``server`` (the tenant's own one of that name, else the deployment's)."""
        if server in self._tenant_configs.get(tenant_id, {}):
            return await self._for(tenant_id).call(call, server)
        return await self._deployment.call(call, server)

    def _for(self, tenant_id: str) -> McpTools:
        tools = self._tenants.get(tenant_id)
        if tools is None or self._closed:
            if self._closed:
                return self._deployment  # closed: it answers every call with an error, lists nothing
            # Lazy: a tenant's servers are connected on its first use, not for every tenant at host start.
            tools = self._tenants[tenant_id] = McpTools(self._tenant_configs[tenant_id], lazy=True)
        return tools

    async def start(self) -> None:
        """Start connecting to the deployment's servers (returns at once)."""
        if not self._closed:
            await self._deployment.start()

    async def close(self) -> None:
        """Close every connection. Idempotent."""
        self._closed = True
        await self._deployment.close()
        for tools in self._tenants.values():
            await tools.close()
