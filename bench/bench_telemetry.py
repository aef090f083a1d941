"""Benchmark of telemetry's cost (issue 6): time to first token and turns/s with telemetry off, on with JSONL
span files, and on with OTLP export to a real receiver, measured in one run.

Three engines run side by side on one nats-server and one local Ray (own namespaces), each with the scripted
provider (``--tokens`` tokens, no delays), one host and its batch writer:

* ``off``: telemetry off everywhere (the hosts never install the SDK).
* ``jsonl``: spans of every process to JSONL files; the gateway also serves its Prometheus endpoint.
* ``otlp``: spans over OTLP/HTTP (the standard ``OTEL_EXPORTER_OTLP_*`` variables) to an oteltap receiver in
  this process, on a thread and event loop of its own so its polling does not share the client's loop
  (``--receiver process`` moves it to a child process, leaving only Salon's side of the export in this
  process); the gateway's metrics go there too.

Telemetry is set up per process: the hosts of each engine keep their engine's setting, while the gateways all
live in this process, so before each block the benchmark switches this process's telemetry to the block's
variant (``otel.setup``), as the engine would have set it up. All three engines stay up the whole run, so their
idle work (shard polling, writers) weighs on every variant alike.

Measurement: for each round and concurrency level, one block per variant in a rotated order (each variant
takes every position over the rounds). A block opens ``C`` sessions' worth of client loops (sessions made
once per variant and level), runs one unmeasured turn per session, then turns back to back for ``--block``
seconds. Per variant and level: TTFT and turn-latency percentiles over all blocks, turns/s over the blocks'
windows, and the ratio of each to ``off`` in the same run. The machine is shared: compare ratios within a run,
and check the per-round figures for drift.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import logging
import multiprocessing
import os
import platform
import shlex
import socket
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import ray

from bench.common import int_list, load_average, percentile, positive_int, run_header
from salon import otel
from salon.client import SalonClient, SalonError
from salon.engine.app import Engine
from salon.engine.config import Config
from salon.engine.nats_server import EmbeddedNats
from salon.engine.ray_start import ensure_ray

log = logging.getLogger("bench.telemetry")

VARIANTS = ("off", "jsonl", "otlp")
PROMPT = "the quick brown fox jumps over the lazy dog"


class TurnFailed(Exception):
    """A turn ended without the expected answer."""


@dataclass
class Cell:
    """Every figure of one variant at one concurrency level, over all rounds."""

    variant: str
    concurrency: int
    ttft_s: list[float] = field(default_factory=list)
    latency_s: list[float] = field(default_factory=list)
    window_s: float = 0.0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    round_ttft_p50_ms: list[float] = field(default_factory=list)
    round_turns_per_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The reported figures (milliseconds, per second)."""
        return {
            "variant": self.variant,
            "concurrency": self.concurrency,
            "turns": len(self.ttft_s),
            "errors": self.errors,
            "ttft_p50_ms": percentile(self.ttft_s, 50) * 1e3,
            "ttft_p99_ms": percentile(self.ttft_s, 99) * 1e3,
            "latency_p50_ms": percentile(self.latency_s, 50) * 1e3,
            "latency_p99_ms": percentile(self.latency_s, 99) * 1e3,
            "turns_per_s": len(self.ttft_s) / self.window_s if self.window_s else float("nan"),
            "round_ttft_p50_ms": self.round_ttft_p50_ms,
            "round_turns_per_s": self.round_turns_per_s,
            "error_samples": self.error_samples,
        }


