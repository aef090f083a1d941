"""Tools served by MCP servers (the Model Context Protocol), through the official MCP Python SDK.

``McpServerConfig`` / ``parse_servers`` / ``load_servers_file`` describe the servers a deployment or a tenant
configures; ``McpTools`` keeps a session open per server, lists their tools as ``ToolSpec`` (``server`` set)
and calls them, turning every failure into a ``ToolResult`` error the model sees. Imported only by the
processes that call tools (the SDK takes a while to import).
"""

from providers.mcp.client import McpConnection, McpTools
from providers.mcp.config import McpServerConfig, load_servers_file, parse_server, parse_servers

__all__ = ["McpConnection", "McpServerConfig", "McpTools", "load_servers_file", "parse_server", "parse_servers"]
