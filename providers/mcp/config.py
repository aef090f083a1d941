"""The MCP servers a deployment or a tenant configures: their shape, and parsing it from TOML.

Deployment-wide, a TOML file of ``[servers.<name>]`` tables (:func:`load_servers_file`); per tenant, the same
tables under ``[tenants.<id>.mcp_servers.<name>]`` in the tenants file (:func:`parse_servers` on that table)::

    [servers.docs]                       # a stdio server: the command the host starts
    command = ["python", "-m", "docs_server", "--read-only"]
    env = { DOCS_TOKEN = "..." }         # added to a minimal environment (PATH, HOME, ...)
    cwd = "/srv/docs"

    [servers.crm]                        # a streamable HTTP server
    url = "https://crm.example/mcp"
    headers = { authorization = "Bearer ..." }
    tools = ["find_customer", "refund"]  # offer only these (default: every tool it lists)
    requires_approval = ["refund"]       # or true: every call of this server waits for a person
    call_timeout_s = 30                  # per call; the model is told when it passes
    connect_timeout_s = 10
    max_output_bytes = 65536             # larger output is replaced by an error for the model
    all_sessions = false                 # true: offered to every session (else sessions name the server)

Errors are ``InvalidArgument`` with reason ``INVALID_CONFIG`` naming the server and the key, never a value
(headers and environments hold secrets).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from salon.actors.tool_servers import NoToolServers, ToolServers
from salon.actors.tools import DEFAULT_MAX_RESULT_BYTES, is_tool_name
from salon.storage.errors import InvalidArgument

if TYPE_CHECKING:
    from salon.providers.mcp.hub import McpHub

INVALID_CONFIG = "INVALID_CONFIG"
MAX_TIMEOUT_S = 3600.0
MAX_OUTPUT_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class McpServerConfig:
    """One MCP server: how to reach it (a command for stdio, or a URL for streamable HTTP) and how its tools
    are offered and called. Picklable, so the hosts receive it with the rest of the configuration."""

    name: str
    command: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    cwd: str = ""
    url: str = ""
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    tools: tuple[str, ...] = ()
    """Only these of its tools are offered; empty: all it lists."""
    requires_approval: bool = False
    """Every call of this server waits for a person's decision."""
    approval_tools: tuple[str, ...] = ()
    """Tools of this server whose calls wait for a person's decision."""
    call_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    max_output_bytes: int = DEFAULT_MAX_RESULT_BYTES
    all_sessions: bool = False
    """Offered to every session (of the deployment, or of the tenant); otherwise sessions name it."""
    ping_interval_s: float = 30.0
    """How often an idle connection is checked, so a server that went away is reconnected before a call."""

    @property
    def transport(self) -> str:
        """``stdio`` or ``http``."""
        return "stdio" if self.command else "http"

    def needs_approval(self, tool: str) -> bool:
        """Whether calls of ``tool`` wait for a person."""
        return self.requires_approval or tool in self.approval_tools

    def offers(self, tool: str) -> bool:
        """Whether ``tool`` (listed by the server) is offered to models."""
        return not self.tools or tool in self.tools


@dataclass(frozen=True)
class McpHubSpec:
    """The MCP servers a host is built with: the deployment's and each tenant's own (picklable: the hosts
    receive it with the rest of their spec)."""

    deployment: Mapping[str, McpServerConfig] = field(default_factory=dict)
    tenants: Mapping[str, Mapping[str, McpServerConfig]] = field(default_factory=dict)

    def build(self) -> ToolServers:
        """The host's :class:`~salon.providers.mcp.hub.McpHub` (not started), or no servers at all when none are
        configured (the MCP SDK is then never imported)."""
        if not self.deployment and not any(self.tenants.values()):
            return NoToolServers()
        from salon.providers.mcp.hub import McpHub

        hub: McpHub = McpHub(self.deployment, self.tenants)
        return hub


