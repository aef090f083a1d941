"""The README's browser section runs as written against a real `salon serve --web`: its Python example (a backend
minting a session token) and its shell example (a token from `salon token`, a turn streamed with curl, resumed
after its third event, cancelled). The only change made to them is the addresses: the gateway and the bridge
listen on free ports instead of 50051 and 8080. (test_readme.py leaves this section to this test.)"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from serve_support import clean_env, read_target, serve, stop

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Salon in the browser"
GATEWAY, WEB = "127.0.0.1:50051", "http://127.0.0.1:8080"


def section_blocks(language: str) -> list[str]:
    text = README.read_text()
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(rf"^```{language}\n(.*?)^```$", text[start:end], re.MULTILINE | re.DOTALL)


def section_scripts() -> list[str]:
    return section_blocks("bash")


@dataclass
class Served:
    target: str
    web_url: str


async def _web_url(proc: asyncio.subprocess.Process, timeout_s: float) -> str:
    assert proc.stderr is not None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = (await asyncio.wait_for(proc.stderr.readline(), deadline - time.monotonic())).decode()
        if match := re.search(r"web bridge and chat page on (http://\S+)", line):
            return match.group(1)
        assert line, "salon serve ended before it said where the web bridge listens"
    raise AssertionError("salon serve never said where the web bridge listens")


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    proc = await serve(tmp_path_factory.mktemp("web-readme"), "--web", "0")
    drain: asyncio.Task[bytes] | None = None
    try:
        target = await read_target(proc, 120)
        web_url = await _web_url(proc, 30)
        assert proc.stderr is not None
        drain = asyncio.create_task(proc.stderr.read())  # keep the pipe from filling up
        yield Served(target, web_url)
    finally:
        await stop(proc)
        if drain is not None:
            await drain


def test_the_section_has_its_examples() -> None:
    [script] = section_scripts()
    assert GATEWAY in script and WEB in script
    [python] = section_blocks("python")
    assert GATEWAY in python


async def test_the_backend_example_mints_a_token(served: Served, tmp_path: Path) -> None:
    [python] = section_blocks("python")
    example = tmp_path / "backend.py"
    example.write_text(python.replace(GATEWAY, served.target))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(example)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    session_id, token, expires = result.stdout.split()
    assert token.startswith("sst1.") and expires.endswith("Z") and session_id


async def test_the_curl_example_runs_as_written(served: Served) -> None:
    [script] = section_scripts()
    script = script.replace(GATEWAY, served.target).replace(WEB, served.web_url)
    result = await asyncio.to_thread(
        subprocess.run,
        ["bash", "-euo", "pipefail", "-c", script],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    # The turn streamed whole, then again from its fourth event, then the cancel answered (the turn had ended).
    assert out.count("event: accepted") == 1
    assert out.count("event: completed") == 2
    assert re.search(r"^id: 1$", out, re.MULTILINE) and re.search(r"^id: 4$", out, re.MULTILINE)
    assert out.count("event: delta") >= 1
    assert out.rstrip().endswith("{}")
