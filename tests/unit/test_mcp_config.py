"""The MCP servers configuration: its shape, its checks, and never a secret in an error."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from salon.providers.mcp import McpServerConfig, load_servers_file, parse_servers
from salon.storage.errors import InvalidArgument

SECRET = "SECRETzq7x"

FILE = f"""
[servers.docs]
command = ["python", "-m", "docs_server"]
env = {{ DOCS_TOKEN = "{SECRET}" }}
cwd = "/srv/docs"
all_sessions = true

[servers.crm]
url = "https://crm.example/mcp"
headers = {{ authorization = "Bearer {SECRET}" }}
tools = ["find_customer", "refund"]
requires_approval = ["refund"]
call_timeout_s = 5
max_output_bytes = 2048
"""


def test_a_servers_file_is_read(tmp_path: Path) -> None:
    path = tmp_path / "mcp.toml"
    path.write_text(FILE)
    servers = load_servers_file(path)
    docs, crm = servers["docs"], servers["crm"]
    assert (docs.transport, docs.command, docs.cwd, docs.all_sessions) == (
        "stdio",
        ("python", "-m", "docs_server"),
        "/srv/docs",
        True,
    )
    assert dict(docs.env) == {"DOCS_TOKEN": SECRET}
    assert (crm.transport, crm.call_timeout_s, crm.max_output_bytes) == ("http", 5.0, 2048)
    assert crm.offers("refund") and not crm.offers("delete") and docs.offers("anything")
    assert crm.needs_approval("refund") and not crm.needs_approval("find_customer")
    assert SECRET not in repr(servers)  # headers and environments stay out of logs
    assert pickle.loads(pickle.dumps(crm)) == crm  # hosts receive it through Ray


def test_requires_approval_may_cover_the_whole_server() -> None:
    server = parse_servers({"s": {"url": "http://127.0.0.1:1/mcp", "requires_approval": True}})["s"]
    assert server.needs_approval("anything")


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ({"x y": {"url": "http://h/mcp"}}, "server name"),
        ({"s": {}}, "exactly one of command"),
        ({"s": {"url": "http://h/mcp", "command": ["x"]}}, "exactly one of command"),
        ({"s": {"url": f"ftp://{SECRET}/"}}, "http:// or https://"),
        ({"s": {"command": f"python {SECRET}"}}, "command must be a list"),
        ({"s": {"command": ["x"], "env": {"K": 1}}}, "env must be a table"),
        ({"s": {"url": "http://h/mcp", "headers": [SECRET]}}, "headers must be a table"),
        ({"s": {"url": "http://h/mcp", "call_timeout_s": 0}}, "call_timeout_s"),
        ({"s": {"url": "http://h/mcp", "call_timeout_s": True}}, "call_timeout_s"),
        ({"s": {"url": "http://h/mcp", "max_output_bytes": 10**9}}, "max_output_bytes"),
        ({"s": {"url": "http://h/mcp", "all_sessions": "yes"}}, "all_sessions"),
        ({"s": {"url": "http://h/mcp", "requires_approval": SECRET}}, "requires_approval"),
        ({"s": {"url": "http://h/mcp", "token": SECRET}}, "unknown keys: token"),
        ({"s": "not a table"}, "must be a table"),
    ],
)
def test_bad_servers_are_refused_without_echoing_values(table: dict[str, object], words: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_servers(table)
    assert info.value.reason == "INVALID_CONFIG"
    assert words in info.value.message and SECRET not in info.value.message


def test_a_bad_file_is_refused(tmp_path: Path) -> None:
    for text in ("[servers.a\n", "[other]\nx = 1\n"):
        path = tmp_path / "bad.toml"
        path.write_text(text)
        with pytest.raises(InvalidArgument):
            load_servers_file(path)
    with pytest.raises(InvalidArgument):
        load_servers_file(tmp_path / "missing.toml")
    (tmp_path / "empty.toml").write_text("")
    assert load_servers_file(tmp_path / "empty.toml") == {}


def test_defaults() -> None:
    server = McpServerConfig(name="s", url="http://127.0.0.1/mcp")
    assert server.call_timeout_s > 0 and server.max_output_bytes == 64 * 1024 and not server.all_sessions


async def test_a_hub_offers_the_deployments_and_the_tenants_servers_and_builds_nothing_when_none() -> None:
    from salon.actors.model import ToolCall
    from salon.actors.tool_servers import NoToolServers
    from salon.providers.mcp import McpHubSpec

    assert isinstance(McpHubSpec().build(), NoToolServers)
    docs = McpServerConfig("docs", command=("docs-server",), all_sessions=True)
    shared_crm = McpServerConfig("crm", url="https://crm.example/mcp")
    own_crm = McpServerConfig("crm", url="https://crm.acme.example/mcp", all_sessions=True)
    hub = McpHubSpec({"docs": docs, "crm": shared_crm}, {"acme": {"crm": own_crm}}).build()
    try:
        assert hub.configured("acme") == ("docs", "crm") and hub.configured("beta") == ("docs", "crm")
        assert hub.all_sessions("acme") == ("docs", "crm"), "the tenant's own crm, offered to all its sessions"
        assert hub.all_sessions("beta") == ("docs",)
        result = await hub.call("beta", ToolCall("c1", "anything"), "nowhere")
        assert result.is_error and "nowhere" in result.content
    finally:
        await hub.close()


def test_a_hosts_server_list_unpickles_without_the_mcp_sdk() -> None:
    # Every host unpickles a McpHubSpec at start: with no servers configured it must not import the SDK (about
    # half a CPU-second per host before it serves). A fresh interpreter: this one may have imported it already.
    import subprocess
    import sys

    from salon.providers.mcp import McpHubSpec

    probe = (
        "import pickle, sys\n"
        f"hub = pickle.loads({pickle.dumps(McpHubSpec())!r})\n"
        "hub.build()\n"
        "print(sorted(m for m in ('mcp', 'pydantic', 'starlette', 'httpx') if m in sys.modules))\n"
    )
    found = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]"
