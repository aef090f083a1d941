"""Scaling figures (issue 17, point 7): throughput and time to first token at several session counts with 1, 2 and 4
session hosts and 1 or 2 gateways, with the CPU each kind of process spends per turn.

One nats-server (started here) serves every run. For each host count, a whole engine runs as ``salon serve`` in
a process of its own (gateway, local Ray, hosts, batch writer), and for two gateways a second ``salon serve
--gateway-only`` on the same NATS and namespace; this process is only the client. For each session count S, S
sessions each run one warm-up turn, then ``--turns`` measured turns back to back (all sessions at once, each on
a shared channel per gateway). Per level: turns/s over the measured window, p50/p99 of the time to first token
(request sent → first delta received) and of the turn latency, errors, and CPU seconds per turn of each process
kind, read from ``/proc`` before and after the window:

* ``gateway``: the ``salon serve`` processes themselves (gRPC gateway, Ray driver);
* ``host``: the session host actors (``ray::HostActor``);
* ``writer``: the batch writer actor (``ray::WriterActor``: ledger → LanceDB);
* ``nats``: the nats-server;
* ``ray``: Ray's own processes (GCS, raylet, agents, idle workers).

The scripted provider answers every turn with ``--tokens`` tokens and no delay, so the figures are the engine's
own cost per turn, not a model's. Run: ``python -m bench.bench_scale`` (``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.common import int_list, load_average, percentile, positive_int, run_header
from salon.engine.nats_server import EmbeddedNats
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

KINDS = ("gateway", "host", "writer", "nats", "ray")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes() -> dict[int, tuple[int, float, str]]:
    """Every process: its parent, its CPU seconds so far (user + system) and its command line."""
    found: dict[int, tuple[int, float, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found[int(entry.name)] = (int(fields[1]), cpu, cmdline)
    return found


def cpu_by_kind(gateways: list[int], nats_pid: int) -> dict[str, float]:
    """CPU seconds so far of every process of the deployment, summed per kind."""
    processes = _processes()
    totals = dict.fromkeys(KINDS, 0.0)
    members = set(gateways)
    grown = True
    while grown:
        children = {pid for pid, (ppid, _, _) in processes.items() if ppid in members} - members
        members |= children
        grown = bool(children)
    for pid in members | {nats_pid}:
        if pid not in processes:
            continue
        _, cpu, cmdline = processes[pid]
        if pid in gateways:
            kind = "gateway"
        elif pid == nats_pid:
            kind = "nats"
        elif cmdline.startswith("ray::HostActor"):
            kind = "host"
        elif cmdline.startswith("ray::WriterActor"):
            kind = "writer"
        else:
            kind = "ray"
        totals[kind] += cpu
    return totals


@dataclass
class Serve:
    """One ``salon serve`` process."""

    process: subprocess.Popen[bytes]
    target: str
    log: Path

    async def wait_serving(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        async with grpc.aio.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"salon serve exited: {self.log.read_text(errors='replace')[-3000:]}")
                with contextlib.suppress(grpc.aio.AioRpcError):
                    reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError("salon serve did not come up")
                await asyncio.sleep(0.5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_serve(root: Path, name: str, env: dict[str, str], *, gateway_only: bool) -> Serve:
    port = _free_port()
    data = root / name
    data.mkdir(parents=True, exist_ok=True)
    log = root / f"{name}.log"
    args = [sys.executable, "-m", "salon.engine.cli", "serve", "--port", str(port), "--data-dir", str(data)]
    if gateway_only:
        args.append("--gateway-only")
    with open(log, "wb") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Serve(process, f"127.0.0.1:{port}", log)


@dataclass
class Level:
    """The figures of one session count."""

    sessions: int
    turns: int = 0
    failures: list[str] = field(default_factory=list)
    """Why each failed turn failed (the error event's reason, or the gRPC status)."""
    window_s: float = 0.0
    ttft: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        per_turn = {k: round(v / self.turns * 1000, 2) if self.turns else None for k, v in self.cpu.items()}
        return {
            "sessions": self.sessions,
            "turns": self.turns,
            "errors": len(self.failures),
            "error_reasons": sorted(set(self.failures)),
            "turns_per_s": round(self.turns / self.window_s, 1) if self.window_s else 0.0,
            "ttft_p50_ms": round(percentile(self.ttft, 50) * 1000, 1),
            "ttft_p99_ms": round(percentile(self.ttft, 99) * 1000, 1),
            "latency_p50_ms": round(percentile(self.latency, 50) * 1000, 1),
            "latency_p99_ms": round(percentile(self.latency, 99) * 1000, 1),
            "cpu_ms_per_turn": per_turn,
        }


async def _turn(stub: cs_grpc.ConversationServiceStub, session_id: str, text: str) -> tuple[float, float]:
    """One turn: (time to first delta, latency); raises when it does not complete."""
    start = time.perf_counter()
    first: float | None = None
    outcome = "no end"
    async for response in stub.SendTurn(cs_pb2.SendTurnRequest(session_id=session_id, text=text), timeout=300):
        kind = response.event.WhichOneof("kind")
        if kind == "delta" and first is None:
            first = time.perf_counter()
        if kind == "error":
            outcome = response.event.error.reason
        elif kind in ("completed", "cancelled"):
            outcome = kind
    end = time.perf_counter()
    if outcome != "completed" or first is None:
        raise RuntimeError(outcome)
    return first - start, end - start


async def run_level(stubs: list[cs_grpc.ConversationServiceStub], sessions: int, turns: int, cpu: Any) -> Level:
    level = Level(sessions)
    placed = [stubs[i % len(stubs)] for i in range(sessions)]
    ids = await asyncio.gather(*(stub.CreateSession(cs_pb2.CreateSessionRequest(), timeout=60) for stub in placed))
    session_ids = [r.session.session_id for r in ids]
    # Warm-up: every session activated once, not measured.
    await asyncio.gather(
        *(_turn(s, sid, "warm up") for s, sid in zip(placed, session_ids, strict=True)), return_exceptions=True
    )

    async def loop(stub: cs_grpc.ConversationServiceStub, session_id: str) -> None:
        for n in range(turns):
            try:
                ttft, latency = await _turn(stub, session_id, f"turn {n}")
            except grpc.aio.AioRpcError as exc:
                level.failures.append(exc.code().name)
                continue
            except RuntimeError as exc:
                level.failures.append(str(exc))
                continue
            level.turns += 1
            level.ttft.append(ttft)
            level.latency.append(latency)

    before = cpu()
    start = time.perf_counter()
    await asyncio.gather(*(loop(s, sid) for s, sid in zip(placed, session_ids, strict=True)))
    level.window_s = time.perf_counter() - start
    after = cpu()
    level.cpu = {k: after[k] - before[k] for k in KINDS}
    return level


async def run_config(
    root: Path, nats: tuple[str, int], hosts: int, gateways: int, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Every session count on one deployment of ``hosts`` hosts and ``gateways`` gateways."""
    nats_url, nats_pid = nats
    namespace = f"scale{hosts}h{gateways}g"
    env = {
        **os.environ,
        "SALON_NATS_URL": nats_url,
        "SALON_NAMESPACE": namespace,
        "SALON_NUM_HOSTS": str(hosts),
        "SALON_NUM_SHARDS": str(args.shards),
        "SALON_MODEL_PROVIDER": "scripted",
        "SALON_SCRIPTED_TOKENS": str(args.tokens),
        "SALON_LOG_LEVEL": "WARNING",
        "SALON_LONG_TERM_MEMORY": "false",
        "SALON_TENANT_TURNS_PER_MINUTE": "0",
        "SALON_TENANT_CONCURRENT_TURNS": "0",
    }
    env.pop("RAY_ADDRESS", None)
    serves = [start_serve(root, f"{namespace}-0", env, gateway_only=False)]
    try:
        await serves[0].wait_serving(300)
        for g in range(1, gateways):
            serves.append(start_serve(root, f"{namespace}-{g}", env, gateway_only=True))
            await serves[-1].wait_serving(300)
        pids = [s.process.pid for s in serves]
        cpu = functools.partial(cpu_by_kind, pids, nats_pid)
        results = []
        async with contextlib.AsyncExitStack() as stack:
            channels = [await stack.enter_async_context(grpc.aio.insecure_channel(s.target)) for s in serves]
            stubs = [cs_grpc.ConversationServiceStub(c) for c in channels]  # type: ignore[no-untyped-call]
            for sessions in args.sessions:
                level = await run_level(stubs, sessions, args.turns, cpu)
                row = {"hosts": hosts, "gateways": gateways, **level.summary(), "load_average": load_average()}
                print(json.dumps(row), flush=True)
                results.append(row)
        return results
    finally:
        for serve in reversed(serves):
            serve.stop()


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| hosts | gateways | sessions | turns/s | TTFT p50 / p99 ms | latency p50 / p99 ms | errors "
        + "| CPU ms per turn: "
        + " / ".join(KINDS)
        + " |\n|---|---|---|---|---|---|---|---|\n"
    )
    lines = [
        f"| {r['hosts']} | {r['gateways']} | {r['sessions']} | {r['turns_per_s']} | {r['ttft_p50_ms']} / "
        f"{r['ttft_p99_ms']} | {r['latency_p50_ms']} / {r['latency_p99_ms']} | {r['errors']} | "
        + " / ".join(str(r["cpu_ms_per_turn"][k]) for k in KINDS)
        + " |"
        for r in rows
    ]
    return head + "\n".join(lines) + "\n"


async def main(args: argparse.Namespace) -> int:
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="salon-scale-") as tmp:
        root = Path(tmp)
        nats = EmbeddedNats(root / "nats", max_memory_store="1G")
        url = await nats.start()
        rows: list[dict[str, Any]] = []
        try:
            nats_pid = nats.pid or 0
            for gateways in args.gateways:
                for hosts in args.hosts:
                    rows += await run_config(root, (url, nats_pid), hosts, gateways, args)
        finally:
            await nats.close()
    report = {**run_header(shlex.join(sys.argv), load_before, load_average()), "rows": rows}
    if args.out:
        await asyncio.to_thread(Path(args.out).write_text, json.dumps(report, indent=2) + "\n")
    print(markdown(rows))
    return 1 if any(r["errors"] for r in rows) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_scale", description=__doc__.split("\n\n")[0])
    ints = functools.partial(int_list, minimum=1)
    parser.add_argument("--hosts", type=functools.partial(ints, what="hosts"), default=[1, 2, 4])
    parser.add_argument("--gateways", type=functools.partial(ints, what="gateways"), default=[1])
    parser.add_argument("--sessions", type=functools.partial(ints, what="sessions"), default=[64, 256])
    parser.add_argument("--turns", type=positive_int, default=3, help="measured turns per session")
    parser.add_argument("--tokens", type=positive_int, default=16, help="tokens per answer")
    parser.add_argument("--shards", type=positive_int, default=16)
    parser.add_argument("--out", default="", help="also write the JSON report here")
    return parser


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(build_parser().parse_args())))
