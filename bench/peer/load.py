"""The load generator: N sessions in a closed loop, each sending one user message per turn and waiting for
the whole streamed answer before the next. Warm-up turns (not measured) carry every session past the
point where a real conversation leaves the model's window; then every session runs the measured turns,
and the CPU probe is read at the start and the end of that window. Standard library only."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import Protocol

from bench.peer.procs import load_average
from bench.peer.stats import LevelResult

TOPICS = (
    "the tides of the Atlantic",
    "baking sourdough bread",
    "the history of the printing press",
    "how bees find flowers",
    "tuning a bicycle's gears",
    "the rings of Saturn",
    "Portuguese tile painting",
)


def user_message(session: int, turn: int) -> str:
    """The text of one turn: different for every turn, so a memory of earlier turns has something to find."""
    topic = TOPICS[(session + turn) % len(TOPICS)]
    return f"Turn {turn} of conversation {session}: tell me something about {topic}, briefly."


class TurnFailed(Exception):
    """A turn ended without the expected answer."""


class Conversation(Protocol):
    """One session of a system under test."""

    async def turn(self, text: str) -> float:
        """Send ``text``, read the whole streamed answer, return the time to its first token (seconds).

        Raises when the answer is not the expected number of tokens or the turn fails."""
        ...


class Target(Protocol):
    """A running system under test, as the load generator sees it."""

    async def open(self) -> Conversation:
        """A new session."""
        ...

    async def close(self) -> None:
        """Release what the target holds (connections, clients)."""
        ...


def say(text: str) -> None:
    """Progress on stderr (stdout carries the driver's JSON)."""
    print(text, file=sys.stderr, flush=True)


async def _report_progress(label: str, done: Callable[[], int], total: int, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        say(f"  {label}: {done()}/{total} turns")


SETTLED_CPU = 0.05
"""A system has settled once its processes use less than this share of a core over a second."""
SETTLE_LIMIT_S = 60.0


async def settle(cpu_probe: Callable[[], float], *, limit_s: float = SETTLE_LIMIT_S, interval_s: float = 1.0) -> float:
    """Wait until the system's processes are settled (less than ``SETTLED_CPU`` of a core over ``interval_s``:
    a server that answers before its start has ended keeps working for a while), at most ``limit_s``; the
    seconds waited."""
    started = time.perf_counter()
    while time.perf_counter() - started < limit_s:
        before, since = cpu_probe(), time.perf_counter()
        await asyncio.sleep(interval_s)
        if (cpu_probe() - before) / (time.perf_counter() - since) < SETTLED_CPU:
            break
    return time.perf_counter() - started


async def run_level(
    target: Target,
    *,
    system: str,
    sessions: int,
    warmup: int,
    turns: int,
    timeout_s: float,
    cpu_probe: Callable[[], float],
    cpu_scope: str,
    idle_s: float = 0.0,
    breakdown_probe: Callable[[], dict[str, float]] | None = None,
    progress_every_s: float = 10.0,
) -> LevelResult:
    """Read the idle CPU over ``idle_s``, open ``sessions`` sessions, run ``warmup`` unmeasured turns on each,
    then ``turns`` measured ones."""
    result = LevelResult(system, sessions, warmup, turns, cpu_scope=cpu_scope)
    if idle_s > 0:
        result.settle_s = await settle(cpu_probe)
        idle_start, started = cpu_probe(), time.perf_counter()
        await asyncio.sleep(idle_s)
        result.idle_cpu_s, result.idle_window_s = cpu_probe() - idle_start, time.perf_counter() - started
    conversations = await asyncio.gather(*(target.open() for _ in range(sessions)))
    counter = [0]

    async def one(conversation: Conversation, session: int, turn: int, warm: bool) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                ttft = await conversation.turn(user_message(session, turn))
        except TimeoutError:
            result.record_error(TurnFailed(f"no end of answer within {timeout_s} s"), warmup=warm)
        except Exception as exc:  # a failed turn is a data point, not the end of the run
            result.record_error(exc, warmup=warm)
        else:
            if not warm:
                result.ttft_s.append(ttft)
        counter[0] += 1

    async def drive(conversation: Conversation, session: int, first: int, count: int, warm: bool) -> None:
        for turn in range(first, first + count):
            await one(conversation, session, turn, warm)

    async def phase(label: str, first: int, count: int, warm: bool) -> None:
        counter[0] = 0
        total = sessions * count
        reporter = asyncio.create_task(_report_progress(label, lambda: counter[0], total, progress_every_s))
        try:
            await asyncio.gather(*(drive(c, s, first, count, warm) for s, c in enumerate(conversations)))
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter

    await phase("warm-up", 0, warmup, True)
    result.load_before = load_average()
    by_name_start = breakdown_probe() if breakdown_probe else {}
    cpu_start = cpu_probe()
    started = time.perf_counter()
    await phase("measured", warmup, turns, False)
    result.window_s = time.perf_counter() - started
    result.server_cpu_s = cpu_probe() - cpu_start
    if breakdown_probe:
        by_name = breakdown_probe()
        result.cpu_by_process = {k: v - by_name_start.get(k, 0.0) for k, v in sorted(by_name.items())}
    result.load_after = load_average()
    return result
