"""Benchmark of the web bridge (issue 18): what it adds to time to first token, and how many browser streams one
bridge process carries before time to first token doubles.

One engine (embedded NATS, local Ray, session hosts, the gRPC gateway and the web bridge in this process), the
scripted model: its first token at once, then one token every ``--token-delay`` seconds, ``--tokens`` long.

* ``added``: ``--pairs`` pairs of turns, each pair one turn by direct gRPC (``SendTurn`` through the generated
  stub) and one through the bridge (``POST /v1/sessions/{id}/turns``, read as SSE over HTTP/1.1), in alternating
  order, each timed from the request to its first ``delta`` and then dropped (disconnect policy CANCEL, so the
  engine stops it). Medians and p90 of both paths in the same run; the difference of medians is the bridge's cost.
* ``streams``: for each level N of ``--levels``, N browser-like streams are opened, each on its own HTTP
  connection with its own session and session token, each a turn streaming its tokens for the whole level; once
  every stream has its first token, ``--probes`` probe turns one after the other measure the time to first
  token through the bridge (and as many by direct gRPC, to tell the bridge's load from the engine's). The level
  at which the bridge probes' median reaches twice the median with no streams open is the figure asked for.
  Between levels the bench waits for the events stream's per-turn consumers to expire (the embedded nats-server
  caps a stream at 1000 consumers).

Run: ``python -m bench.bench_web [--pairs 40] [--levels 1,2,4,8,16,32,64,128] [--json results.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import httpx2 as httpx

from bench.common import int_list, load_average, percentile, positive_int, run_header
from salon.bridge import SseDecoder, mint_page_link
from salon.engine import Config, Engine
from salon.storage.jetstream.client import close_connection, connect
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc
from salon.v1 import session_pb2

CANCEL = session_pb2.DISCONNECT_POLICY_CANCEL


@dataclass
class Stats:
    """Times to first token of one path, in ms."""

    samples: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """Median, p90 and count."""
        return {
            "median_ms": round(statistics.median(self.samples), 2) if self.samples else math.nan,
            "p90_ms": round(percentile(self.samples, 90), 2),
            "n": len(self.samples),
        }


class Paths:
    """The two ways to a turn's first token: direct gRPC and the web bridge."""

    def __init__(self, engine: Engine, channel: grpc.aio.Channel, http: httpx.AsyncClient) -> None:
        self.engine = engine
        self.stub = cs_grpc.ConversationServiceStub(channel)  # type: ignore[no-untyped-call]
        self.http = http

    async def link(self) -> tuple[str, str]:
        """A new session and a token for it."""
        link = await mint_page_link(self.engine.target, self.engine.web_url)
        return link.session_id, link.token

    async def grpc_ttft(self, session_id: str) -> float:
        """Request → first delta by direct gRPC, in ms; the turn is then dropped (and so cancelled)."""
        request = cs_pb2.SendTurnRequest(session_id=session_id, text="probe words", disconnect_policy=CANCEL)
        started = time.perf_counter()
        call = self.stub.SendTurn(request)
        try:
            async for response in call:
                if response.event.HasField("delta"):
                    return (time.perf_counter() - started) * 1000
        finally:
            call.cancel()
        raise RuntimeError("the turn ended without a token")

    async def bridge_ttft(self, session_id: str, token: str, http: httpx.AsyncClient | None = None) -> float:
        """Request → first delta through the bridge (SSE), in ms; the connection is then dropped."""
        started = time.perf_counter()
        async for event in sse_turn(http or self.http, session_id, token):
            if event == "delta":
                return (time.perf_counter() - started) * 1000
        raise RuntimeError("the turn ended without a token")


