"""An MCP server written with the SDK's server API, run by the MCP tests as a subprocess: over stdio
(``python mcp_server.py stdio``) or streamable HTTP on a free port (``python mcp_server.py http``, which prints
``PORT <n>`` once it listens)."""

from __future__ import annotations

import asyncio
import os
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("salon-test")


@server.tool(description="Finds an order by its id")
def lookup_order(order_id: str) -> str:
    return f"order {order_id}: shipped"


@server.tool()
def add(a: int, b: int) -> int:
    """Adds two numbers (structured output)."""
    return a + b


@server.tool()
def fail(reason: str) -> str:
    """Always fails with ``reason`` (a failure the tool anticipated: the model reads the reason)."""
    raise ToolError(reason)


@server.tool()
async def hang() -> str:
    """Never answers."""
    await asyncio.Event().wait()
    return "unreachable"


@server.tool()
def big(size: int) -> str:
    """Returns ``size`` characters."""
    return "x" * size


@server.tool()
def pid() -> int:
    """The server's process id."""
    return os.getpid()


@server.tool()
def exit_now() -> str:
    """Ends the server's process in the middle of the call."""
    os._exit(3)


async def serve_http() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning")
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    if sys.argv[1:] == ["http"]:
        asyncio.run(serve_http())
    else:
        server.run("stdio")