async def _receive(port_out: Callable[[int], None], stop: Awaitable[object], counts: dict[str, int]) -> None:
    """Run an oteltap OTLP/HTTP receiver on a free port until ``stop``, counting spans and metric points."""
    from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings, OtelTapInitializationError

    for _ in range(5):
        # oteltap cannot report the port it bound: take one the OS picks, retry if it was taken meanwhile.
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        receiver = OtelTapHttpProtobufReceiver(OtelTapHttpProtobufReceiverSettings(http_port=port))
        try:
            await receiver.start()
            break
        except OtelTapInitializationError:
            continue
    else:
        raise RuntimeError("no free port for the OTLP receiver")

    async def count(stream: AsyncIterator[Any], key: str) -> None:
        async for _ in stream:
            counts[key] += 1

    tasks = [
        asyncio.create_task(count(receiver.stream_traces(), "spans")),
        asyncio.create_task(count(receiver.stream_metrics(), "metrics")),
    ]
    port_out(port)
    try:
        await stop
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await receiver.stop()


def _receiver_process(conn: Connection) -> None:
    """Child-process body of a ``process`` receiver: the port goes out, "stop" comes in, the counts go out."""
    counts = {"spans": 0, "metrics": 0}

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await _receive(conn.send, loop.run_in_executor(None, conn.recv), counts)

    asyncio.run(main())
    conn.send(counts)


class Receiver:
    """The OTLP receiver (oteltap) of the ``otlp`` variant, counting what it gets. ``thread``: in this process,
    on a thread with its own event loop (its decoding still takes this process's GIL); ``process``: in a child
    process, so only Salon's side of the export weighs on the gateway. Lifecycle: :meth:`start`, :meth:`close`
    (idempotent)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.port = 0
        self.counts = {"spans": 0, "metrics": 0}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._process: Any = None
        self._conn: Connection | None = None
        self._closed = False

    def start(self) -> None:
        """Start the receiver and wait until it listens."""
        if self.mode == "process":
            parent, child = multiprocessing.get_context("spawn").Pipe()
            self._process = multiprocessing.get_context("spawn").Process(
                target=_receiver_process, args=(child,), name="bench-otlp-receiver"
            )
            self._process.start()
            self._conn = parent
            if not parent.poll(60):
                raise RuntimeError("the OTLP receiver did not start")
            self.port = parent.recv()
            return
        self._thread = threading.Thread(target=self._run, name="bench-otlp-receiver", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or not self.port:
            raise RuntimeError("the OTLP receiver did not start")

    def _run(self) -> None:
        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()

            def listening(port: int) -> None:
                self.port = port
                self._ready.set()

            await _receive(listening, self._stop.wait(), self.counts)

        try:
            asyncio.run(main())
        finally:
            self._ready.set()

    def close(self) -> None:
        """Stop the receiver and collect its counts."""
        if self._closed:
            return
        self._closed = True
        if self._process is not None and self._conn is not None:
            self._conn.send("stop")
            if self._conn.poll(30):
                self.counts = self._conn.recv()
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.kill()
            return
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)


Turn = Callable[[], Awaitable[tuple[float, float]]]


async def new_session_turn(client: SalonClient, tokens: int) -> Turn:
    """A fresh session and a function running one timed turn on it: (TTFT, turn latency) in seconds."""
    session = await client.create_session()

    async def turn() -> tuple[float, float]:
        start = time.perf_counter()
        first: float | None = None
        count = 0
        outcome = ""
        try:
            async for event in session.send(PROMPT):
                kind = event.WhichOneof("kind")
                if kind == "delta":
                    if first is None:
                        first = time.perf_counter()
                    count += 1
                elif kind == "error":
                    raise TurnFailed(f"error event {event.error.reason}")
                elif kind in ("completed", "cancelled"):
                    outcome = kind
        except SalonError as exc:
            raise TurnFailed(f"{exc.code.name} {exc.reason}") from exc
        end = time.perf_counter()
        if outcome != "completed" or first is None or count != tokens:
            raise TurnFailed(f"turn ended {outcome or 'without a terminal event'} after {count} deltas")
        return first - start, end - start

    return turn


async def run_block(cell: Cell, turns: list[Turn], block_s: float, turn_timeout_s: float) -> None:
    """One unmeasured turn per session, then back-to-back turns on every session for ``block_s`` seconds."""
    ttft: list[float] = []

    async def one(turn: Turn, measured: bool) -> None:
        try:
            async with asyncio.timeout(turn_timeout_s):
                first, total = await turn()
        except Exception as exc:  # a failed turn is a data point, not the end of the run
            cell.errors += 1
            if len(cell.error_samples) < 5:
                cell.error_samples.append(f"{type(exc).__name__}: {exc}")
            return
        if measured:
            ttft.append(first)
            cell.ttft_s.append(first)
            cell.latency_s.append(total)

    await asyncio.gather(*(one(turn, False) for turn in turns))
    started = time.perf_counter()
    deadline = started + block_s

    async def drive(turn: Turn) -> None:
        while time.perf_counter() < deadline:
            await one(turn, True)

    await asyncio.gather(*(drive(turn) for turn in turns))
    window = time.perf_counter() - started
    cell.window_s += window
    cell.round_ttft_p50_ms.append(percentile(ttft, 50) * 1e3)
    cell.round_turns_per_s.append(len(ttft) / window if window else float("nan"))


def rotations(rounds: int) -> Iterator[tuple[str, ...]]:
    """The variants' order in each round: rotated, so each takes every position."""
    for r in range(rounds):
        shift = r % len(VARIANTS)
        yield VARIANTS[shift:] + VARIANTS[:shift]


