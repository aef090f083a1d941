"""Benchmark of the model providers (issue 5): what the real SDK path costs per turn, against the scripted provider.

A local server that speaks the Anthropic Messages streaming protocol (and one speaking OpenAI's chat completions
stream) answers every request at once with ``--tokens`` tokens. It runs in a child process, so the CPU measured
here is the client side only. Two levels:

* ``provider``: the provider alone in this process, one turn after another: the scripted provider bare and
  behind a :class:`~salon.providers.resilience.ProviderChain`, the Anthropic provider (the real ``anthropic``
  SDK over HTTP) and the OpenAI-compatible one, both behind the chain. Per turn: time to first token (``stream``
  called → first delta), turn time, and this process's CPU time.
* ``engine``: a whole engine (embedded NATS, local Ray, one host, gRPC gateway) with the scripted provider, then
  with the Anthropic provider pointed at the local server, driven through ``salon.client``. Per turn: time to
  first token and turn time at the client, and CPU time of the host process (where the provider runs, read
  from ``/proc``) and of this process (client and gateway).

Usage: ``.venv/bin/python -m bench.bench_providers [--turns 200] [--tokens 16] [--level provider,engine]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path

from salon.actors.model import Message, ModelProvider, ModelRequest, TextDelta
from salon.client import SalonClient
from salon.engine.app import Engine
from salon.engine.config import Config
from salon.providers import OfflineProvider, ScriptedProvider
from salon.providers.anthropic import AnthropicProvider
from salon.providers.fake_servers import FakeAnthropicServer, FakeModelServer, FakeOpenAIServer, echo_reply
from salon.providers.openai_compatible import OpenAICompatibleProvider
from salon.providers.resilience import ProviderChain

log = logging.getLogger("bench.providers")

PROMPT = "the quick brown fox jumps over the lazy dog"
MODEL = "claude-bench"


@dataclass(frozen=True)
class Figures:
    """What one system measured over its turns."""

    system: str
    turns: int
    ttft_p50_ms: float
    ttft_p99_ms: float
    turn_p50_ms: float
    turn_p99_ms: float
    cpu_ms_per_turn: float
    """CPU of the process running the provider (this one at the provider level, the host at the engine level)."""
    client_cpu_ms_per_turn: float | None = None
    """Engine level: CPU of this process (client and gateway)."""


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] * 1000


# --- the server, in a child process ----------------------------------------------------------------------


async def _serve(kind: str, tokens: int) -> None:
    """Child process: serve until stdin closes, after printing the base URL."""
    server: FakeModelServer = (FakeAnthropicServer if kind == "anthropic" else FakeOpenAIServer)(echo_reply(tokens))
    url = await server.start()
    print(url, flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await server.close()


@contextlib.asynccontextmanager
async def server_process(kind: str, tokens: int) -> AsyncIterator[str]:
    """A fake model server in a child process; yields its base URL."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_providers",
        "--serve",
        kind,
        "--tokens",
        str(tokens),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        yield url
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


# --- provider level --------------------------------------------------------------------------------------


async def _provider_turns(name: str, provider: ModelProvider, turns: int, warmup: int, tokens: int) -> Figures:
    request = ModelRequest(system="You are a benchmark.", messages=(Message("user", PROMPT),), max_tokens=1024)
    ttft: list[float] = []
    totals: list[float] = []
    cpu = 0.0
    for i in range(warmup + turns):
        cpu_start, start = time.process_time(), time.perf_counter()
        first: float | None = None
        count = 0
        async for chunk in provider.stream(request):
            if isinstance(chunk, TextDelta):
                count += 1
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        if count != tokens or first is None:
            raise RuntimeError(f"{name}: {count} tokens instead of {tokens}")
        if i >= warmup:
            ttft.append(first - start)
            totals.append(end - start)
            cpu += time.process_time() - cpu_start
    return Figures(
        name,
        turns,
        _pct(ttft, 0.5),
        _pct(ttft, 0.99),
        _pct(totals, 0.5),
        _pct(totals, 0.99),
        cpu / turns * 1000,
    )


def _chain(provider: ModelProvider) -> ProviderChain:
    return ProviderChain({provider.name: provider, "offline": OfflineProvider()}, [provider.name, "offline"])


async def provider_level(turns: int, warmup: int, tokens: int) -> list[Figures]:
    """The providers alone, in this process."""
    results = [
        await _provider_turns("scripted (bare)", ScriptedProvider(tokens=tokens), turns, warmup, tokens),
        await _provider_turns("scripted (chain)", _chain(ScriptedProvider(tokens=tokens)), turns, warmup, tokens),
    ]
    async with server_process("anthropic", tokens) as url:
        chain = _chain(AnthropicProvider(model=MODEL, api_key="bench", base_url=url))
        try:
            results.append(await _provider_turns("anthropic SDK (chain)", chain, turns, warmup, tokens))
        finally:
            await chain.aclose()
    async with server_process("openai", tokens) as url:
        chain = _chain(OpenAICompatibleProvider(base_url=url + "/v1", model="bench"))
        try:
            results.append(await _provider_turns("openai_compatible (chain)", chain, turns, warmup, tokens))
        finally:
            await chain.aclose()
    return results