async def sse_turn(http: httpx.AsyncClient, session_id: str, token: str) -> AsyncIterator[str]:
    """The event kinds of one turn sent through the bridge, as they arrive."""
    body = {"text": "probe words", "disconnectPolicy": "DISCONNECT_POLICY_CANCEL"}
    headers = {"authorization": f"Bearer {token}"}
    async with http.stream("POST", f"/v1/sessions/{session_id}/turns", json=body, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"the bridge answered {response.status_code}: {(await response.aread())[:200]!r}")
        decoder = SseDecoder()
        async for chunk in response.aiter_bytes():
            for message in decoder.feed(chunk):
                yield message.event


async def measure_added(paths: Paths, pairs: int) -> dict[str, Any]:
    """Alternating pairs of turns by the two paths; medians of each and the difference."""
    direct_session, _ = await paths.link()
    bridge_session, token = await paths.link()
    direct, bridged = Stats(), Stats()
    for _ in range(3):  # warm-up: sessions activated, connections open
        await paths.grpc_ttft(direct_session)
        await paths.bridge_ttft(bridge_session, token)
    for i in range(pairs):
        order = [("grpc", direct), ("bridge", bridged)]
        for name, stats in order if i % 2 == 0 else reversed(order):
            ms = await (paths.grpc_ttft(direct_session) if name == "grpc" else paths.bridge_ttft(bridge_session, token))
            stats.samples.append(ms)
    result = {"grpc": direct.summary(), "bridge": bridged.summary()}
    result["added_median_ms"] = round(result["bridge"]["median_ms"] - result["grpc"]["median_ms"], 2)
    return result


class Background:
    """N browser-like streams: each its own HTTP connection, session and token, each one long turn."""

    def __init__(self, paths: Paths, n: int) -> None:
        self.paths = paths
        self.n = n
        self.streaming = 0
        self.failures: list[str] = []
        self.events = 0
        self._all_streaming = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, timeout_s: float) -> None:
        """Open the streams; return once each has its first token."""
        links = await asyncio.gather(*(self.paths.link() for _ in range(self.n)))
        self._tasks = [asyncio.create_task(self._stream(*link)) for link in links]
        await asyncio.wait_for(self._all_streaming.wait(), timeout_s)

    async def _stream(self, session_id: str, token: str) -> None:
        seen_token = False
        try:
            async with httpx.AsyncClient(base_url=self.paths.engine.web_url, timeout=None) as http:
                async for event in sse_turn(http, session_id, token):
                    self.events += 1
                    if event == "delta" and not seen_token:
                        seen_token = True
                        self.streaming += 1
                        if self.streaming == self.n:
                            self._all_streaming.set()
        except Exception as exc:
            self.failures.append(type(exc).__name__)
            self._all_streaming.set()

    async def stop(self) -> None:
        """Drop every stream (the engine cancels their turns)."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def measure_levels(paths: Paths, levels: list[int], probes: int, max_consumers: int) -> list[dict[str, Any]]:
    """Probe TTFT (bridge and gRPC) with 0 and then each level of background streams open."""
    nc = await connect(paths.engine.nats_url, name="bench-web-probe")
    js = nc.jetstream()
    probe_session, probe_token = await paths.link()
    direct_session, _ = await paths.link()
    rows: list[dict[str, Any]] = []
    try:
        for n in [0, *levels]:
            waited = await settle_consumers(js, paths.engine.names.events_stream, max_consumers)
            background = Background(paths, n)
            started = time.perf_counter()
            if n:
                await background.start(timeout_s=120)
            open_s = time.perf_counter() - started
            bridged, direct = Stats(), Stats()
            events_before, window_start = background.events, time.perf_counter()
            for _ in range(probes):
                bridged.samples.append(await paths.bridge_ttft(probe_session, probe_token))
                direct.samples.append(await paths.grpc_ttft(direct_session))
            window = time.perf_counter() - window_start
            rate = (background.events - events_before) / window if window > 0 else 0.0
            await background.stop()
            row = {
                "streams": n,
                "bridge": bridged.summary(),
                "grpc": direct.summary(),
                "background_events_per_s": round(rate),
                "streams_open_s": round(open_s, 2),
                "consumer_wait_s": round(waited, 1),
                "failures": background.failures,
            }
            rows.append(row)
            print(
                f"  {n:4d} streams: bridge TTFT median {row['bridge']['median_ms']:7.1f} ms "
                f"(p90 {row['bridge']['p90_ms']:7.1f}), gRPC {row['grpc']['median_ms']:7.1f} ms; "
                f"{rate:6.0f} background events/s; failures {len(background.failures)}",
                flush=True,
            )
    finally:
        await close_connection(nc)
    return rows


async def settle_consumers(js: Any, stream: str, maximum: int) -> float:
    """Wait (at most 60 s) until the events stream holds at most ``maximum`` consumers; seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < 60:
        if (await js.stream_info(stream)).state.consumer_count <= maximum:
            break
        await asyncio.sleep(1.0)  # consumers expire on the server's clock (30 s of inactivity)
    return time.perf_counter() - started


