"""Benchmark of the turn path (issue 2): Salon against two bare baselines, measured in the same run.

Three systems answer the same kind of request with a stream of ``--tokens`` small messages:

* ``echo``: a bare ``grpc.aio`` server-streaming RPC (generic handler, raw bytes) that yields the tokens.
* ``relay``: a bare gRPC → NATS → worker → NATS → gRPC relay. The gRPC handler subscribes to a unique reply
  subject, publishes the request on core NATS to a worker task (its own NATS connection), the worker publishes
  the tokens to the reply subject and the handler relays them. Embedded nats-server, no JetStream, no engine
  logic.
* ``engine``: a whole Salon engine (embedded NATS with JetStream, local Ray, session hosts, gRPC gateway)
  with the scripted provider (``--tokens`` tokens, no delays), driven through ``salon.client``.

For every system and concurrency level C, C client loops (one session each for the engine) run a warm-up
that is not measured, then ``N`` sequential turns each. Per turn: time to first token (request sent → first
token received) and turn latency (request sent → stream end). Per level: p50/p99 of both, turns/s and
tokens/s over the measured window, and errors. For the engine, the time to first token is also split by the
events' own emission timestamps: request → ``accepted`` emitted by the host, → first delta emitted, → first
delta received.

All loops of a system share one gRPC channel (``--channel-per-session`` gives each its own), as an
application backend in front of a gateway would. The client, the gRPC servers, the relay worker and the
engine's gateway share this process's event loop; the engine's hosts (Ray actors) and nats-server run in
their own processes.

The exit status is 1 when any engine turn failed (the issue's aim is no errors at 64 sessions), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import math
import os
import platform
import queue
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from bench.common import (
    cpu_between,
    int_list,
    load_average,
    non_negative_int,
    percentile,
    positive_int,
    run_header,
    sample_tree,
)
from salon.client import SalonClient, SalonError
from salon.engine.nats_server import EmbeddedNats
from salon.providers import scripted_reply
from salon.storage.jetstream.client import connect
from salon.v1 import session_pb2

if TYPE_CHECKING:
    from salon.engine.app import Engine

log = logging.getLogger("bench.turns")

SYSTEMS = ("echo", "relay", "engine", "engine-nomem")
DEFAULT_SYSTEMS = ("echo", "relay", "engine")
ECHO_METHOD = "/bench.Echo/Stream"
WORK_SUBJECT = "bench.work"
REPLY_PREFIX = "bench.reply"
SERVING_LINE = "bench relay serving on "
END_OF_STREAM = b""
"""The relay worker's last message on a reply subject: marks the end of the answer (tokens are never empty)."""
PROMPT = "the quick brown fox jumps over the lazy dog"
"""The user text of every turn; the scripted provider answers with its words, cycled."""


class TurnFailed(Exception):
    """A turn ended without the expected answer (error event, wrong text, early end)."""


@dataclass(frozen=True, slots=True)
class TurnTiming:
    """What one turn measured."""

    ttft_s: float
    latency_s: float
    tokens: int
    phases: dict[str, float] | None = None
    """Engine only: where the time to first token went, from the events' own timestamps (seconds)."""
    deltas: int = 0
    """Engine only: events that carried the answer (a fast answer's tokens may travel several to an event)."""


TurnFn = Callable[[str], Awaitable[TurnTiming]]
"""Runs one turn of one client loop and times it; raises on failure."""


class System:
    """A running system under test: hands out client loops, each a :data:`TurnFn`."""

    name: str = ""
    pids: tuple[int, ...] = ()
    """Child processes this system started (checked for leaks after teardown)."""
    server_root: int | None = None
    """The process whose tree is the whole server (its CPU per turn is read from /proc); None: the server shares
    this process with the client, so its CPU cannot be told apart."""

    def __init__(self) -> None:
        self._level_closers: list[Callable[[], Awaitable[None]]] = []

    async def new_loop(self) -> TurnFn:
        """A fresh client loop (for the engine: a new session)."""
        raise NotImplementedError

    async def end_level(self) -> None:
        """Close what the loops of the level just run opened for themselves (per-session channels)."""
        closers, self._level_closers = self._level_closers, []
        for close in closers:
            await close()

    async def describe(self) -> dict[str, Any]:
        """Figures the system reports about itself after a run (empty by default)."""
        return {}


def _identity(data: bytes) -> bytes:
    return data


async def _time_stream(messages: AsyncIterator[bytes], expected: int) -> TurnTiming:
    """Time a stream of raw token messages that should carry ``expected`` tokens."""
    start = time.perf_counter()
    first: float | None = None
    count = 0
    async for _ in messages:
        if first is None:
            first = time.perf_counter()
        count += 1
    end = time.perf_counter()
    if first is None or count != expected:
        raise TurnFailed(f"expected {expected} tokens, got {count}")
    return TurnTiming(first - start, end - start, count)