# --- engine level ----------------------------------------------------------------------------------------


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _engine_turns(name: str, config: Config, turns: int, warmup: int, tokens: int) -> Figures:
    engine = Engine(config)
    await engine.start()
    try:
        [host_pid] = [info["pid"] for info in engine.hosts.info]
        async with SalonClient(engine.target) as client:
            await client.wait_ready(10.0)
            session = await client.create_session(system_prompt="You are a benchmark.")
            ttft: list[float] = []
            totals: list[float] = []
            host_cpu = client_cpu = 0.0
            for i in range(warmup + turns):
                host_start, cpu_start, start = _cpu_s(host_pid), time.process_time(), time.perf_counter()
                first: float | None = None
                count = 0
                outcome = ""
                async for event in session.send(PROMPT):
                    kind = event.WhichOneof("kind")
                    if kind == "delta":
                        count += 1
                        if first is None:
                            first = time.perf_counter()
                    elif kind in ("completed", "error", "cancelled"):
                        outcome = kind
                end = time.perf_counter()
                if outcome != "completed" or count != tokens or first is None:
                    raise RuntimeError(f"{name}: turn ended {outcome} after {count} deltas")
                if i >= warmup:
                    ttft.append(first - start)
                    totals.append(end - start)
                    host_cpu += _cpu_s(host_pid) - host_start
                    client_cpu += time.process_time() - cpu_start
    finally:
        await engine.close()
    return Figures(
        name,
        turns,
        _pct(ttft, 0.5),
        _pct(ttft, 0.99),
        _pct(totals, 0.5),
        _pct(totals, 0.99),
        host_cpu / turns * 1000,
        client_cpu / turns * 1000,
    )


async def engine_level(turns: int, warmup: int, tokens: int, data_dir: Path) -> list[Figures]:
    """A whole engine with the scripted provider, then with the real SDK against the local server."""
    base = Config(
        data_dir=str(data_dir / "scripted"),
        grpc_port=0,
        num_hosts=1,
        num_shards=1,
        model_provider="scripted",
        scripted_tokens=tokens,
    )
    results = [await _engine_turns("engine + scripted", base, turns, warmup, tokens)]
    async with server_process("anthropic", tokens) as url:
        config = base.replace(
            data_dir=str(data_dir / "anthropic"),
            model_provider="offline",
            model_chain="anthropic,offline",
            anthropic_api_key="bench",
            anthropic_model=MODEL,
            anthropic_base_url=url,
        )
        results.append(await _engine_turns("engine + anthropic SDK", config, turns, warmup, tokens))
    return results


# --- main ------------------------------------------------------------------------------------------------


def _table(figures: list[Figures]) -> str:
    lines = [
        "| system | turns | TTFT p50 ms | TTFT p99 ms | turn p50 ms | turn p99 ms | CPU ms/turn | client CPU ms/turn |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in figures:
        client = "" if f.client_cpu_ms_per_turn is None else f"{f.client_cpu_ms_per_turn:.2f}"
        lines.append(
            f"| {f.system} | {f.turns} | {f.ttft_p50_ms:.2f} | {f.ttft_p99_ms:.2f} | {f.turn_p50_ms:.2f} | "
            f"{f.turn_p99_ms:.2f} | {f.cpu_ms_per_turn:.2f} | {client} |"
        )
    return "\n".join(lines)


async def main_async(args: argparse.Namespace) -> list[Figures]:
    levels = set(args.level.split(","))
    figures: list[Figures] = []
    started = time.perf_counter()
    if "provider" in levels:
        figures += await provider_level(args.turns, args.warmup, args.tokens)
    if "engine" in levels:
        with tempfile.TemporaryDirectory(prefix="bench-providers-") as tmp:
            figures += await engine_level(args.engine_turns, args.warmup, args.tokens, Path(tmp))
    print(_table(figures))
    print(f"\nwall time {time.perf_counter() - started:.1f} s; {platform.python_version()}, {os.cpu_count()} cores")
    return figures


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--serve``, be the server's child process)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--level", default="provider,engine", help="provider, engine or both (comma separated)")
    parser.add_argument("--turns", type=int, default=200, help="measured turns per system at the provider level")
    parser.add_argument("--engine-turns", type=int, default=100, help="measured turns per system at the engine level")
    parser.add_argument("--warmup", type=int, default=10, help="turns run first and not measured")
    parser.add_argument("--tokens", type=int, default=16, help="tokens per answer")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--serve", choices=["anthropic", "openai"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.serve, args.tokens))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    figures = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(f) for f in figures], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