def doubling(rows: list[dict[str, Any]]) -> int | None:
    """The first level whose bridge TTFT median is at least twice the median with no streams open."""
    baseline = rows[0]["bridge"]["median_ms"]
    return next((r["streams"] for r in rows[1:] if r["bridge"]["median_ms"] >= 2 * baseline), None)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="salon-bench-web-") as data:
        config = Config(
            data_dir=data,
            grpc_port=0,
            web_port=0,
            num_hosts=args.hosts,
            num_shards=args.hosts * 4,
            model_provider="scripted",
            scripted_tokens=args.tokens,
            scripted_token_delay_s=args.token_delay,
            embedding_model="hash",
            long_term_memory=False,
            retrieval_top_k=0,
            log_level="WARNING",
            shutdown_grace_s=2.0,
        )
        async with (
            Engine(config) as engine,
            grpc.aio.insecure_channel(engine.target) as channel,
            httpx.AsyncClient(base_url=engine.web_url, timeout=60.0) as http,
        ):
            paths = Paths(engine, channel, http)
            print(f"engine up: gRPC {engine.target}, bridge {engine.web_url}", flush=True)
            print(f"added TTFT: {args.pairs} alternating pairs", flush=True)
            added = await measure_added(paths, args.pairs)
            print(
                f"  gRPC median {added['grpc']['median_ms']} ms, bridge median {added['bridge']['median_ms']} ms: "
                f"added {added['added_median_ms']} ms",
                flush=True,
            )
            print(f"streams: levels {args.levels}, {args.probes} probes each", flush=True)
            rows = await measure_levels(paths, args.levels, args.probes, args.max_consumers)
    return {"added": added, "streams": rows, "doubles_at_streams": doubling(rows)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=positive_int, default=40, help="gRPC/bridge turn pairs (default 40)")
    parser.add_argument(
        "--levels",
        type=functools.partial(int_list, minimum=1, what="levels"),
        default=[1, 2, 4, 8, 16, 32, 64, 128],
        help="concurrent streams per level (default 1,2,4,8,16,32,64,128)",
    )
    parser.add_argument("--probes", type=positive_int, default=10, help="probe turns per level and path (default 10)")
    parser.add_argument("--tokens", type=positive_int, default=3000, help="tokens per scripted answer (default 3000)")
    parser.add_argument("--token-delay", type=float, default=0.02, help="seconds between tokens (default 0.02)")
    parser.add_argument("--hosts", type=positive_int, default=2, help="session hosts (default 2)")
    parser.add_argument("--max-consumers", type=positive_int, default=300, help="consumer count to wait for")
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args(argv)
    load_before = load_average()
    results = asyncio.run(run(args))
    command = shlex.join(["python", "-m", "bench.bench_web", *(argv if argv is not None else sys.argv[1:])])
    header = run_header(command, load_before, load_average())
    document = {**header, **results}
    print(json.dumps(document, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(document, fh, indent=2)
    failures = sum(len(r["failures"]) for r in results["streams"])
    return 1 if failures else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
