"""Tools served by MCP servers (the Model Context Protocol), through the official MCP Python SDK.

``McpServerConfig`` / ``parse_servers`` / ``load_servers_file`` describe the servers a deployment or a tenant
configures; ``McpTools`` keeps a session open per server, lists their tools as ``ToolSpec`` (``server`` set)
and calls them, turning every failure into a ``ToolResult`` error the model sees; ``McpHub`` is a host's
servers by tenant (built from a ``McpHubSpec``). Imported only by the
processes that call tools (the SDK takes a while to import).
"""

from salon.providers.mcp.client import McpConnection, McpTools
from salon.providers.mcp.config import McpHubSpec, McpServerConfig, load_servers_file, parse_server, parse_servers
from salon.providers.mcp.hub import McpHub

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
