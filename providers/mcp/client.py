"""Calling tools on MCP servers through the official MCP Python SDK (``mcp``), with a connection kept open per
server.

:class:`McpTools` owns one :class:`McpConnection` per configured server. Each connection is a supervisor task
that opens the SDK's ``Client`` (a subprocess over stdio, or streamable HTTP), lists the server's tools, then
holds the session open — checking it when idle by listing its tools again (which also takes up a changed
listing; servers following the 2026-07-28 revision refuse ``ping``) — and opens it again, with backoff, when it
fails.
The SDK's anyio task groups must be entered and left by one task, which is why a supervisor task holds each
session while calls from any task go through it.

A call never raises (except when its own task is cancelled): a server that is down, a timeout, an error the
server reports, or output over the size cap becomes a ``ToolResult`` with ``is_error`` and a message the model
can act on. Output is untrusted text: the session's guardrails check it like a retrieved passage.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import anyio
import httpx2
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from salon.actors.model import ToolCall, ToolResult, ToolSpec
from salon.actors.tools import bounded_result, check_tool
from salon.providers.mcp.config import McpServerConfig
from salon.storage.errors import InvalidArgument

log = logging.getLogger(__name__)

_MAX_PAGES = 20
"""Pages of a tools listing read before giving up on a server that never ends it."""
_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 30.0
_GRACE_S = 1.0
"""Extra time past a call's timeout before the call is abandoned, when the SDK's own timeout did not fire."""
_ERROR_CHARS = 500


class McpConnection:
    """One server's session: connected in the background, reconnected when it fails. Owned by
    :class:`McpTools`, which starts and closes it."""

    def __init__(self, config: McpServerConfig) -> None:
        self.config = config
        self._client: Client | None = None
        self._tools: tuple[ToolSpec, ...] = ()
        self._ready = asyncio.Event()
        self._broken = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connects = 0
        """Sessions opened so far (1 after the first connection; more after reconnections)."""
        self.last_error = ""
        """Type name of the last failure to connect or of a lost session (never its message)."""

    @property
    def name(self) -> str:
        """The server's configured name."""
        return self.config.name

    @property
    def connected(self) -> bool:
        """Whether a session is open now."""
        return self._ready.is_set()

    def start(self) -> None:
        """Start connecting (idempotent)."""
        if self._task is None:
            self._task = asyncio.create_task(self._supervise(), name=f"mcp-{self.name}")

    async def close(self) -> None:
        """Close the session and stop reconnecting (idempotent); a stdio server's process ends."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._ready.clear()

    async def tools(self, wait_s: float | None = None) -> tuple[ToolSpec, ...]:
        """The tools the server lists and the config offers (empty while it cannot be reached), waiting up to
        ``wait_s`` (default: the connect timeout) for a session."""
        self.start()
        if await self._wait_ready(self.config.connect_timeout_s if wait_s is None else wait_s) is None:
            return ()
        return self._tools

    async def call(self, call: ToolCall, timeout_s: float | None = None) -> ToolResult:
        """Run ``call`` on the server within ``timeout_s`` (default: the server's call timeout), connecting
        first if need be; every failure becomes an error result."""
        timeout = self.config.call_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self.start()
        try:
            arguments = json.loads(call.arguments_json or "{}")
        except ValueError:
            return _error(call, "The arguments are not valid JSON; the call did not run.")
        try:
            async with asyncio.timeout(timeout + _GRACE_S):
                client = await self._wait_ready(timeout)
                if client is None:
                    return _error(call, f"The MCP server {self.name} cannot be reached now; the call did not run.")
                if not any(spec.name == call.name for spec in self._tools):
                    return _error(call, f"The MCP server {self.name} offers no tool named {call.name[:64]!r}.")
                remaining = max(deadline - loop.time(), 0.001)
                result = await client.call_tool(call.name, arguments, read_timeout_seconds=remaining)
        except TimeoutError:
            return self._timed_out(call, timeout)
        except MCPError as exc:
            return self._refused(call, exc, timeout)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
            self._lost(exc)
            return _error(call, f"The connection to the MCP server {self.name} was lost; the call may not have run.")
        except Exception as exc:
            log.warning("MCP server %s: a call of %s failed (%s)", self.name, call.name, type(exc).__name__)
            return _error(call, f"The call to the MCP server {self.name} failed ({type(exc).__name__}).")
        return bounded_result(_as_result(call, result), self.config.max_output_bytes)

    def _timed_out(self, call: ToolCall, timeout: float) -> ToolResult:
        log.warning("MCP server %s: %s timed out after %g s", self.name, call.name, timeout)
        return _error(call, f"The tool {call.name} on the MCP server {self.name} did not answer within {timeout:g} s.")

    def _refused(self, call: ToolCall, exc: MCPError, timeout: float) -> ToolResult:
        if exc.code == mcp_types.REQUEST_TIMEOUT:
            return self._timed_out(call, timeout)
        if exc.code == mcp_types.CONNECTION_CLOSED:
            self._lost(exc)
            return _error(call, f"The connection to the MCP server {self.name} was lost; the call may not have run.")
        return _error(call, f"The MCP server {self.name} refused the call: {exc.message[:_ERROR_CHARS]}")

    def _lost(self, exc: BaseException) -> None:
        log.warning("MCP server %s: the session was lost (%s); reconnecting", self.name, type(exc).__name__)
        self.last_error = type(exc).__name__
        self._ready.clear()
        self._broken.set()

    async def _wait_ready(self, wait_s: float) -> Client | None:
        if not self._ready.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), wait_s)
        return self._client if self._ready.is_set() else None

    async def _supervise(self) -> None:
        delay = _BACKOFF_START_S
        while True:
            try:
                await self._session()
                delay = _BACKOFF_START_S  # it was up: a new failure starts the backoff again
            except Exception as exc:
                self.last_error = type(exc).__name__
                log.warning("MCP server %s: cannot connect (%s); retrying in %g s", self.name, self.last_error, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)

    async def _session(self) -> None:
        """One session, from connecting to its loss."""
        async with contextlib.AsyncExitStack() as stack:
            async with asyncio.timeout(self.config.connect_timeout_s):
                client = await stack.enter_async_context(Client(await self._transport(stack), cache=None))
                tools = await self._list(client)
            self._client, self._tools = client, tools
            self._broken.clear()
            self._ready.set()
            self.connects += 1
            log.info("MCP server %s: connected, %d tools", self.name, len(tools))
            try:
                await self._watch(client)
            finally:
                self._ready.clear()
                self._client = None

    async def _transport(self, stack: contextlib.AsyncExitStack) -> Any:
        config = self.config
        if config.command:
            params = StdioServerParameters(
                command=config.command[0], args=list(config.command[1:]), env=dict(config.env), cwd=config.cwd or None
            )
            return stdio_client(params)
        http = httpx2.AsyncClient(
            headers=dict(config.headers),
            timeout=httpx2.Timeout(config.call_timeout_s + _GRACE_S, connect=config.connect_timeout_s, read=300.0),
        )
        await stack.enter_async_context(http)
        return streamable_http_client(config.url, http_client=http)

    async def _list(self, client: Client) -> tuple[ToolSpec, ...]:
        specs: list[ToolSpec] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor)
            specs += (spec for tool in page.tools if (spec := self._spec(tool)) is not None)
            cursor = page.next_cursor
            if cursor is None:
                break
        return tuple(specs)

    def _spec(self, tool: mcp_types.Tool) -> ToolSpec | None:
        if not self.config.offers(tool.name):
            return None
        spec = ToolSpec(
            name=tool.name,
            description=tool.description or "",
            input_schema_json=json.dumps(tool.input_schema),
            requires_approval=self.config.needs_approval(tool.name),
            server=self.name,
        )
        try:
            check_tool(spec)
        except InvalidArgument as exc:
            log.warning("MCP server %s: a listed tool is not offered: %s", self.name, exc.message)
            return None
        return spec

    async def _watch(self, client: Client) -> None:
        """Return when the session is lost: a call saw it go, or an idle check failed."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._broken.wait(), self.config.ping_interval_s)
                return
            async with asyncio.timeout(self.config.connect_timeout_s):
                self._tools = await self._list(client)


class McpTools:
    """The MCP servers a host calls (the deployment's, or one tenant's): their tools, and calls to them.

    Lifecycle: :meth:`start` (with ``lazy``, a server is connected on its first use instead), :meth:`close`
    (idempotent, also ``async with``), which ends every session and stdio server process."""

    def __init__(
        self, servers: Iterable[McpServerConfig] | Mapping[str, McpServerConfig], *, lazy: bool = False
    ) -> None:
        configs = servers.values() if isinstance(servers, Mapping) else servers
        self._connections = {config.name: McpConnection(config) for config in configs}
        self._lazy = lazy
        self._closed = False

    @property
    def servers(self) -> tuple[str, ...]:
        """The configured servers' names."""
        return tuple(self._connections)

    def connection(self, server: str) -> McpConnection | None:
        """The connection to ``server`` (None if it is not configured here)."""
        return self._connections.get(server)

    def all_sessions(self) -> tuple[str, ...]:
        """Servers offered to every session (``all_sessions`` in their config)."""
        return tuple(name for name, c in self._connections.items() if c.config.all_sessions)

    async def start(self) -> None:
        """Start connecting to every server (unless lazy); returns at once, connections finish in the
        background."""
        if self._closed:
            raise RuntimeError("McpTools is closed")
        if not self._lazy:
            for connection in self._connections.values():
                connection.start()

    async def close(self) -> None:
        """Close every session (idempotent)."""
        self._closed = True
        await asyncio.gather(*(c.close() for c in self._connections.values()))

    async def __aenter__(self) -> McpTools:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def listed(self, servers: Sequence[str] | None = None) -> dict[str, tuple[ToolSpec, ...]]:
        """The tools each of ``servers`` (default: all) lists, waiting for them together up to their connect
        timeouts; servers that are down or not configured are left out. The input of
        :func:`salon.actors.tools.offered_tools`."""
        if self._closed:
            return {}
        names = [n for n in (self.servers if servers is None else servers) if n in self._connections]
        found = await asyncio.gather(*(self._connections[n].tools() for n in names))
        return {name: tools for name, tools in zip(names, found, strict=True) if tools}

    async def call(self, call: ToolCall, server: str, timeout_s: float | None = None) -> ToolResult:
        """Run ``call`` on ``server``; never raises (an unknown server is an error result too)."""
        connection = self._connections.get(server)
        if connection is None or self._closed:
            return _error(call, f"The MCP server {server[:64]!r} is not available; the call did not run.")
        return await connection.call(call, timeout_s)


def _error(call: ToolCall, message: str) -> ToolResult:
    return ToolResult(call_id=call.call_id, name=call.name, content=message, is_error=True)


def _as_result(call: ToolCall, result: mcp_types.CallToolResult) -> ToolResult:
    """An MCP result as text for the model: text content as it is, other content named, structured content as
    JSON when there is nothing else."""
    parts = [_content_text(block) for block in result.content]
    if not any(parts) and result.structured_content is not None:
        parts = [json.dumps(result.structured_content)]
    return ToolResult(call.call_id, call.name, "\n".join(p for p in parts if p), is_error=bool(result.is_error))


def _content_text(block: Any) -> str:
    if isinstance(block, mcp_types.TextContent):
        return block.text
    if isinstance(block, mcp_types.EmbeddedResource):
        resource = block.resource
        if isinstance(resource, mcp_types.TextResourceContents):
            return resource.text
        return f"[binary resource {resource.uri} ({resource.mime_type or 'unknown type'}), not shown]"
    if isinstance(block, mcp_types.ResourceLink):
        return f"[resource {block.uri}]"
    kind = getattr(block, "type", "content")
    mime = getattr(block, "mime_type", "") or "unknown type"
    return f"[{kind} content ({mime}), not shown]"