def _stream_method(channel: grpc.aio.Channel) -> Any:
    return channel.unary_stream(ECHO_METHOD, request_serializer=_identity, response_deserializer=_identity)


class _StreamingChannel(System):
    """Client side of both baselines: one raw-bytes server-streaming method, on a shared channel or on one
    channel per client loop."""

    def __init__(self, name: str, target: str, tokens: int, channel_per_session: bool) -> None:
        super().__init__()
        self.name = name
        self.target = target
        self.tokens = tokens
        self.channel_per_session = channel_per_session
        self.channel = grpc.aio.insecure_channel(target)
        self._call = _stream_method(self.channel)

    async def new_loop(self) -> TurnFn:
        """A loop sending raw requests on the shared channel (or a channel of its own)."""
        call = self._call
        if self.channel_per_session:
            channel = grpc.aio.insecure_channel(self.target)
            self._level_closers.append(channel.close)
            await asyncio.wait_for(channel.channel_ready(), 10)
            call = _stream_method(channel)

        async def turn(text: str) -> TurnTiming:
            return await _time_stream(aiter(call(text.encode())), self.tokens)

        return turn


def _bytes_server(handler: Callable[[bytes, Any], AsyncIterator[bytes]]) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server on 127.0.0.1 (free port) serving ``handler`` as ``/bench.Echo/Stream``."""
    server = grpc.aio.server()
    method = grpc.unary_stream_rpc_method_handler(
        handler, request_deserializer=_identity, response_serializer=_identity
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Echo", {"Stream": method}),))
    port = server.add_insecure_port("127.0.0.1:0")
    return server, port


@contextlib.asynccontextmanager
async def echo_system(tokens: int, channel_per_session: bool) -> AsyncIterator[System]:
    """Baseline A: a bare grpc.aio streaming echo that yields ``tokens`` small messages per request."""
    token = b"quick "

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for _ in range(tokens):
            yield token

    server, port = _bytes_server(stream)
    await server.start()
    system = _StreamingChannel("echo", f"127.0.0.1:{port}", tokens, channel_per_session)
    try:
        await asyncio.wait_for(system.channel.channel_ready(), 10)
        yield system
    finally:
        await system.end_level()
        await system.channel.close()
        await server.stop(grace=None)


@contextlib.asynccontextmanager
async def relay_server(tokens: int, data_dir: Path, turn_timeout_s: float) -> AsyncIterator[int]:
    """The relay's server side (nats-server, the gRPC handler, the worker) in this process; yields its port."""
    nats_server = EmbeddedNats(data_dir / "relay-nats")
    url = await nats_server.start()
    stack = contextlib.AsyncExitStack()
    try:
        gateway_nc = await connect(url, name="bench-relay-gateway")
        stack.push_async_callback(gateway_nc.close)
        worker_nc = await connect(url, name="bench-relay-worker")
        stack.push_async_callback(worker_nc.close)
        token = b"quick "

        work = await worker_nc.subscribe(WORK_SUBJECT)

        async def worker() -> None:
            async for msg in work.messages:
                for _ in range(tokens):
                    await worker_nc.publish(msg.reply, token)
                await worker_nc.publish(msg.reply, END_OF_STREAM)

        worker_task = asyncio.create_task(worker(), name="bench-relay-worker")

        async def stop_worker() -> None:
            worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker_task

        stack.push_async_callback(stop_worker)
        await worker_nc.flush()  # the worker's subscription is on the server before any request

        async def relay(request: bytes, context: Any) -> AsyncIterator[bytes]:
            inbox = f"{REPLY_PREFIX}.{uuid.uuid4().hex}"
            sub = await gateway_nc.subscribe(inbox)
            try:
                # Same connection: the server sees the SUB before the request, so no token is missed.
                await gateway_nc.publish(WORK_SUBJECT, request, reply=inbox)
                while True:
                    msg = await sub.next_msg(timeout=turn_timeout_s)
                    if msg.data == END_OF_STREAM:
                        return
                    yield msg.data
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

        server, port = _bytes_server(relay)
        await server.start()
        stack.push_async_callback(server.stop, None)
        yield port
    finally:
        await stack.aclose()
        await nats_server.close()


