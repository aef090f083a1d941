"""Benchmark of the action layer (issue 13): what a tool round costs, what a waiting turn holds, and whether
a thousand waiting turns slow the others.

Everything runs against a whole Salon engine (embedded NATS with JetStream, local Ray, session hosts, gRPC
gateway) with the scripted provider, driven through ``salon.client``. The scripted model calls the tool the
message names (``$CALL lookup {"n": 1}``) and, once the result is back, answers with ``--tokens`` tokens.

1. **Tool round overhead**, at each ``--sessions`` level (1 and 16 by default): C sessions, each running
   ``--turns`` turns one after the other (after a warm-up), each turn one tool round answered by a client
   function registered with the Python client (it returns at once, so the figures are the machinery's). Per
   round:

   * *round*: the ``tool_call`` event emitted by the host → the next token received by the client (the
     issue's "call emitted → result submitted → next token"; host and client clocks are the same machine's);
   * *client side*: the ``tool_call`` received → the next token received (one clock);
   * *submit*: the ``SubmitToolResult`` call as the client sees it;
   * *host side*: ``tool_call`` emitted → next token emitted (the host's clock: no delivery);

   and, from the same sessions, the time to first token of a plain turn (no tools), for scale.

2. **Waiting turns** on an engine with **one host**. ``--waiting`` sessions (1,000 by default) are opened and
   each runs one plain turn (so each is live in the host). Then, ``--cycles`` times: ``--ttft-sessions``
   other sessions measure the time to first token of plain turns (``--ttft-turns`` each) with nobody waiting;
   every one of the ``--waiting`` sessions starts a turn whose tool call nobody answers (the client reads up
   to the ``tool_call`` and closes its stream: the turn waits on, with a one-hour deadline); the measuring
   sessions measure again while all of them wait; the waiting turns are cancelled. A last reading with nobody
   waiting closes the series, so the readings with nobody waiting bracket those with everyone waiting (the
   machine may be shared: its load drifts). Before each reading the host and the writer are let go quiet
   (their CPU use below a tenth of a core). The host process's resident memory is read from ``/proc`` with
   the sessions live but idle and at ``--memory-steps`` points as the first cycle's turns start: the slope is
   what one waiting turn holds in the host (the session's own state is in every reading).

Exit status 1 when a measured turn failed or not every waiting turn reached its wait, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import json
import logging
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import int_list, load_average, non_negative_int, percentile, positive_int, run_header
from salon.client import (
    NO_RETRY,
    Completed,
    Delta,
    SalonClient,
    SalonError,
    Session,
    Tool,
    ToolCall,
    tool,
)
from salon.engine.app import Engine
from salon.engine.config import Config

log = logging.getLogger("bench.tools")

PROMPT = "the quick brown fox jumps over the lazy dog"
TOOL_MESSAGE = '$CALL lookup {"n": 7}\nthe answer is $RESULTS'
WAIT_MESSAGE = "$CALL wait_here {}\nnever answered"
WAIT_TIMEOUT_S = 3600.0


@tool
async def lookup(n: int) -> str:
    """Returns its argument (instantly: the benchmark measures the machinery, not the tool)."""
    return str(n)


WAIT_HERE = Tool(name="wait_here", description="A tool nobody answers.", input_schema={"type": "object"})


class TurnFailed(Exception):
    """A measured turn did not go as expected."""


# --- engines ------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_engine(data_dir: Path, tokens: int, num_hosts: int, **overrides: Any) -> AsyncIterator[Engine]:
    """An engine with the scripted provider (``tokens`` tokens, no delays)."""
    settings: dict[str, Any] = {
        "data_dir": str(data_dir),
        "grpc_port": 0,
        "model_provider": "scripted",
        "scripted_tokens": tokens,
        "scripted_first_token_delay_s": 0.0,
        "scripted_token_delay_s": 0.0,
        "num_hosts": num_hosts,
    }
    settings.update(overrides)
    engine = Engine(Config(**settings))
    started = time.perf_counter()
    try:
        await engine.start()
        log.info("engine up in %.1f s", time.perf_counter() - started)
        yield engine
    finally:
        await engine.close()


# --- part 1: tool round overhead ----------------------------------------------------------------------------


@dataclass
class RoundLevel:
    """The rounds measured at one level."""

    sessions: int
    turns_per_session: int
    round_s: list[float] = field(default_factory=list)
    client_side_s: list[float] = field(default_factory=list)
    submit_s: list[float] = field(default_factory=list)
    host_side_s: list[float] = field(default_factory=list)
    plain_ttft_s: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Figures in milliseconds."""

        def ms(values: list[float], q: float) -> float:
            return percentile(values, q) * 1e3

        plain = ms(self.plain_ttft_s, 50)
        return {
            "sessions": self.sessions,
            "rounds": len(self.round_s),
            "errors": len(self.errors),
            "error_samples": self.errors[:5],
            "round_p50_ms": ms(self.round_s, 50),
            "round_p99_ms": ms(self.round_s, 99),
            "client_side_p50_ms": ms(self.client_side_s, 50),
            "client_side_p99_ms": ms(self.client_side_s, 99),
            "submit_p50_ms": ms(self.submit_s, 50),
            "submit_p99_ms": ms(self.submit_s, 99),
            "host_side_p50_ms": ms(self.host_side_s, 50),
            "host_side_p99_ms": ms(self.host_side_s, 99),
            "plain_ttft_p50_ms": plain,
            "plain_ttft_p99_ms": ms(self.plain_ttft_s, 99),
            "round_p50_over_plain_ttft_p50": ms(self.round_s, 50) / plain if plain else math.nan,
        }


