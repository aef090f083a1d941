"""The README's "Tools" section runs as written: every Python block of it, against an engine this test starts
the way the section's command does (scripted model, the section's MCP configuration), with only the address
replaced.

The MCP configuration block is the one of ``examples/mcp_servers.toml`` (checked), given to the engine with
its command made absolute: ``python`` becomes this interpreter (the one with the MCP SDK installed) and the
script's path is resolved against the repository, since the hosts need not run where the reader does."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import sys
import tomllib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from salon.engine import Config, Engine
from salon.engine.config import env_name

ROOT = Path(__file__).resolve().parents[2]
ADDRESS = "127.0.0.1:50051"
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def section() -> str:
    """The README's "## Tools" section."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Tools\n")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else len(readme)]


def blocks(language: str) -> list[str]:
    return [code for lang, code in BLOCK.findall(section()) if lang == language]


def test_the_configuration_block_is_the_example_file_and_its_settings_exist() -> None:
    (toml_block,) = blocks("toml")
    shown = tomllib.loads(toml_block)
    shipped = tomllib.loads((ROOT / "examples" / "mcp_servers.toml").read_text())
    assert shown == shipped
    for command in blocks("sh"):
        variables = set(re.findall(r"\bSALON_[A-Z_]+\b", command))
        known = {env_name(f) for f in dataclasses.fields(Config)}
        assert variables <= known, f"unknown settings in the section: {sorted(variables - known)}"


@pytest.fixture(scope="module")
async def engine(nats_url: str, ray_session: None, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Engine]:
    """The engine of the section's command: scripted model, the section's MCP servers."""
    (toml_block,) = blocks("toml")
    servers = tomllib.loads(toml_block)["servers"]
    for table in servers.values():
        command = list(table["command"])
        if command and command[0] == "python":
            command = [sys.executable, *(str(ROOT / part) if part.endswith(".py") else part for part in command[1:])]
        table["command"] = command
    data = tmp_path_factory.mktemp("docs-tools")
    config_file = data / "mcp_servers.toml"
    config_file.write_text(_toml(servers))
    engine = Engine(
        Config(
            data_dir=str(data / "engine"),
            grpc_port=0,
            nats_url=nats_url,
            namespace=f"docs{uuid.uuid4().hex[:8]}",
            num_hosts=1,
            num_shards=2,
            model_provider="scripted",
            mcp_servers_file=str(config_file),
            shutdown_grace_s=2.0,
        )
    )
    await engine.start()
    yield engine
    await engine.close()


def _toml(servers: dict[str, dict[str, object]]) -> str:
    lines = []
    for name, table in servers.items():
        lines.append(f"[servers.{name}]")
        for key, value in table.items():
            if isinstance(value, str):
                lines.append(f"{key} = {value!r}".replace("'", '"'))
            elif isinstance(value, list):
                lines.append(f"{key} = [{', '.join(_quoted(v) for v in value)}]")
            else:
                lines.append(f"{key} = {str(value).lower() if isinstance(value, bool) else value}")
    return "\n".join(lines) + "\n"


def _quoted(value: object) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


async def _run_block(code: str, target: str) -> tuple[int, str, str]:
    assert ADDRESS in code, "a block of the section does not use the documented address"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SALON_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code.replace(ADDRESS, target),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 180)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


EXPECTED = [
    # A client tool: the call shows, the function's result comes back and reaches the answer.
    ("[the model calls lookup_order with {'order_id': 'A-1001'}]", "[lookup_order answered:", "shipped"),
    # An MCP tool: the server's answer.
    ("[order_status on the orders server answered:", "DHL"),
    # An approval: the small refund ran, the cancel was rejected with the reason.
    ("refunded 20.00 EUR on A-1001", "needs a manager"),
]


async def test_every_python_block_runs_as_written(engine: Engine) -> None:
    codes = blocks("python")
    assert len(codes) == len(EXPECTED)
    for code, expected in zip(codes, EXPECTED, strict=True):
        status, out, err = await _run_block(code, engine.target)
        assert status == 0, f"block failed:\n{code}\n--- stdout\n{out}\n--- stderr\n{err}"
        for text in expected:
            assert text in out, f"{text!r} not in the output of:\n{code}\n--- stdout\n{out}"