async def serve_relay(tokens: int, data_dir: Path, turn_timeout_s: float) -> None:
    """``--serve-relay``: run the relay's server side until standard input closes; print its port first."""
    async with relay_server(tokens, data_dir, turn_timeout_s) as port:
        print(f"{SERVING_LINE}127.0.0.1:{port}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


class ServerProcess:
    """A server run as a child process of this benchmark: started, its address read from a line it prints on
    stdout or stderr, its output drained meanwhile; stopped with SIGTERM (then killed)."""

    def __init__(self, argv: Sequence[str], pattern: str, *, env: dict[str, str] | None = None) -> None:
        self._argv = list(argv)
        self._pattern = re.compile(pattern)
        self._env = env
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._readers: list[threading.Thread] = []
        self.tail: list[str] = []

    def start(self, timeout_s: float = 300.0) -> str:
        """Start the server; the address it printed."""
        self.proc = subprocess.Popen(
            self._argv,
            env=self._env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stream in (self.proc.stdout, self.proc.stderr):
            reader = threading.Thread(target=self._drain, args=(stream,), daemon=True)
            reader.start()
            self._readers.append(reader)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=1.0)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if line is None:
                continue
            found = self._pattern.search(line)
            if found:
                return found.group(1)
        raise RuntimeError(f"{self._argv[:4]} did not start: {''.join(self.tail[-20:])}")

    def _drain(self, stream: Any) -> None:
        for line in stream:
            self._lines.put(line)
            self.tail = [*self.tail[-50:], line]
        self._lines.put(None)

    def stop(self, timeout_s: float = 120.0) -> None:
        """SIGTERM, wait, and kill if it does not exit in time. Idempotent."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for reader in self._readers:
            reader.join(timeout=5)


@contextlib.asynccontextmanager
async def relay_system(
    tokens: int, data_dir: Path, turn_timeout_s: float, channel_per_session: bool
) -> AsyncIterator[System]:
    """Baseline B: gRPC → core NATS → worker task → core NATS → gRPC, on an embedded nats-server, served by a
    child process (so its CPU is measured as the engine's is)."""
    server = ServerProcess(
        [
            sys.executable,
            "-m",
            "bench.bench_turns",
            "--serve-relay",
            str(data_dir),
            "--tokens",
            str(tokens),
            "--turn-timeout",
            str(turn_timeout_s),
        ],
        rf"{SERVING_LINE}(\S+)",
    )
    target = await asyncio.to_thread(server.start)
    system = _StreamingChannel("relay", target, tokens, channel_per_session)
    assert server.proc is not None
    system.server_root = server.proc.pid
    try:
        await asyncio.wait_for(system.channel.channel_ready(), 10)
        system.pids = tuple(sorted({server.proc.pid, *descendants(server.proc.pid)}))
        yield system
    finally:
        await system.end_level()
        await system.channel.close()
        await asyncio.to_thread(server.stop)


class _EngineSystem(System):
    """The engine under test, driven through one shared :class:`SalonClient`."""

    def __init__(
        self,
        engine: Engine | None,
        target: str,
        client: SalonClient,
        tokens: int,
        channel_per_session: bool,
        *,
        name: str = "engine",
        window_messages: int = 0,
    ) -> None:
        super().__init__()
        self.name = name
        self.engine = engine
        """The engine when it runs in this process (None: a child process serves it)."""
        self.target = target
        self.client = client
        self.tokens = tokens
        self.channel_per_session = channel_per_session
        self.window_messages = window_messages

    async def new_loop(self) -> TurnFn:
        """A new session on the shared client (or on a client of its own)."""
        client = self.client
        if self.channel_per_session:
            client = SalonClient(self.target)
            self._level_closers.append(client.close)
            await client.wait_ready(10.0)
        memory = session_pb2.MemorySettings(window_max_messages=self.window_messages) if self.window_messages else None
        session = await client.create_session(memory=memory)

        async def turn(text: str) -> TurnTiming:
            start = time.perf_counter()
            sent_ns = time.time_ns()
            first: float | None = None
            phases: dict[str, float] = {}
            accepted_ns = 0
            count = 0
            pieces: list[str] = []
            outcome = ""
            try:
                async for event in session.send(text):
                    kind = event.WhichOneof("kind")
                    if kind == "delta":
                        if first is None:
                            first = time.perf_counter()
                            # Events carry the host's wall-clock time of emission (same machine, same clock).
                            emitted_ns = event.time.ToNanoseconds()
                            phases["to_accepted"] = (accepted_ns - sent_ns) / 1e9 if accepted_ns else math.nan
                            phases["accepted_to_delta"] = (emitted_ns - accepted_ns) / 1e9 if accepted_ns else math.nan
                            phases["delta_delivery"] = (time.time_ns() - emitted_ns) / 1e9
                        count += 1
                        pieces.append(event.delta.text)
                    elif kind == "accepted":
                        accepted_ns = event.time.ToNanoseconds()
                    elif kind == "error":
                        raise TurnFailed(f"error event {event.error.reason}: {event.error.message}")
                    elif kind in ("completed", "cancelled"):
                        outcome = kind
            except SalonError as exc:
                raise TurnFailed(f"{exc.code.name} {exc.reason}: {exc.message}") from exc
            end = time.perf_counter()
            if outcome != "completed" or first is None or "".join(pieces) != "".join(scripted_reply(text, self.tokens)):
                raise TurnFailed(f"turn ended {outcome or 'without a terminal event'} after {count} deltas")
            return TurnTiming(first - start, end - start, self.tokens, phases, deltas=count)

        return turn

    async def describe(self) -> dict[str, Any]:
        """The hosts' counters (activations, turns started, ...) and what the events stream stored (only when
        the engine runs in this process)."""
        if self.engine is None:
            return {}
        nc = await connect(self.engine.nats_url, name="bench-turns-describe")
        try:
            info = await nc.jetstream().stream_info(self.engine.names.events_stream)
        finally:
            await nc.close()
        events = {"messages": info.state.messages, "bytes": info.state.bytes}
        return {"hosts": await self.engine.hosts.stats(), "events_stream": events}


def engine_settings(tokens: int, num_hosts: int, memory: bool) -> dict[str, Any]:
    """The engine's settings for the benchmark: the defaults, but the scripted provider (``tokens`` tokens, no
    delays) and ``num_hosts`` hosts; without ``memory``, no retrieval on the turn's path and no memory indexing
    beside it."""
    settings: dict[str, Any] = {
        "model_provider": "scripted",
        "scripted_tokens": tokens,
        "scripted_first_token_delay_s": 0.0,
        "scripted_token_delay_s": 0.0,
        "num_hosts": num_hosts,
    }
    if not memory:
        settings.update(retrieval_top_k=0, long_term_memory=False)
    return settings


@contextlib.asynccontextmanager
async def engine_system(
    tokens: int,
    data_dir: Path,
    num_hosts: int,
    channel_per_session: bool,
    memory: bool = True,
    *,
    in_process: bool = False,
    window_messages: int = 0,
) -> AsyncIterator[System]:
    """The engine (``salon serve`` in a child process, or in this process with ``in_process``) and one shared
    client."""
    name = "engine" if memory else "engine-nomem"
    settings = engine_settings(tokens, num_hosts, memory)
    root = data_dir / name
    if in_process:
        # Imported here: the engine's storage stack is heavy, and the child-process mode does not need it.
        from salon.engine.app import Engine
        from salon.engine.config import Config

        engine = Engine(Config(data_dir=str(root), grpc_port=0, **settings))
        try:
            started = time.perf_counter()
            await engine.start()
            log.info("engine up in %.1f s", time.perf_counter() - started)
            async with SalonClient(engine.target) as client:
                await client.wait_ready(10.0)
                system = _EngineSystem(
                    engine,
                    engine.target,
                    client,
                    tokens,
                    channel_per_session,
                    name=name,
                    window_messages=window_messages,
                )
                # Everything the engine started (nats-server, Ray's daemons and workers) is a descendant by now.
                system.pids = tuple(sorted(descendants(os.getpid())))
                try:
                    yield system
                finally:
                    await system.end_level()
        finally:
            await engine.close()
        return
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SALON_", "RAY_ADDRESS"))}
    env.update(
        {
            f"SALON_{key.upper()}": str(value).lower() if isinstance(value, bool) else str(value)
            for key, value in settings.items()
        }
    )
    server = ServerProcess(
        [sys.executable, "-m", "salon.engine.cli", "serve", "--port", "0", "--data-dir", str(root)],
        r"gRPC gateway on (\S+)",
        env=env,
    )
    try:
        target = await asyncio.to_thread(server.start)
        assert server.proc is not None
        async with SalonClient(target) as client:
            await client.wait_ready(10.0)
            system = _EngineSystem(
                None, target, client, tokens, channel_per_session, name=name, window_messages=window_messages
            )
            system.server_root = server.proc.pid
            system.pids = tuple(sorted({server.proc.pid, *descendants(server.proc.pid)}))
            try:
                yield system
            finally:
                await system.end_level()
    finally:
        await asyncio.to_thread(server.stop)


# --- measurement ------------------------------------------------------------------------------------------


@dataclass
class LevelResult:
    """Every figure of one system at one concurrency level."""

    system: str
    concurrency: int
    turns_per_session: int
    ttft_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    tokens: int = 0
    deltas: int = 0
    errors: int = 0
    warmup_errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    window_s: float = 0.0
    phases: dict[str, list[float]] = field(default_factory=dict)
    server_cpu_s: dict[str, float] = field(default_factory=dict)
    """CPU seconds the server's processes spent in the measured window, by kind of process."""
    client_cpu_s: float = math.nan
    """CPU seconds this process (the client, and the servers that share it) spent in the measured window."""

    def record_error(self, exc: BaseException, *, warmup: bool) -> None:
        """Count a failed turn and keep the first few messages as evidence."""
        if warmup:
            self.warmup_errors += 1
        else:
            self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(f"{'warm-up: ' if warmup else ''}{type(exc).__name__}: {exc}")

    def summary(self) -> dict[str, Any]:
        """The reported figures (milliseconds, per second)."""
        ok = len(self.latency_s)
        nan = math.nan
        return {
            "system": self.system,
            "concurrency": self.concurrency,
            "turns_per_session": self.turns_per_session,
            "turns_ok": ok,
            "errors": self.errors,
            "warmup_errors": self.warmup_errors,
            "ttft_p50_ms": percentile(self.ttft_s, 50) * 1e3,
            "ttft_p99_ms": percentile(self.ttft_s, 99) * 1e3,
            "latency_p50_ms": percentile(self.latency_s, 50) * 1e3,
            "latency_p99_ms": percentile(self.latency_s, 99) * 1e3,
            "turns_per_s": ok / self.window_s if self.window_s else math.nan,
            "tokens_per_s": self.tokens / self.window_s if self.window_s else math.nan,
            "delta_events_per_turn": self.deltas / ok if ok and self.deltas else math.nan,
            "window_s": self.window_s,
            "error_samples": self.error_samples,
            "ttft_phases_p50_ms": {k: percentile(v, 50) * 1e3 for k, v in self.phases.items()},
            "server_cpu_ms_per_turn": sum(self.server_cpu_s.values()) * 1e3 / ok if ok and self.server_cpu_s else nan,
            "server_cpu_ms_per_turn_by_kind": {k: v * 1e3 / ok for k, v in self.server_cpu_s.items()} if ok else {},
            "client_cpu_ms_per_turn": self.client_cpu_s * 1e3 / ok if ok else math.nan,
        }


async def run_level(system: System, concurrency: int, turns: int, warmup: int, turn_timeout_s: float) -> LevelResult:
    """Run ``concurrency`` client loops of ``warmup`` unmeasured then ``turns`` measured sequential turns."""
    result = LevelResult(system.name, concurrency, turns)
    loops = await asyncio.gather(*(system.new_loop() for _ in range(concurrency)))

    async def one(turn: TurnFn, warm: bool) -> None:
        try:
            async with asyncio.timeout(turn_timeout_s):
                timing = await turn(PROMPT)
        except TimeoutError:
            result.record_error(TurnFailed(f"no end of stream within {turn_timeout_s} s"), warmup=warm)
            return
        except Exception as exc:  # a failed turn is a data point, not the end of the run
            result.record_error(exc, warmup=warm)
            return
        if not warm:
            result.ttft_s.append(timing.ttft_s)
            result.latency_s.append(timing.latency_s)
            result.tokens += timing.tokens
            result.deltas += timing.deltas
            for phase, seconds in (timing.phases or {}).items():
                result.phases.setdefault(phase, []).append(seconds)

    async def drive(turn: TurnFn, count: int, warm: bool) -> None:
        for _ in range(count):
            await one(turn, warm)

    await asyncio.gather(*(drive(turn, warmup, True) for turn in loops))
    root = system.server_root
    before = sample_tree(root) if root is not None else []
    client_before = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(drive(turn, turns, False) for turn in loops))
    result.window_s = time.perf_counter() - started
    result.client_cpu_s = time.process_time() - client_before
    if root is not None:
        result.server_cpu_s = cpu_between(before, sample_tree(root))
    await system.end_level()
    return result


# --- processes --------------------------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, state) of every process, from /proc (empty where there is no /proc)."""
    table: dict[int, tuple[int, str]] = {}
    proc = Path("/proc")
    if not proc.is_dir():
        return table
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int) -> set[int]:
    """Live (non-zombie) descendants of ``pid``."""
    children: dict[int, list[int]] = {}
    table = _proc_table()
    for child, (parent, _) in table.items():
        children.setdefault(parent, []).append(child)
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and table[child][1] != "Z":
                found.add(child)
                todo.append(child)
    return found