def gateway_settings(engine: Engine) -> otel.TelemetrySettings:
    """The gateway process's telemetry for ``engine``'s variant: what the engine set up when it started."""
    return otel.TelemetrySettings.from_config(engine.config)


def render(cells: dict[tuple[str, int], Cell], levels: list[int]) -> str:
    """The results table, with ratios against ``off`` at the same level."""
    lines = [
        "| telemetry | sessions | turns | errors | TTFT p50 ms | TTFT p99 ms | turn p50 ms | turns/s "
        "| **TTFT p50 vs off** | turns/s vs off |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        base = cells[("off", level)].summary()
        for variant in VARIANTS:
            s = cells[(variant, level)].summary()
            lines.append(
                f"| {variant} | {level} | {s['turns']} | {s['errors']} | {s['ttft_p50_ms']:.2f} | "
                f"{s['ttft_p99_ms']:.2f} | {s['latency_p50_ms']:.2f} | {s['turns_per_s']:.1f} | "
                f"**{s['ttft_p50_ms'] / base['ttft_p50_ms']:.2f}x** | {s['turns_per_s'] / base['turns_per_s']:.2f}x |"
            )
    lines += ["", "TTFT p50 (ms) and turns/s of each block, in the order the rounds ran:", ""]
    lines += ["| telemetry | sessions | TTFT p50 per round | turns/s per round |", "|---|---:|---|---|"]
    for level in levels:
        for variant in VARIANTS:
            c = cells[(variant, level)]
            ttft = ", ".join(f"{v:.2f}" for v in c.round_ttft_p50_ms)
            rate = ", ".join(f"{v:.0f}" for v in c.round_turns_per_s)
            lines.append(f"| {variant} | {level} | {ttft} | {rate} |")
    return "\n".join(lines)


def engine_config(variant: str, data: Path, nats_url: str, tokens: int) -> Config:
    """One engine per variant, differing only in telemetry."""
    telemetry = {"off": {}, "jsonl": {"telemetry": "jsonl", "metrics_port": 0}, "otlp": {"telemetry": "otlp"}}
    return Config(
        data_dir=str(data / variant),
        grpc_port=0,
        nats_url=nats_url,
        namespace=f"bench_tel_{variant}",
        num_hosts=1,
        num_shards=4,
        model_provider="scripted",
        scripted_tokens=tokens,
        scripted_first_token_delay_s=0.0,
        scripted_token_delay_s=0.0,
        shutdown_grace_s=2.0,
        **telemetry[variant],
    )


async def bench(args: argparse.Namespace) -> int:
    """Run the rounds, print the tables, write the JSON; exit status 1 when any turn failed."""
    began = time.perf_counter()
    command = "python -m bench.bench_telemetry " + shlex.join(sys.argv[1:])
    print(f"Salon telemetry benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"command: {command}")
    load_before = load_average()
    print(f"load average before: {load_before}")
    receiver = Receiver(args.receiver)
    receiver.start()
    print(f"OTLP receiver: oteltap in a {args.receiver} on port {receiver.port}")
    # The standard variables, read by the exporters of this process and handed to the hosts by the engine.
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver.port}"
    os.environ["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
    cells = {(v, c): Cell(v, c) for v in VARIANTS for c in args.concurrency}
    started_ray = False
    with tempfile.TemporaryDirectory(prefix="salon-bench-tel-") as tmp:
        nats = EmbeddedNats(Path(tmp) / "nats")
        engines: dict[str, Engine] = {}
        clients: dict[str, SalonClient] = {}
        try:
            nats_url = await nats.start()
            started_ray = ensure_ray(Config(num_hosts=1, num_shards=1))
            for variant in VARIANTS:
                engine = Engine(engine_config(variant, Path(tmp), nats_url, args.tokens))
                await engine.start()
                engines[variant] = engine
                clients[variant] = SalonClient(engine.target)
                await clients[variant].wait_ready(10.0)
            print(f"engines up in {time.perf_counter() - began:.1f} s")
            sessions = {
                (v, c): [await new_session_turn(clients[v], args.tokens) for _ in range(c)]
                for v in VARIANTS
                for c in args.concurrency
            }
            for number, order in enumerate(rotations(args.rounds), start=1):
                for level in args.concurrency:
                    for variant in order:
                        otel.setup(gateway_settings(engines[variant]), process="gateway", serve_metrics=True)
                        await run_block(cells[(variant, level)], sessions[(variant, level)], args.block, 30.0)
                print(f"round {number}/{args.rounds} done ({' '.join(order)})")
            otel.force_flush()
        finally:
            for client in clients.values():
                await client.close()
            for engine in reversed(list(engines.values())):
                await engine.close()
            if started_ray and ray.is_initialized():
                ray.shutdown()
            await nats.close()
            receiver.close()
    print()
    print(render(cells, args.concurrency))
    print()
    print(f"OTLP receiver got {receiver.counts['spans']} spans and {receiver.counts['metrics']} metrics")
    errors = sum(c.errors for c in cells.values())
    for cell in cells.values():
        for sample in cell.error_samples:
            print(f"{cell.variant}@{cell.concurrency}: {sample}")
    elapsed = time.perf_counter() - began
    load_after = load_average()
    print(f"load average after: {load_after}")
    print(f"total {elapsed:.1f} s")
    if args.json is not None:
        payload = {
            **run_header(command, load_before, load_after),
            "results": [c.summary() for c in cells.values()],
            "otlp_receiver": {"mode": args.receiver, **receiver.counts},
            "total_s": elapsed,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 1 if errors else 0


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_telemetry",
        description=__doc__.split("\n\n", 1)[0] if __doc__ else None,
    )
    parser.add_argument(
        "--concurrency",
        type=functools.partial(int_list, minimum=1, what="concurrency levels"),
        default=[1, 8],
        metavar="C1,C2,...",
        help="concurrent sessions per level, comma-separated (default: 1,8)",
    )
    parser.add_argument("--rounds", type=positive_int, default=4, help="rounds of blocks (default: %(default)s)")
    parser.add_argument(
        "--block", type=float, default=2.0, metavar="S", help="measured seconds per block (default: %(default)s)"
    )
    parser.add_argument("--tokens", type=positive_int, default=32, help="tokens per answer (default: %(default)s)")
    parser.add_argument(
        "--receiver",
        choices=("thread", "process"),
        default="thread",
        help="where the OTLP receiver runs: a thread of this process or a child process (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write every figure as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the command line and run the benchmark."""
    args = build_parser().parse_args(argv)
    if args.block <= 0:
        raise SystemExit("--block must be positive")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