_KEYS = frozenset(
    {
        "command",
        "env",
        "cwd",
        "url",
        "headers",
        "tools",
        "requires_approval",
        "call_timeout_s",
        "connect_timeout_s",
        "max_output_bytes",
        "all_sessions",
        "ping_interval_s",
    }
)


def _problem(where: str, message: str) -> InvalidArgument:
    return InvalidArgument(f"{where}: {message}", reason=INVALID_CONFIG)


def parse_server(name: str, table: Mapping[str, Any], where: str = "mcp_servers") -> McpServerConfig:
    """One server from its TOML table."""
    label = f"{where}.{name}" if is_tool_name(name) else where
    if not is_tool_name(name):
        raise _problem(label, "a server name must be 1 to 64 characters of A-Z, a-z, 0-9, _ and -")
    if not isinstance(table, Mapping):
        raise _problem(label, "must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise _problem(label, f"unknown keys: {', '.join(k for k in unknown if is_tool_name(k)) or '(unnamed)'}")
    command, url = table.get("command", []), table.get("url", "")
    if bool(command) == bool(url):
        raise _problem(label, "set exactly one of command (a stdio server) or url (streamable HTTP)")
    approval = table.get("requires_approval", False)
    if not isinstance(approval, bool):
        approval_tools = _strings(approval, label, "requires_approval")
        approval = False
    else:
        approval_tools = ()
    return McpServerConfig(
        name=name,
        command=_strings(command, label, "command"),
        env=_pairs(table.get("env", {}), label, "env"),
        cwd=_string(table.get("cwd", ""), label, "cwd"),
        url=_url(url, label),
        headers=_pairs(table.get("headers", {}), label, "headers"),
        tools=_strings(table.get("tools", []), label, "tools"),
        requires_approval=approval,
        approval_tools=approval_tools,
        call_timeout_s=_seconds(table.get("call_timeout_s", 30.0), label, "call_timeout_s"),
        connect_timeout_s=_seconds(table.get("connect_timeout_s", 10.0), label, "connect_timeout_s"),
        max_output_bytes=_bytes(table.get("max_output_bytes", DEFAULT_MAX_RESULT_BYTES), label),
        all_sessions=_flag(table.get("all_sessions", False), label, "all_sessions"),
        ping_interval_s=_seconds(table.get("ping_interval_s", 30.0), label, "ping_interval_s"),
    )


def parse_servers(data: Mapping[str, Any], where: str = "mcp_servers") -> dict[str, McpServerConfig]:
    """Servers from a table of ``name = {...}`` tables (a file's ``servers``, a tenant's ``mcp_servers``)."""
    if not isinstance(data, Mapping):
        raise _problem(where, "must be a table of servers")
    return {name: parse_server(name, table, where) for name, table in data.items()}


def load_servers_file(path: str | Path) -> dict[str, McpServerConfig]:
    """The deployment's servers from a TOML file of ``[servers.<name>]`` tables."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidArgument(
            f"the MCP servers file cannot be read ({type(exc).__name__})", reason=INVALID_CONFIG
        ) from exc
    unknown = sorted(set(data) - {"servers"})
    if unknown:
        raise _problem("the MCP servers file", "only [servers.<name>] tables are allowed")
    return parse_servers(data.get("servers", {}), "servers")


def _string(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise _problem(where, f"{key} must be a string")
    return value


def _strings(value: Any, where: str, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise _problem(where, f"{key} must be a list of non-empty strings")
    return tuple(value)


def _pairs(value: Any, where: str, key: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise _problem(where, f"{key} must be a table of strings")
    return tuple(value.items())


def _url(value: Any, where: str) -> str:
    url = _string(value, where, "url")
    if url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise _problem(where, "url must be an http:// or https:// address")
    return url


def _seconds(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= MAX_TIMEOUT_S:
        raise _problem(where, f"{key} must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}")
    return float(value)


def _bytes(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_OUTPUT_BYTES:
        raise _problem(where, f"max_output_bytes must be a whole number from 1 to {MAX_OUTPUT_BYTES}")
    return value


def _flag(value: Any, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise _problem(where, f"{key} must be true or false")
    return value