def still_running(pids: Sequence[int]) -> list[int]:
    """Those of ``pids`` that still run (zombies do not count)."""
    table = _proc_table()
    return [p for p in pids if p in table and table[p][1] != "Z"]


# --- the run ----------------------------------------------------------------------------------------------


@dataclass
class SystemRun:
    """One system's levels and how its start and teardown went."""

    name: str
    levels: list[LevelResult] = field(default_factory=list)
    start_s: float = 0.0
    teardown_s: float = 0.0
    leftover_pids: list[int] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)


def warmup_for(system: str, args: argparse.Namespace) -> int:
    """Unmeasured turns per session: ``--warmup`` when given; else, for the engine, one more than its window
    holds (so every measured turn is past the window and retrieves from long-term memory), 2 for the baselines."""
    if args.warmup is not None:
        return int(args.warmup)
    if not system.startswith("engine"):
        return 2
    window = args.window_messages or 40  # the engine's default window
    # The new message takes one place; the window keeps whole turns of two messages.
    return (window - 1) // 2 + 1


def turns_for(concurrency: int, fixed: int | None) -> int:
    """Measured turns per session: ``fixed`` when given, else 20 for one session and 10 above."""
    if fixed is not None:
        return fixed
    return 20 if concurrency == 1 else 10


async def run_system(name: str, args: argparse.Namespace, data_dir: Path) -> SystemRun:
    """Start ``name``, run every concurrency level on it, tear it down and check for leftover processes."""
    run = SystemRun(name)
    factories: dict[str, Callable[[], contextlib.AbstractAsyncContextManager[System]]] = {
        "echo": lambda: echo_system(args.tokens, args.channel_per_session),
        "relay": lambda: relay_system(args.tokens, data_dir, args.turn_timeout, args.channel_per_session),
        "engine": lambda: engine_system(
            args.tokens,
            data_dir,
            args.num_hosts,
            args.channel_per_session,
            memory=not args.no_memory,
            in_process=args.in_process,
            window_messages=args.window_messages,
        ),
        "engine-nomem": lambda: engine_system(
            args.tokens,
            data_dir,
            args.num_hosts,
            args.channel_per_session,
            memory=False,
            in_process=args.in_process,
            window_messages=args.window_messages,
        ),
    }
    started = time.perf_counter()
    async with factories[name]() as system:
        run.start_s = time.perf_counter() - started
        for concurrency in args.concurrency:
            turns = turns_for(concurrency, args.turns_per_session)
            print(f"  {name}: {concurrency} concurrent x {turns} turns ...", end="", flush=True)
            level = await run_level(system, concurrency, turns, warmup_for(name, args), args.turn_timeout)
            run.levels.append(level)
            s = level.summary()
            cpu = s["server_cpu_ms_per_turn"]
            print(
                f" ttft p50 {s['ttft_p50_ms']:.2f} ms, {s['turns_per_s']:.0f} turns/s, "
                f"server CPU {_fmt(cpu)} ms/turn, {s['errors']} errors"
            )
        run.details = await system.describe()
        if "events_stream" in run.details:
            stored = run.details["events_stream"]["messages"]
            started_turns = sum(h["turns_started"] for h in run.details["hosts"])
            print(f"  {name}: the events stream holds {stored} messages for {started_turns} turns started")
        teardown_started = time.perf_counter()
    run.teardown_s = time.perf_counter() - teardown_started
    run.leftover_pids = still_running(system.pids)
    return run