async def tool_turn(session: Session, level: RoundLevel | None, timeout_s: float) -> None:
    """One turn with one tool round answered by the client's function; records its timings into ``level``."""
    turn = session.turn(TOOL_MESSAGE, tools=[lookup], timeout_s=timeout_s, retry=NO_RETRY)
    submitted: list[float] = []
    answer = turn.submit_tool_result

    async def timed_submit(call_id: str, result: str) -> bool:
        began = time.perf_counter()
        try:
            return await answer(call_id, result)
        finally:
            submitted.append(time.perf_counter() - began)

    # The turn's tool loop answers through the turn itself: time that call where it happens.
    turn.submit_tool_result = timed_submit  # type: ignore[method-assign]
    call_received: float | None = None
    call_emitted_ns = 0
    async with turn:
        async for event in turn:
            if isinstance(event, ToolCall):
                call_received = time.perf_counter()
                call_emitted_ns = _ns(event.time)
            elif isinstance(event, Delta) and call_received is not None:
                now, now_ns = time.perf_counter(), time.time_ns()
                if level is not None:
                    level.round_s.append((now_ns - call_emitted_ns) / 1e9)
                    level.client_side_s.append(now - call_received)
                    level.host_side_s.append((_ns(event.time) - call_emitted_ns) / 1e9)
                call_received = None
    if not isinstance(turn.final, Completed) or "7" not in turn.text:
        raise TurnFailed(f"tool turn ended {turn.final!r} with {turn.text[:60]!r}")
    if level is not None:
        level.submit_s.extend(submitted)


def _ns(when: Any) -> int:
    return int(when.timestamp() * 1e9) if when is not None else 0


async def plain_turn(session: Session, timeout_s: float) -> float:
    """One turn without tools; its time to first token."""
    turn = session.turn(PROMPT, timeout_s=timeout_s, retry=NO_RETRY)
    async with turn:
        await turn.wait()
    if not isinstance(turn.final, Completed) or turn.time_to_first_token_s is None:
        raise TurnFailed(f"plain turn ended {turn.final!r}")
    return turn.time_to_first_token_s


async def run_round_level(client: SalonClient, sessions: int, turns: int, warmup: int, timeout_s: float) -> RoundLevel:
    """``sessions`` sessions, each ``warmup`` unmeasured then ``turns`` measured tool turns and plain turns."""
    level = RoundLevel(sessions, turns)
    opened = await asyncio.gather(*(client.create_session(tools=[lookup]) for _ in range(sessions)))

    async def drive(session: Session) -> None:
        for i in range(warmup + turns):
            measured = i >= warmup
            try:
                await tool_turn(session, level if measured else None, timeout_s)
                ttft = await plain_turn(session, timeout_s)
                if measured:
                    level.plain_ttft_s.append(ttft)
            except (TurnFailed, SalonError, TimeoutError) as exc:
                level.errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(drive(s) for s in opened))
    return level


