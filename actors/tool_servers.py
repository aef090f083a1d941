"""The ``ToolServers`` seam: the MCP servers a host calls for its sessions' turns (the deployment's and each
tenant's), as session logic sees them. The implementation over the official MCP SDK is
``providers.mcp.McpHub``; :class:`NoToolServers` stands for a deployment that configures none."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from salon.actors.model import ToolCall, ToolResult, ToolSpec


class ToolServers(Protocol):
    """MCP servers by tenant. Owned by the host: started and closed with it."""

    def configured(self, tenant_id: str) -> tuple[str, ...]:
        """The servers ``tenant_id``'s sessions may name (the deployment's and the tenant's own)."""
        ...

    def all_sessions(self, tenant_id: str) -> tuple[str, ...]:
        """The servers offered to every session of ``tenant_id`` without being named."""
        ...

    async def listed(self, tenant_id: str, servers: Sequence[str]) -> Mapping[str, Sequence[ToolSpec]]:
        """The tools each of ``servers`` lists (``ToolSpec.server`` set); servers that are down are left out."""
        ...

    async def call(self, tenant_id: str, call: ToolCall, server: str) -> ToolResult:
        """Run ``call`` on ``server`` within the server's timeout and output cap; never raises (every failure is
        an error result the model sees), except when the caller is cancelled."""
        ...

    async def start(self) -> None:
        """Start connecting (idempotent)."""
        ...

    async def close(self) -> None:
        """Close every connection (idempotent)."""
        ...


class NoToolServers:
    """No MCP server at all."""

    def configured(self, tenant_id: str) -> tuple[str, ...]:
        """None."""
        return ()

    def all_sessions(self, tenant_id: str) -> tuple[str, ...]:
        """None."""
        return ()

    async def listed(self, tenant_id: str, servers: Sequence[str]) -> Mapping[str, Sequence[ToolSpec]]:
        """Nothing."""
        return {}

    async def call(self, tenant_id: str, call: ToolCall, server: str) -> ToolResult:
        """An error result: no server runs the call."""
        return ToolResult(call.call_id, call.name, f"The MCP server {server[:64]!r} is not available.", is_error=True)

    async def start(self) -> None:
        """Nothing to start."""

    async def close(self) -> None:
        """Nothing to close."""