def _fmt(value: float, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}{suffix}"


def ratios(runs: Sequence[SystemRun]) -> dict[str, dict[str, float]]:
    """engine/relay and engine/echo of TTFT p50, turn latency p50 and throughput at each concurrency level;
    with both engines run, memory on against off (TTFT and throughput)."""
    by_key = {(r.name, lvl.concurrency): lvl.summary() for r in runs for lvl in r.levels}
    out: dict[str, dict[str, float]] = {}
    for (name, concurrency), engine in by_key.items():
        if name != "engine":
            continue
        row: dict[str, float] = {}
        for base in ("relay", "echo", "engine-nomem"):
            other = by_key.get((base, concurrency))
            if other is None:
                continue
            for metric in ("ttft_p50_ms", "latency_p50_ms", "turns_per_s"):
                denominator = other[metric]
                row[f"{metric}_engine/{base}"] = engine[metric] / denominator if denominator else math.nan
        out[str(concurrency)] = row
    return out


def render(runs: Sequence[SystemRun], ratio_table: dict[str, dict[str, float]]) -> str:
    """The results as a plain-text (Markdown-compatible) table, ratios and lifecycle notes."""
    header = (
        "| system | sessions | turns | errors | TTFT p50 ms | TTFT p99 ms | turn p50 ms | turn p99 ms "
        "| turns/s | tokens/s | server CPU ms/turn |"
    )
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in runs:
        for level in run.levels:
            s = level.summary()
            errors = f"{s['errors']}" + (f" (+{s['warmup_errors']} warm-up)" if s["warmup_errors"] else "")
            lines.append(
                f"| {run.name} | {s['concurrency']} | {s['turns_ok']} | {errors} | {_fmt(s['ttft_p50_ms'])} "
                f"| {_fmt(s['ttft_p99_ms'])} | {_fmt(s['latency_p50_ms'])} | {_fmt(s['latency_p99_ms'])} "
                f"| {_fmt(s['turns_per_s'], 0)} | {_fmt(s['tokens_per_s'], 0)} | {_fmt(s['server_cpu_ms_per_turn'])} |"
            )
    if ratio_table:
        lines += [
            "",
            "| sessions | TTFT p50 engine/relay | TTFT p50 engine/echo | turn p50 engine/relay "
            "| turns/s engine/relay | TTFT p50 memory on/off | turns/s memory on/off |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for concurrency, row in ratio_table.items():
            cells = [
                row.get(key, math.nan)
                for key in (
                    "ttft_p50_ms_engine/relay",
                    "ttft_p50_ms_engine/echo",
                    "latency_p50_ms_engine/relay",
                    "turns_per_s_engine/relay",
                    "ttft_p50_ms_engine/engine-nomem",
                    "turns_per_s_engine/engine-nomem",
                )
            ]
            lines.append(f"| {concurrency} | " + " | ".join(_fmt(c, suffix="x") for c in cells) + " |")
    cpu_rows = [
        (run.name, lvl.concurrency, lvl.summary()["server_cpu_ms_per_turn_by_kind"])
        for run in runs
        for lvl in run.levels
        if lvl.server_cpu_s
    ]
    if cpu_rows:
        lines += ["", "Server CPU per turn by process, ms (from /proc of the server's own process tree):"]
        for name, level_concurrency, kinds in cpu_rows:
            parts = ", ".join(f"{kind} {ms:.2f}" for kind, ms in sorted(kinds.items(), key=lambda kv: -kv[1]) if ms)
            lines.append(f"- {name} at {level_concurrency}: {parts}")
    phase_rows = [
        (lvl.concurrency, lvl.summary()["ttft_phases_p50_ms"], lvl.summary()["delta_events_per_turn"])
        for run in runs
        for lvl in run.levels
        if lvl.phases
    ]
    if phase_rows:
        lines += [
            "",
            "Engine TTFT by phase, p50 ms (from the events' emission timestamps), and delta events per turn:",
            "| sessions | request → accepted emitted | accepted → first delta emitted "
            "| first delta emitted → received | delta events per turn |",
            "|---:|---:|---:|---:|---:|",
        ]
        for level_concurrency, phases, deltas in phase_rows:
            lines.append(
                f"| {level_concurrency} | {_fmt(phases.get('to_accepted', math.nan))} "
                f"| {_fmt(phases.get('accepted_to_delta', math.nan))} "
                f"| {_fmt(phases.get('delta_delivery', math.nan))} | {_fmt(deltas, 1)} |"
            )
    lines.append("")
    for run in runs:
        leftovers = ", ".join(map(str, run.leftover_pids)) or "none"
        lines.append(
            f"{run.name}: start {run.start_s:.2f} s, teardown {run.teardown_s:.2f} s, "
            f"processes left after teardown: {leftovers}"
        )
    return "\n".join(lines)


def verdict(runs: Sequence[SystemRun], ratio_table: dict[str, dict[str, float]]) -> tuple[list[str], bool]:
    """Lines judging the issue's aims, and whether any engine turn failed."""
    lines: list[str] = []
    engine_failed = False
    for run in runs:
        if run.name != "engine":
            if any(lvl.errors or lvl.warmup_errors for lvl in run.levels):
                lines.append(f"WARNING: baseline {run.name} had failed turns (a benchmark problem, not the engine's)")
            continue
        for level in run.levels:
            if level.errors or level.warmup_errors:
                engine_failed = True
                lines.append(
                    f"engine errors at {level.concurrency} sessions: {level.errors} measured, "
                    f"{level.warmup_errors} warm-up; e.g. {level.error_samples[:2]}"
                )
        at64 = [lvl for lvl in run.levels if lvl.concurrency == 64]
        if at64:
            n = at64[0].errors + at64[0].warmup_errors
            lines.append(f"aim 'no errors at 64 sessions': {'met' if n == 0 else f'NOT met ({n} errors)'}")
    lines += _targets(runs, ratio_table)
    return lines, engine_failed


def _targets(runs: Sequence[SystemRun], ratio_table: dict[str, dict[str, float]]) -> list[str]:
    """The turn path's targets (issue 15), judged on this run's figures."""
    lines: list[str] = []

    def judge(aim: str, value: float | None, limit: float, *, at_least: bool = False, unit: str = "x") -> None:
        if value is None or math.isnan(value):
            return
        met = value >= limit if at_least else value <= limit
        lines.append(f"target '{aim}': {'met' if met else 'NOT met'} ({value:.2f}{unit})")

    one, many = ratio_table.get("1", {}), ratio_table.get("64", {})
    judge("1 session: TTFT p50 <= 2x the relay's", one.get("ttft_p50_ms_engine/relay"), 2.0)
    judge("64 sessions: TTFT p50 <= 2x the relay's", many.get("ttft_p50_ms_engine/relay"), 2.0)
    judge("64 sessions: throughput >= 0.8x the relay's", many.get("turns_per_s_engine/relay"), 0.8, at_least=True)
    on_off = many.get("turns_per_s_engine/engine-nomem")
    judge("64 sessions: memory on/off throughput >= 0.8x", on_off, 0.8, at_least=True)
    judge("64 sessions: memory on/off TTFT p50 <= 1.3x", many.get("ttft_p50_ms_engine/engine-nomem"), 1.3)
    for run in runs:
        if run.name == "engine":
            for level in run.levels:
                if level.concurrency == 64:
                    cpu = level.summary()["server_cpu_ms_per_turn"]
                    judge("64 sessions: server CPU per turn <= 6 ms", cpu, 6.0, unit=" ms")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_turns",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: .venv/bin/python -m bench.bench_turns --concurrency 1,16,64 --json bench.json",
    )
    parser.add_argument(
        "--turns-per-session",
        type=positive_int,
        default=None,
        metavar="N",
        help="measured sequential turns per session at every level (default: 20 at 1 session, 10 above)",
    )
    parser.add_argument(
        "--concurrency",
        type=functools.partial(int_list, minimum=1, what="concurrency levels"),
        default=[1, 16, 64],
        metavar="C1,C2,...",
        help="concurrent sessions per level, comma-separated (default: 1,16,64)",
    )
    parser.add_argument("--tokens", type=positive_int, default=64, help="tokens per answer (default: %(default)s)")
    parser.add_argument(
        "--warmup",
        type=non_negative_int,
        default=None,
        metavar="N",
        help="unmeasured turns per session first (default: enough to pass the window, see --window-messages; "
        "2 for the baselines)",
    )
    parser.add_argument(
        "--window-messages",
        type=non_negative_int,
        default=6,
        metavar="N",
        help="each engine session's window (messages); the warm-up passes it, so every measured turn retrieves "
        "from long-term memory (0: the engine's default window, 40 messages; default: %(default)s)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the engine in this process (its gateway then shares the client's event loop, and its server CPU "
        "is not reported); default: `salon serve` in a child process",
    )
    parser.add_argument(
        "--systems",
        type=_system_list,
        default=list(DEFAULT_SYSTEMS),
        metavar="S1,S2",
        help="systems to run, in order, among echo,relay,engine,engine-nomem (engine-nomem: memory off, to compare "
        "memory on and off; default: echo,relay,engine)",
    )
    parser.add_argument(
        "--channel-per-session",
        action="store_true",
        help="give every client loop its own gRPC channel (default: all loops of a system share one)",
    )
    parser.add_argument("--num-hosts", type=positive_int, default=2, help="engine session hosts (default: %(default)s)")
    parser.add_argument(
        "--no-memory",
        action="store_true",
        help="engine without retrieval (retrieval_top_k 0) and without the memory indexer (long_term_memory off)",
    )
    parser.add_argument(
        "--turn-timeout", type=float, default=30.0, metavar="S", help="a turn longer than this fails (default: 30)"
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--serve-relay", type=Path, default=None, help=argparse.SUPPRESS)
    return parser


def _system_list(raw: str) -> list[str]:
    values = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [v for v in values if v not in SYSTEMS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"systems are among {','.join(SYSTEMS)}; got {raw!r}")
    return values


async def bench(args: argparse.Namespace) -> int:
    """Run every requested system, print the table and verdict, write the JSON; return the exit status."""
    began = time.perf_counter()
    command = "python -m bench.bench_turns " + shlex.join(sys.argv[1:])
    print(f"Salon turn-path benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"command: {command}")
    load_before = load_average()
    print(f"load average before: {load_before}")
    runs: list[SystemRun] = []
    with tempfile.TemporaryDirectory(prefix="salon-bench-") as tmp:
        for name in args.systems:
            print(f"{name}:")
            runs.append(await run_system(name, args, Path(tmp)))
    ratio_table = ratios(runs)
    print()
    print(render(runs, ratio_table))
    lines, engine_failed = verdict(runs, ratio_table)
    print()
    for line in lines:
        print(line)
    for run in runs:
        if run.details:
            print(f"{run.name} details: {json.dumps(run.details)}")
    left = sorted(descendants(os.getpid()))
    print(f"child processes still running at the end: {left or 'none'}")
    elapsed = time.perf_counter() - began
    load_after = load_average()
    print(f"load average after: {load_after} (this run keeps 1-3 processes busy; more means other load)")
    print(f"total {elapsed:.1f} s")
    if args.json is not None:
        payload = {
            **run_header(command, load_before, load_after),
            "results": [lvl.summary() for run in runs for lvl in run.levels],
            "ratios": ratio_table,
            "lifecycle": [
                {
                    "system": run.name,
                    "start_s": run.start_s,
                    "teardown_s": run.teardown_s,
                    "leftover_pids": run.leftover_pids,
                    "details": run.details,
                }
                for run in runs
            ],
            "verdict": lines,
            "total_s": elapsed,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 1 if engine_failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the command line and run the benchmark."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.serve_relay is not None:
        asyncio.run(serve_relay(args.tokens, args.serve_relay, args.turn_timeout))
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
