"""The README's code runs as written: its walkthrough (`salon serve`, `salon ingest`, `salon chat`, `salon trace`)
and every Python example, against a real `salon serve` this test starts. The only change made to them is the
address: the engine listens on a free port instead of 50051."""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from serve_support import clean_env, read_target, stop

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_TARGET = "127.0.0.1:50051"

_FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# Commands of the README's shell blocks that set up the machine rather than use Salon: `make test` is this
# suite and `make demo` has its own test (test_cli.py); activating the venv is done here by PATH.
NOT_RUN = {"make", "source"}


@dataclass(frozen=True)
class Block:
    """A fenced code block of the README."""

    language: str
    code: str
    line: int


@dataclass(frozen=True)
class Command:
    """One shell command of the README: its environment assignments and its arguments."""

    env: dict[str, str]
    argv: list[str]
    line: int

    def with_target(self, target: str) -> list[str]:
        """The arguments with the README's address replaced by ``target``."""
        return [arg.replace(README_TARGET, target) for arg in self.argv]


def readme_blocks() -> list[Block]:
    text = README.read_text()
    return [Block(m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1) for m in _FENCE.finditer(text)]


def shell_commands(blocks: list[Block]) -> list[Command]:
    commands = []
    for block in blocks:
        if block.language != "sh":
            continue
        for offset, raw in enumerate(block.code.splitlines()):
            words = shlex.split(raw, comments=True)
            if not words:
                continue
            env = {}
            while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
                name, _, value = words.pop(0).partition("=")
                env[name] = value
            commands.append(Command(env, words, block.line + 1 + offset))
    return commands


def test_the_readme_has_only_blocks_this_test_knows() -> None:
    blocks = readme_blocks()
    assert {b.language for b in blocks} <= {"sh", "python", "toml", ""}, "teach this test the new language"
    programs = {c.argv[0] for c in shell_commands(blocks)}
    assert programs <= {"salon", "curl"} | NOT_RUN, f"teach this test to run {programs - {'salon', 'curl'}}"
    for block in blocks:
        if block.language == "toml":
            tomllib.loads(block.code)  # the tenants file example is valid TOML


def test_the_walkthrough_comes_first() -> None:
    salon = [c.argv[1] for c in shell_commands(readme_blocks()) if c.argv[0] == "salon"]
    assert salon[:4] == ["serve", "ingest", "chat", "trace"]


@dataclass
class Served:
    target: str
    cwd: Path


@pytest.fixture(scope="module")
async def readme_engine(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Served]:
    """The README's own `salon serve` line, run in a folder holding the README's `docs/` (so `./.salon`,
    the default data directory, is the test's), on a free port."""
    [serve_line] = [c for c in shell_commands(readme_blocks()) if c.argv[:2] == ["salon", "serve"]]
    cwd = tmp_path_factory.mktemp("readme")
    (cwd / "docs").symlink_to(ROOT / "docs", target_is_directory=True)
    env = {**clean_env(), **serve_line.env}
    proc = await asyncio.create_subprocess_exec(
        *serve_line.argv,
        "--port",
        "0",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        target = await read_target(proc, 120)
        assert proc.stderr is not None
        drain = asyncio.create_task(proc.stderr.read())  # keep the pipe from filling up
        yield Served(target, cwd)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        await drain
    finally:
        await stop(proc)


def _run(served: Served, command: Command, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command.with_target(served.target),
        input=stdin,
        capture_output=True,
        text=True,
        cwd=served.cwd,
        env={**clean_env(), **command.env},
        timeout=120,
        check=False,
    )


def _command(verb: str, index: int = 0) -> Command:
    return [c for c in shell_commands(readme_blocks()) if c.argv[:2] == ["salon", verb]][index]


async def test_the_walkthrough_runs(readme_engine: Served) -> None:
    ingested = await asyncio.to_thread(_run, readme_engine, _command("ingest"))
    assert ingested.returncode == 0, ingested.stderr
    assert "stored 4 document(s)" in ingested.stderr

    chatted = await asyncio.to_thread(_run, readme_engine, _command("chat"), "When are you open on Saturday?\n/quit\n")
    assert chatted.returncode == 0, chatted.stderr
    assert "offline responder" in chatted.stdout
    assert "sources: [1] " in chatted.stdout, "the turn cited the ingested documents"

    # The turn's spans reach the span files within the exporter's schedule.
    deadline = time.monotonic() + 30
    while True:
        traced = await asyncio.to_thread(_run, readme_engine, _command("trace"))
        if traced.returncode == 0 and "salon.session.turn" in traced.stdout:
            break
        assert time.monotonic() < deadline, traced.stdout + traced.stderr
        await asyncio.sleep(0.5)  # wait-ok: polls a condition with a deadline
    assert "salon.gateway.SendTurn" in traced.stdout


async def test_the_other_salon_commands_run(readme_engine: Served) -> None:
    walkthrough = 4  # serve, ingest, chat, trace: run above
    for command in [c for c in shell_commands(readme_blocks()) if c.argv[0] == "salon"][walkthrough:]:
        result = await asyncio.to_thread(_run, readme_engine, command)
        assert result.returncode == 0, f"README line {command.line}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("block", [b for b in readme_blocks() if b.language == "python"], ids=lambda b: f"line{b.line}")
async def test_python_example_runs(readme_engine: Served, block: Block, tmp_path: Path) -> None:
    assert README_TARGET in block.code, "an example names the address it talks to"
    script = tmp_path / "example.py"
    script.write_text(block.code.replace(README_TARGET, readme_engine.target))
    result = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"README line {block.line}: {result.stderr[-2000:]}"
    assert result.stdout.strip(), "the example prints what it got"