# --- part 2: waiting turns ----------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (from /proc), 0 when unknown."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


async def steady_rss(pid: int, samples: int = 5) -> int:
    """The median of a few readings a moment apart (the host's allocator settles after a burst)."""
    readings = []
    for _ in range(samples):
        await asyncio.sleep(0.2)  # wait-ok: spacing between memory readings, not a synchronisation
        readings.append(rss_bytes(pid))
    return int(sorted(readings)[len(readings) // 2])


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` so far (from /proc), 0 when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def wait_quiet(pids: Sequence[int], *, busy_below: float = 0.1, timeout_s: float = 60.0) -> float:
    """Wait until the processes ``pids`` together use less than ``busy_below`` of a core over half a second
    (the host recording a burst of turns, the writer flushing them), or ``timeout_s``; the seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout_s:
        before = sum(cpu_seconds(p) for p in pids)
        await asyncio.sleep(0.5)  # wait-ok: the window CPU use is measured over, not a synchronisation
        if sum(cpu_seconds(p) for p in pids) - before < busy_below * 0.5:
            break
    return time.perf_counter() - started


def slope(points: Sequence[tuple[int, int]]) -> float:
    """Least-squares slope of ``points`` (x, y): bytes per waiting turn from RSS readings at several counts."""
    if len(points) < 2:
        return math.nan
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else math.nan


@dataclass
class WaitingRun:
    """What part 2 measured."""

    waiting: int
    cycles: int
    reached_wait: list[int] = field(default_factory=list)
    start_errors: list[str] = field(default_factory=list)
    ttft_idle_s: list[float] = field(default_factory=list)
    ttft_during_s: list[float] = field(default_factory=list)
    ttft_errors: list[str] = field(default_factory=list)
    host_rss_before_sessions: int = 0
    host_rss_idle: int = 0
    rss_steps: list[tuple[int, int]] = field(default_factory=list)
    """(turns waiting, host RSS) as the first cycle's waiting turns start, from (0, idle)."""
    bench_rss_idle: int = 0
    bench_rss_waiting: int = 0
    start_window_s: list[float] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    quiet_waits_s: list[float] = field(default_factory=list)
    host_stats: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Figures in milliseconds and bytes."""
        idle = percentile(self.ttft_idle_s, 50) * 1e3
        during = percentile(self.ttft_during_s, 50) * 1e3
        last = self.rss_steps[-1] if self.rss_steps else (0, 0)
        return {
            "waiting": self.waiting,
            "cycles": self.cycles,
            "reached_wait": self.reached_wait,
            "start_errors": len(self.start_errors),
            "start_error_samples": self.start_errors[:5],
            "start_window_s": self.start_window_s,
            "ttft_idle_turns": len(self.ttft_idle_s),
            "ttft_idle_p50_ms": idle,
            "ttft_idle_p99_ms": percentile(self.ttft_idle_s, 99) * 1e3,
            "ttft_during_turns": len(self.ttft_during_s),
            "ttft_during_p50_ms": during,
            "ttft_during_p99_ms": percentile(self.ttft_during_s, 99) * 1e3,
            "ttft_p50_during_over_idle": during / idle if idle else math.nan,
            "ttft_errors": len(self.ttft_errors),
            "ttft_error_samples": self.ttft_errors[:5],
            "host_rss_before_sessions_mb": self.host_rss_before_sessions / 2**20,
            "host_rss_idle_mb": self.host_rss_idle / 2**20,
            "host_rss_waiting_mb": last[1] / 2**20,
            "host_rss_steps": self.rss_steps,
            "host_bytes_per_waiting_turn_slope": slope(self.rss_steps),
            "host_bytes_per_waiting_turn_delta": ((last[1] - self.host_rss_idle) / last[0] if last[0] else math.nan),
            "bench_process_rss_delta_mb": (self.bench_rss_waiting - self.bench_rss_idle) / 2**20,
            "cancelled": self.cancelled,
            "quiet_waits_s": self.quiet_waits_s,
            "host_stats": self.host_stats,
        }


async def measure_ttft(
    sessions: Sequence[Session], turns: int, timeout_s: float, into: list[float], errors: list[str]
) -> None:
    """Each session runs ``turns`` plain turns one after the other; times to first token into ``into``."""

    async def drive(session: Session) -> None:
        for _ in range(turns):
            try:
                into.append(await plain_turn(session, timeout_s))
            except (TurnFailed, SalonError, TimeoutError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(drive(s) for s in sessions))


async def start_waiting(session: Session, timeout_s: float) -> str:
    """Start a turn whose tool call nobody answers; read up to the call, then stop reading (the turn waits on:
    disconnect policy ``continue``). Returns the turn id."""
    turn = session.turn(WAIT_MESSAGE, timeout_s=timeout_s, disconnect_policy="continue", retry=NO_RETRY)
    async with turn:
        async for event in turn:
            if isinstance(event, ToolCall):
                return turn.turn_id
            if event.terminal:
                break
    raise TurnFailed(f"the turn ended before its tool call: {turn.final!r}")


class _Waiters:
    """The sessions whose turns wait, and how they are started and stopped."""

    def __init__(self, client: SalonClient, run: WaitingRun, args: argparse.Namespace) -> None:
        self.client = client
        self.run = run
        self.args = args
        self.limit = asyncio.Semaphore(args.start_concurrency)
        self.sessions: list[Session] = []

    async def open(self) -> None:
        """Open the sessions and run one plain turn on each (so each is live before any turn waits)."""

        async def open_and_warm() -> Session | None:
            async with self.limit:
                try:
                    session = await self.client.create_session(
                        tools=[WAIT_HERE], tool_wait_timeout_s=WAIT_TIMEOUT_S, disconnect_policy="continue"
                    )
                    await plain_turn(session, self.args.turn_timeout)
                    return session
                except (TurnFailed, SalonError, TimeoutError) as exc:
                    self.run.start_errors.append(f"warm: {type(exc).__name__}: {exc}")
                    return None

        opened = await asyncio.gather(*(open_and_warm() for _ in range(self.args.waiting)))
        self.sessions = [s for s in opened if s is not None]

    async def start(self, sessions: Sequence[Session]) -> list[tuple[Session, str]]:
        """A waiting turn on each of ``sessions``."""

        async def wait_one(session: Session) -> tuple[Session, str] | None:
            async with self.limit:
                try:
                    return session, await start_waiting(session, self.args.turn_timeout)
                except (TurnFailed, SalonError, TimeoutError) as exc:
                    self.run.start_errors.append(f"wait: {type(exc).__name__}: {exc}")
                    return None

        return [w for w in await asyncio.gather(*(wait_one(s) for s in sessions)) if w]

    async def cancel(self, waiting: Sequence[tuple[Session, str]]) -> int:
        """Cancel the waiting turns; how many the engine took."""

        async def cancel_one(session: Session, turn_id: str) -> bool:
            async with self.limit:
                try:
                    await self.client.cancel_turn(session.id, turn_id, timeout_s=30)
                    return True
                except SalonError:
                    return False

        return sum(await asyncio.gather(*(cancel_one(s, t) for s, t in waiting)))


async def run_waiting(engine: Engine, client: SalonClient, args: argparse.Namespace) -> WaitingRun:
    """Part 2 on a one-host engine: ``--cycles`` times, the measuring sessions' TTFT with nobody waiting, then
    with every waiting session's turn waiting; the host's memory as the first cycle's turns start."""
    run = WaitingRun(args.waiting, args.cycles)
    host_pid = int(engine.hosts.info[0]["pid"])
    busy_pids = [host_pid, int((await engine.writer.started())["pid"])]
    me = os.getpid()
    measured = await asyncio.gather(*(client.create_session() for _ in range(args.ttft_sessions)))
    await measure_ttft(measured, 2, args.turn_timeout, [], [])  # warm-up, not measured

    gc.collect()
    run.host_rss_before_sessions = await steady_rss(host_pid)
    waiters = _Waiters(client, run, args)
    await waiters.open()
    run.quiet_waits_s.append(await wait_quiet(busy_pids))
    run.host_rss_idle = await steady_rss(host_pid)
    run.bench_rss_idle = rss_bytes(me)

    for cycle in range(args.cycles):
        await measure_ttft(measured, args.ttft_turns, args.turn_timeout, run.ttft_idle_s, run.ttft_errors)
        started = time.perf_counter()
        waiting: list[tuple[Session, str]] = []
        steps = max(1, args.memory_steps) if cycle == 0 else 1
        if cycle == 0:
            run.rss_steps.append((0, run.host_rss_idle))
        for step in range(steps):
            part = waiters.sessions[step * len(waiters.sessions) // steps : (step + 1) * len(waiters.sessions) // steps]
            waiting += await waiters.start(part)
            if cycle == 0:
                run.quiet_waits_s.append(await wait_quiet(busy_pids))
                run.rss_steps.append((len(waiting), await steady_rss(host_pid)))
        run.start_window_s.append(time.perf_counter() - started)
        run.reached_wait.append(len(waiting))
        run.quiet_waits_s.append(await wait_quiet(busy_pids))
        if cycle == 0:
            run.bench_rss_waiting = rss_bytes(me)
            run.host_stats = (await engine.hosts.stats())[0]
        await measure_ttft(measured, args.ttft_turns, args.turn_timeout, run.ttft_during_s, run.ttft_errors)
        run.cancelled.append(await waiters.cancel(waiting))
        run.quiet_waits_s.append(await wait_quiet(busy_pids))
    # Once more with nobody waiting, so the idle readings bracket the waiting ones.
    await measure_ttft(measured, args.ttft_turns, args.turn_timeout, run.ttft_idle_s, run.ttft_errors)
    return run


# --- the run ------------------------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if isinstance(value, float) and math.isnan(value) else f"{value:.{digits}f}{suffix}"


def render(levels: Sequence[RoundLevel], waiting: WaitingRun | None) -> str:
    """The results as Markdown tables."""
    lines = [
        "| sessions | rounds | errors | round p50 ms | round p99 ms | client side p50 / p99 ms "
        "| submit p50 / p99 ms | host side p50 / p99 ms | plain TTFT p50 ms | round / plain TTFT |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level in levels:
        s = level.summary()
        lines.append(
            f"| {s['sessions']} | {s['rounds']} | {s['errors']} | {_fmt(s['round_p50_ms'])} "
            f"| {_fmt(s['round_p99_ms'])} | {_fmt(s['client_side_p50_ms'])} / {_fmt(s['client_side_p99_ms'])} "
            f"| {_fmt(s['submit_p50_ms'])} / {_fmt(s['submit_p99_ms'])} "
            f"| {_fmt(s['host_side_p50_ms'])} / {_fmt(s['host_side_p99_ms'])} "
            f"| {_fmt(s['plain_ttft_p50_ms'])} | {_fmt(s['round_p50_over_plain_ttft_p50'], suffix='x')} |"
        )
    if waiting is not None:
        w = waiting.summary()
        lines += [
            "",
            "| waiting turns | cycles | reached the wait | start errors | TTFT p50 / p99 ms, nobody waiting (turns) "
            "| TTFT p50 / p99 ms, all waiting (turns) | p50 ratio waiting / nobody waiting | TTFT errors |",
            "|---:|---:|---|---:|---:|---:|---:|---:|",
            f"| {w['waiting']} | {w['cycles']} | {w['reached_wait']} | {w['start_errors']} "
            f"| {_fmt(w['ttft_idle_p50_ms'])} / {_fmt(w['ttft_idle_p99_ms'])} ({w['ttft_idle_turns']}) "
            f"| {_fmt(w['ttft_during_p50_ms'])} / {_fmt(w['ttft_during_p99_ms'])} ({w['ttft_during_turns']}) "
            f"| {_fmt(w['ttft_p50_during_over_idle'], suffix='x')} | {w['ttft_errors']} |",
            "",
            f"Host process resident memory: {_fmt(w['host_rss_before_sessions_mb'], 1)} MB before the "
            f"{w['waiting']} sessions, {_fmt(w['host_rss_idle_mb'], 1)} MB with them live and idle, "
            f"{_fmt(w['host_rss_waiting_mb'], 1)} MB with every turn waiting; by step (turns waiting: MB) "
            + ", ".join(f"{n}: {rss / 2**20:.1f}" for n, rss in w["host_rss_steps"])
            + f". Per waiting turn: {_fmt(w['host_bytes_per_waiting_turn_slope'] / 1024, 1)} KiB (slope over the "
            f"steps), {_fmt(w['host_bytes_per_waiting_turn_delta'] / 1024, 1)} KiB (idle to all waiting). "
            "Benchmark process (gateway and client) delta while waiting: "
            f"{_fmt(w['bench_process_rss_delta_mb'], 1)} MB. Turns reached their wait in "
            + ", ".join(f"{t:.1f}" for t in w["start_window_s"])
            + f" s per cycle; cancelled afterwards: {w['cancelled']}.",
        ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_tools",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: .venv/bin/python -m bench.bench_tools --json bench_tools.json",
    )
    parser.add_argument(
        "--sessions",
        type=functools.partial(int_list, minimum=1, what="--sessions"),
        default=[1, 16],
        help="concurrency levels of the tool round part (default 1,16)",
    )
    parser.add_argument("--turns", type=positive_int, default=20, help="measured tool turns per session (default 20)")
    parser.add_argument("--warmup", type=non_negative_int, default=2, help="unmeasured turns per session (default 2)")
    parser.add_argument("--tokens", type=positive_int, default=16, help="tokens of each scripted answer (default 16)")
    parser.add_argument("--hosts", type=positive_int, default=2, help="session hosts of the tool round part")
    parser.add_argument("--waiting", type=non_negative_int, default=1000, help="waiting turns (0: skip part 2)")
    parser.add_argument("--ttft-sessions", type=positive_int, default=4, help="sessions measuring TTFT in part 2")
    parser.add_argument("--ttft-turns", type=positive_int, default=20, help="turns per measuring session")
    parser.add_argument(
        "--cycles", type=positive_int, default=2, help="times the waiting turns start and stop (default 2)"
    )
    parser.add_argument(
        "--memory-steps", type=positive_int, default=4, help="steps of the first cycle's memory readings"
    )
    parser.add_argument(
        "--start-concurrency", type=positive_int, default=32, help="waiting turns started at once (default 32)"
    )
    parser.add_argument("--turn-timeout", type=float, default=60.0, help="seconds before a turn counts as failed")
    parser.add_argument("--skip-rounds", action="store_true", help="run part 2 only")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--data-dir", type=Path, default=None, help="data directory (default: a temporary one)")
    return parser


async def run(args: argparse.Namespace, data_dir: Path) -> tuple[list[RoundLevel], WaitingRun | None]:
    """Both parts, each on its own engine."""
    levels: list[RoundLevel] = []
    if not args.skip_rounds:
        async with (
            running_engine(data_dir / "rounds", args.tokens, args.hosts) as engine,
            SalonClient(engine.target) as client,
        ):
            await client.wait_ready(10.0)
            for sessions in args.sessions:
                print(f"  tool rounds: {sessions} sessions x {args.turns} turns ...", end="", flush=True)
                level = await run_round_level(client, sessions, args.turns, args.warmup, args.turn_timeout)
                levels.append(level)
                s = level.summary()
                print(f" round p50 {_fmt(s['round_p50_ms'])} ms, {s['errors']} errors")
    waiting: WaitingRun | None = None
    if args.waiting:
        # One host holds every waiting turn; its limits on running turns must not count waiting ones away.
        async with (
            running_engine(
                data_dir / "waiting",
                args.tokens,
                1,
                max_sessions_per_host=max(10000, 2 * (args.waiting + args.ttft_sessions)),
            ) as engine,
            SalonClient(engine.target) as client,
        ):
            await client.wait_ready(10.0)
            print(f"  waiting turns: {args.waiting} on one host ...", end="", flush=True)
            waiting = await run_waiting(engine, client, args)
            w = waiting.summary()
            print(f" {w['reached_wait']} waiting, TTFT ratio {_fmt(w['ttft_p50_during_over_idle'])}x")
    return levels, waiting


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    command = "python -m bench.bench_tools " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    load_before = load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tools-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        levels, waiting = asyncio.run(run(args, data_dir))
    wall = time.perf_counter() - started
    load_after = load_average()
    print()
    print(render(levels, waiting))
    print(f"\nwall time {wall:.0f} s; load average before {load_before}, after {load_after}")
    failed = any(level.errors for level in levels) or (
        waiting is not None and (any(n < waiting.waiting for n in waiting.reached_wait) or bool(waiting.ttft_errors))
    )
    if args.json is not None:
        document = {
            **run_header(command, load_before, load_after),
            "wall_s": wall,
            "rounds": [level.summary() for level in levels],
            "waiting": waiting.summary() if waiting is not None else None,
        }
        args.json.write_text(json.dumps(document, indent=2, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
