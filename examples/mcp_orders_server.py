"""A small MCP server, written with the official MCP Python SDK's server API: the order desk of the README's
"Tools" section. Salon starts it as a subprocess over stdio when a session offers its tools (see
``examples/mcp_servers.toml``); any MCP client can use it as well.

    python examples/mcp_orders_server.py            # stdio (what Salon's configuration starts)
    python examples/mcp_orders_server.py --http 8765  # streamable HTTP on 127.0.0.1:8765/mcp
"""

from __future__ import annotations

import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("orders")

ORDERS = {
    "A-1001": {"status": "shipped", "carrier": "DHL", "eta": "2 days"},
    "A-1002": {"status": "packing", "carrier": "", "eta": "5 days"},
}


@server.tool()
def order_status(order_id: str) -> dict[str, str]:
    """Where an order is: its status, carrier and expected delivery.

    Args:
        order_id: The order's id, like A-1001.
    """
    order = ORDERS.get(order_id.strip().upper())
    if order is None:
        # A failure the model should read: it becomes a tool error in the turn, not a failed turn.
        raise ToolError(f"There is no order {order_id}.")
    return {"order_id": order_id, **order}


@server.tool()
def cancel_order(order_id: str, reason: str) -> str:
    """Cancel an order that has not shipped yet (a person approves each call: see mcp_servers.toml)."""
    order = ORDERS.get(order_id.strip().upper())
    if order is None:
        raise ToolError(f"There is no order {order_id}.")
    if order["status"] == "shipped":
        raise ToolError(f"Order {order_id} has shipped; it can be returned, not cancelled.")
    order["status"] = "cancelled"
    return f"Order {order_id} is cancelled ({reason})."


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
