"""Tools served by MCP servers (the Model Context Protocol), through the official MCP Python SDK.

``McpServerConfig`` / ``parse_servers`` / ``load_servers_file`` describe the servers a deployment or a tenant
configures; ``McpTools`` keeps a session open per server, lists their tools as ``ToolSpec`` (``server`` set)
and calls them, turning every failure into a ``ToolResult`` error the model sees; ``McpHub`` is a host's
servers by tenant (built from a ``McpHubSpec``).

Exports are loaded on first use: the SDK takes about half a CPU-second to import (pydantic, starlette, httpx),
and every host unpickles a ``McpHubSpec`` at start, so the configuration half imports it only when a host has
servers to call.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from salon.providers.mcp.client import McpConnection, McpTools
    from salon.providers.mcp.config import McpHubSpec, McpServerConfig, load_servers_file, parse_server, parse_servers
    from salon.providers.mcp.hub import McpHub

_EXPORTS = {
    "McpConnection": "salon.providers.mcp.client",
    "McpHub": "salon.providers.mcp.hub",
    "McpHubSpec": "salon.providers.mcp.config",
    "McpServerConfig": "salon.providers.mcp.config",
    "McpTools": "salon.providers.mcp.client",
    "load_servers_file": "salon.providers.mcp.config",
    "parse_server": "salon.providers.mcp.config",
    "parse_servers": "salon.providers.mcp.config",
}

__all__ = [
    "McpConnection",
    "McpHub",
    "McpHubSpec",
    "McpServerConfig",
    "McpTools",
    "load_servers_file",
    "parse_server",
    "parse_servers",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'salon.providers.mcp' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
