"""MCP tools through the official SDK against a real MCP server (``mcp_server.py``, written with the SDK's
server API) run as a subprocess, over stdio and over streamable HTTP on a free port: listing, calls, the tool's
own errors, timeouts, oversized output, a server that dies and comes back, one that cannot be reached. A call
never raises: every failure is a result the model sees."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import wait_for

from salon.actors.model import ToolCall, ToolResult
from salon.providers.mcp import McpServerConfig, McpTools

SERVER = str(Path(__file__).with_name("mcp_server.py"))
MAX_OUTPUT = 1000


def _config(name: str, **more: object) -> McpServerConfig:
    values: dict[str, object] = {
        "call_timeout_s": 20.0,
        "connect_timeout_s": 30.0,  # the server imports the SDK first: seconds on a busy machine
        "max_output_bytes": MAX_OUTPUT,
        "approval_tools": ("add",),
    }
    values.update(more)
    return McpServerConfig(name=name, **values)  # type: ignore[arg-type]


def stdio_config(**more: object) -> McpServerConfig:
    return _config("local", command=(sys.executable, SERVER, "stdio"), **more)


@pytest.fixture
async def http_url() -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, SERVER, "http", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line.startswith(b"PORT "), "the HTTP MCP server did not start"
        yield f"http://127.0.0.1:{int(line.split()[1])}/mcp"
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


@pytest.fixture(params=["stdio", "http"])
def config(request: pytest.FixtureRequest) -> McpServerConfig:
    if request.param == "stdio":
        return stdio_config()
    url: str = request.getfixturevalue("http_url")
    return _config("remote", url=url)


@pytest.fixture
async def tools(config: McpServerConfig) -> AsyncIterator[McpTools]:
    async with McpTools([config]) as owner:
        yield owner


def _call(name: str, **arguments: object) -> ToolCall:
    return ToolCall(call_id=f"c-{name}", name=name, arguments_json=json.dumps(arguments))


async def test_tools_are_listed_as_specs(tools: McpTools, config: McpServerConfig) -> None:
    listed = await tools.listed()
    specs = {spec.name: spec for spec in listed[config.name]}
    assert {"lookup_order", "add", "fail", "hang", "big"} <= set(specs)
    lookup = specs["lookup_order"]
    assert lookup.server == config.name and lookup.description == "Finds an order by its id"
    schema = json.loads(lookup.input_schema_json)
    assert schema["type"] == "object" and schema["required"] == ["order_id"]
    assert specs["add"].requires_approval and not lookup.requires_approval


async def test_a_call_returns_the_tools_output(tools: McpTools, config: McpServerConfig) -> None:
    result = await tools.call(_call("lookup_order", order_id="42"), config.name)
    assert result == ToolResult("c-lookup_order", "lookup_order", "order 42: shipped", is_error=False)
    added = await tools.call(_call("add", a=2, b=3), config.name)
    assert not added.is_error and "5" in added.content


async def test_the_tools_own_error_is_an_error_result(tools: McpTools, config: McpServerConfig) -> None:
    result = await tools.call(_call("fail", reason="the warehouse is closed"), config.name)
    assert result.is_error and "the warehouse is closed" in result.content


async def test_a_call_past_its_timeout_is_an_error_result(tools: McpTools, config: McpServerConfig) -> None:
    await tools.listed()  # connected: the timeout below is the call's alone
    result = await tools.call(_call("hang"), config.name, timeout_s=0.5)
    assert result.is_error and "did not answer within 0.5 s" in result.content
    # The session survives a timed-out call.
    assert not (await tools.call(_call("lookup_order", order_id="1"), config.name)).is_error


async def test_oversized_output_is_replaced_by_an_error(tools: McpTools, config: McpServerConfig) -> None:
    fits = await tools.call(_call("big", size=MAX_OUTPUT), config.name)
    assert not fits.is_error and len(fits.content) == MAX_OUTPUT
    result = await tools.call(_call("big", size=MAX_OUTPUT * 5), config.name)
    assert result.is_error and f"over the limit of {MAX_OUTPUT}" in result.content and "xxx" not in result.content


async def test_unknown_tools_servers_and_bad_arguments_are_error_results(
    tools: McpTools, config: McpServerConfig
) -> None:
    unknown_tool = await tools.call(_call("delete_everything"), config.name)
    assert unknown_tool.is_error and "no tool named 'delete_everything'" in unknown_tool.content
    unknown_server = await tools.call(_call("lookup_order", order_id="1"), "elsewhere")
    assert unknown_server.is_error and "not available" in unknown_server.content
    bad = await tools.call(ToolCall("c", "lookup_order", "{not json"), config.name)
    assert bad.is_error and "not valid JSON" in bad.content
    wrong_type = await tools.call(_call("add", a="two", b=3), config.name)
    assert wrong_type.is_error


async def test_a_stdio_server_that_dies_is_restarted() -> None:
    async with McpTools([stdio_config()]) as tools:
        first = await tools.call(_call("pid"), "local")
        assert not first.is_error
        died = await tools.call(_call("exit_now"), "local")
        assert died.is_error and "local" in died.content

        async def answers_again() -> bool:
            result = await tools.call(_call("pid"), "local")
            return not result.is_error and result.content != first.content

        await wait_for(answers_again, timeout_s=60, what="the restarted server")
        connection = tools.connection("local")
        assert connection is not None and connection.connects >= 2


async def test_closing_ends_the_stdio_server_process() -> None:
    tools = McpTools([stdio_config()])
    await tools.start()
    pid = int((await tools.call(_call("pid"), "local")).content)
    await tools.close()
    await tools.close()  # idempotent

    async def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie still answers signal 0 until it is reaped; the SDK waits for it, so this is brief.
        return False

    await wait_for(gone, timeout_s=30, what="the server process to end")
    result = await tools.call(_call("pid"), "local")
    assert result.is_error


async def test_an_unreachable_server_gives_an_error_result_not_an_exception() -> None:
    down = _config("down", url="http://127.0.0.1:9/mcp", connect_timeout_s=1.0, call_timeout_s=1.0)
    async with McpTools([down], lazy=True) as tools:
        assert await tools.listed() == {}
        result = await tools.call(_call("lookup_order", order_id="1"), "down")
        assert result.is_error and "cannot be reached" in result.content
        connection = tools.connection("down")
        assert connection is not None and connection.connects == 0 and connection.last_error


async def test_only_the_allowed_tools_are_offered_and_lazy_servers_wait_for_use() -> None:
    config = stdio_config(tools=("lookup_order",), requires_approval=True)
    async with McpTools([config], lazy=True) as tools:
        connection = tools.connection("local")
        assert connection is not None and not connection.connected
        listed = await tools.listed(["local", "not-configured"])
        assert [(s.name, s.requires_approval) for s in listed["local"]] == [("lookup_order", True)]
        refused = await tools.call(_call("big", size=1), "local")
        assert refused.is_error and "no tool named 'big'" in refused.content
