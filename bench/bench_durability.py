"""Benchmark of durability (issue 3): the ledger, the batch writer, activation, memory per session and TTFT.

The issue asks for: writer throughput (turn records/s) and flush latency; the time to activate a session from
storage; memory per live session (aim: at most 20 KiB) and the most live sessions one host holds in 2 GiB;
time to first token with persistence on vs off (aim: within 10%). The sections, in the order they run:

engine    Context: a whole Salon engine (Ray hosts, batch writer actor, gRPC gateway) and the bare gRPC-NATS
          relay of bench.bench_turns, at 1 session (64 scripted tokens, 2 warm-up + 20 measured turns). Gives
          the end-to-end TTFT now, the RSS of a real host process (a Ray actor) and the writer's counters.
memory    A child process (clean heap) builds N live SessionActors (default 10,000) the way a host holds them:
          a state of 40 window messages of 200 characters (20 turns), the ids of the last 64 turns, a 200
          character system prompt, the session's ledger handle, in a dict keyed by session. RSS growth and
          tracemalloc per session, a breakdown by part, and the sessions that fit in 2 GiB after the host
          process's own RSS.
activation Sessions with 0, 20, 200 and 219 prior turns in a real ledger (a snapshot every 20 turns, as the
          engine saves them; 219 leaves 19 records after the last snapshot to replay). Times the registry read,
          NatsJournal.open (latest snapshot, the records after it, the fencing marker) and SessionState.restore,
          p50/p99 over every session and 3 rounds; then a cold first turn (the host activates the session)
          against the next, warm turn, through an in-process SessionHost and the engine's Gateway.
ttft      Turns through the engine's Gateway, the real bus (JetStream) and an in-process SessionHost, which
          differ only in the session journal: "off" InMemoryJournal, "on" NatsJournal (the ledger append before
          the terminal event), "on+writer" NatsJournal with a BatchWriter draining the ledger into LanceDB in a
          child process (as the WriterActor does). 1 and 16 concurrent sessions; each variant runs in blocks
          of 1.2 s, rotated over 3 cycles so each takes every position (drift on a shared machine hits all
          alike), each (variant, concurrency) on a namespace of its own. Also the bare SessionActor (no bus)
          with each journal, in alternating blocks of 50 turns.
writer    N realistic turn records (default 320 sessions x 60 turns = 19,200: 200 characters of user text, a
          1,024 character reply in 64 deltas, 20 context turn ids) plus a snapshot every 20 turns, appended
          through NatsJournal/SessionLog to a real ledger. Then, for flush_rows 128, 512 and 2048, a fresh
          durable consumer and a fresh LanceDB directory: a BatchWriter(LedgerReader, TranscriptStore) with the
          engine's settings (flush_interval 1 s, optimize every 50 flushes, the WriterActor's session check)
          runs until store.count shows every record. Reports rows/s, the writer's own flush time (last_flush_ms
          at every flush) and the LanceDB write time per flush, p50/p99. Baseline in the same run: raw
          TranscriptStore.write of the same records in the same batches, without the ledger.

idle      (only when asked for) Turns of one session after random idle gaps of 0-2 s on a host with one
          shard: shows turns held by the host's fetch after its shard sat idle (up to the 1 s fetch timeout).

Everything but the engine section runs on one embedded nats-server (sync_interval: always, as the engine's)
in a temporary directory; every section tears down what it started, and the run checks that no child
process is left. Before it starts, the run waits (up to --quiet-wait seconds) for any pytest run on the
machine (or another bench.bench_* run) to finish, and it prints the load average before and after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import functools
import gc
import hashlib
import json
import logging
import math
import os
import platform
import random
import shlex
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from google.protobuf.timestamp_pb2 import Timestamp
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext

from bench.bench_turns import (
    PROMPT,
    LevelResult,
    System,
    TurnFailed,
    TurnFn,
    TurnTiming,
    descendants,
    engine_system,
    relay_system,
    run_level,
    still_running,
)
from bench.common import int_list, load_average, percentile, positive_int, run_header
from salon.actors.events import TurnEvent
from salon.actors.host import HostSettings, SessionHost
from salon.actors.session import LocalInFlight, SessionActor, SessionKey, SessionSettings, SessionState, Turn
from salon.actors.wire import event_to_proto
from salon.engine.config import Config
from salon.engine.gateway import Gateway
from salon.engine.nats_server import EmbeddedNats
from salon.providers import ScriptedProvider
from salon.storage import Journal, Names, NotFound, SessionLog, SnapshotRecord, TurnRecord, incarnation_of, uuid7
from salon.storage.inmemory import InMemoryJournal
from salon.storage.jetstream.bus import BusSettings, EventPublisher, ShardPuller, TurnPublisher, ensure_bus
from salon.storage.jetstream.client import close_connection, connect
from salon.storage.jetstream.ledger import (
    LedgerReader,
    LedgerSettings,
    NatsJournal,
    _NatsSessionLog,  # the per-session handle NatsJournal.open returns (memory section)
    ensure_ledger,
)
from salon.storage.jetstream.sessions import KvSessionRegistry
from salon.storage.tables import TranscriptStore
from salon.storage.writer import BatchWriter
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import session_pb2

log = logging.getLogger("bench.durability")

SECTIONS = ("engine", "memory", "activation", "ttft", "writer", "idle")
DEFAULT_SECTIONS = SECTIONS[:-1]
"""``idle`` (about a minute of mostly waiting) runs only when asked for."""
TENANT = "bench"
TOKENS = 64
"""Tokens per scripted answer, as in bench_turns."""
WINDOW = 40
"""Messages a session keeps (the engine's default window_max_messages)."""
SNAPSHOT_EVERY = 20
"""The engine's default snapshot_every_turns."""
USER_CHARS = 200
REPLY_CHARS = 1024
DELTA_CHARS = REPLY_CHARS // TOKENS
MESSAGE_CHARS = 200
"""Characters of each window message in the memory section."""
SYSTEM_PROMPT_CHARS = 200
CONTEXT_IDS = 20
"""Turn ids in a record's context_turn_ids (a full window of 40 messages is 20 turns)."""
RECENT_TURNS = 64
"""actors.session.RECENT_TURNS_KEPT: the ids a long-lived session remembers."""
MEMORY_AIM_BYTES = 20 * 1024
HOST_BUDGET_BYTES = 2 * 1024**3
TTFT_AIM = 1.10
ACTIVATIONS_PER_MINUTE = 900
"""NatsJournal.open leaves a pull consumer on the ledger stream for 60 s and nats-server 2.15 refuses a
stream's 1,001st consumer: more opens than this in the activation section would fail (an engine limit)."""
TRACED_SESSIONS = 2_000
"""Sessions built under tracemalloc (the RSS figure uses all of them)."""
FLUSH_SIZES = (128, 512, 2048)
WRITER_DEADLINE_S = 180.0
_CORPUS_WORDS = (
    "the a of and to in is that it for on with as was be at by this from or an are not have but they which one you "
    "were all we when there can been has more if will would about what so into time only other some could these two "
    "may then first any like now over such our many most also after well where through years much before good very "
    "session ledger writer snapshot answer question river mountain garden window letter music quiet bright"
)
_WORDS = _CORPUS_WORDS.split()
REPO_ROOT = Path(__file__).resolve().parent.parent
"""Where ``python -m bench.bench_durability`` runs its child processes from."""


# --- shared helpers -----------------------------------------------------------------------------------------


def _ms(seconds: float) -> float:
    return seconds * 1e3


def _fmt(value: float, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}{suffix}"


def _p(values: Sequence[float], q: float) -> float:
    """Percentile ``q`` of ``values`` in milliseconds (values in seconds)."""
    return _ms(percentile(values, q))


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of ``pid`` from /proc (0 where it cannot be read)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def running_test_suites() -> list[int]:
    """pids of test suites and benchmarks on the machine (pytest, ``-m bench.``) outside this process tree:
    other people's work on a shared machine, which would skew the figures."""
    mine = {os.getpid(), *descendants(os.getpid())}
    found: list[int] = []
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in mine:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"pytest" in cmdline or b"bench.bench_" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def tree_state() -> str:
    """The commit and a digest of uncommitted changes of the repository (others may edit it meanwhile)."""

    def git(*argv: str) -> bytes:
        try:
            return subprocess.run(["git", *argv], check=False, cwd=REPO_ROOT, capture_output=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return b""

    head = git("rev-parse", "--short", "HEAD").decode().strip() or "unknown"
    diff = git("diff", "HEAD") + git("ls-files", "--others", "--exclude-standard")
    changed = len([line for line in git("status", "--porcelain").decode().splitlines() if line.strip()])
    digest = hashlib.sha256(diff).hexdigest()[:12]
    return f"commit {head}, {changed} uncommitted paths (digest {digest})" if changed else f"commit {head}, clean"


async def wait_for_quiet(limit_s: float) -> str:
    """Wait up to ``limit_s`` for other test suites to finish; returns a note for the report."""
    pids = running_test_suites()
    if not pids:
        return "no other test suite or benchmark was running at the start"
    print(f"a test suite or benchmark is running (pids {pids}); waiting up to {limit_s:.0f} s", flush=True)
    started = time.monotonic()
    while pids and time.monotonic() - started < limit_s:
        await asyncio.sleep(2.0)
        pids = running_test_suites()
    waited = time.monotonic() - started
    if pids:
        return f"another test suite or benchmark still ran after waiting {waited:.0f} s (pids {pids})"
    return f"waited {waited:.0f} s for another test suite or benchmark to finish before starting"


class TextSource:
    """Slices of a long random text of common words: realistic, cheap, and every slice a new string object."""

    def __init__(self, seed: int, size: int = 1 << 18) -> None:
        self.rng = random.Random(seed)
        words: list[str] = []
        length = 0
        while length < size:
            word = self.rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        self.corpus = " ".join(words)

    def text(self, chars: int) -> str:
        """``chars`` characters of text."""
        start = self.rng.randrange(0, len(self.corpus) - chars)
        return self.corpus[start : start + chars]


def make_turn_record(
    texts: TextSource, *, session_id: str, incarnation: str, index: int, turn_id: str, context: Sequence[str]
) -> TurnRecord:
    """A turn record as a completed 64-token turn leaves it (about 3.6 KB of JSON)."""
    reply = texts.text(REPLY_CHARS)
    now = time.time_ns()
    return TurnRecord(
        tenant_id=TENANT,
        session_id=session_id,
        turn_id=turn_id,
        incarnation=incarnation,
        turn_index=index,
        status="completed",
        user_text=texts.text(USER_CHARS),
        reply_text=reply,
        deltas=tuple(reply[i : i + DELTA_CHARS] for i in range(0, REPLY_CHARS, DELTA_CHARS)),
        stop_reason="end_turn",
        input_tokens=300 * (len(context) + 1),
        output_tokens=TOKENS,
        provider="scripted",
        model="scripted",
        trace_id=f"{texts.rng.getrandbits(128):032x}",
        enqueued_at_ns=now - 4_000_000,
        started_at_ns=now - 3_500_000,
        first_token_at_ns=now - 3_000_000,
        completed_at_ns=now,
        context_turn_ids=tuple(context[-CONTEXT_IDS:]),
    )


def snapshot_of(session_id: str, state: SessionState) -> SnapshotRecord:
    """The snapshot SessionActor.save_snapshot would append for ``state``."""
    return SnapshotRecord(
        tenant_id=TENANT,
        session_id=session_id,
        incarnation=state.incarnation,
        turn_index=state.turn_count,
        ledger_seq=state.ledger_seq,
        state=state.to_dict(),
        created_at_ns=time.time_ns(),
    )


async def define_session(registry: KvSessionRegistry, session_id: str) -> str:
    """Store a session definition as CreateSession does; returns its incarnation."""
    now = time.time_ns()
    session = session_pb2.Session(
        session_id=session_id, create_time=Timestamp(seconds=now // 1_000_000_000, nanos=now % 1_000_000_000)
    )
    await registry.create(TENANT, session)
    return incarnation_of(session)


Entry = TurnRecord | SnapshotRecord | None
"""What one ledger entry carried, in append order (None: an activation marker)."""


async def populate_session(
    journal: NatsJournal,
    session_id: str,
    incarnation: str,
    turns: int,
    texts: TextSource,
    *,
    append_s: list[float] | None = None,
    entries: list[Entry] | None = None,
) -> None:
    """Give a session ``turns`` recorded turns through the real ledger path (open, append, snapshot every 20)."""
    loaded, session_log = await journal.open(TENANT, session_id, incarnation, holder="bench-loader")
    if entries is not None:
        entries.append(None)
    state = SessionState.restore(loaded, incarnation, WINDOW)
    ids: list[str] = []
    for index in range(1, turns + 1):
        turn_id = uuid7()
        record = make_turn_record(
            texts, session_id=session_id, incarnation=incarnation, index=index, turn_id=turn_id, context=ids
        )
        started = time.perf_counter()
        stored = await session_log.append_turn(record)
        if append_s is not None:
            append_s.append(time.perf_counter() - started)
        if entries is not None:
            entries.append(stored)
        ids.append(turn_id)
        state.apply(stored, WINDOW)
        if state.turn_count % SNAPSHOT_EVERY == 0:
            snapshot = snapshot_of(session_id, state)
            await session_log.save_snapshot(snapshot)
            if entries is not None:
                entries.append(snapshot)


@contextlib.asynccontextmanager
async def nats_server(root: Path) -> AsyncIterator[tuple[EmbeddedNats, str]]:
    """An embedded nats-server (the engine's settings) under ``root``."""
    server = EmbeddedNats(root / "nats")
    url = await server.start()
    try:
        yield server, url
    finally:
        await server.close()


class _NoStore:
    """Stands in for the gateway's TranscriptStore: the turn path never reads or writes the tables."""


NO_STORE = cast(TranscriptStore, _NoStore())


@dataclass
class Rig:
    """One namespace on the shared server: bus and ledger streams, a SessionHost and the engine's Gateway."""

    names: Names
    gateway: Gateway
    host: SessionHost
    registry: KvSessionRegistry
    client_js: JetStreamContext


@contextlib.asynccontextmanager
async def bus_rig(
    url: str, client_nc: NatsClient, namespace: str, *, persist: bool, shards: int = 4
) -> AsyncIterator[Rig]:
    """A host (its own NATS connection, as a host process has) and a gateway on ``namespace``.

    ``persist``: the host records turns in the ledger (NatsJournal) or in memory (InMemoryJournal).
    """
    names = Names(namespace)
    js = client_nc.jetstream()
    await ensure_bus(js, names, BusSettings(num_shards=shards))
    await ensure_ledger(js, names, LedgerSettings())
    host_nc = await connect(url, name=f"bench-host-{namespace}")
    try:
        host_js = host_nc.jetstream()
        journal: Journal = NatsJournal(host_js, names) if persist else InMemoryJournal()
        host = SessionHost(
            name=f"bench-host-{namespace}",
            pullers=[ShardPuller(host_nc, names, shard) for shard in range(shards)],
            events=EventPublisher(host_nc, names),
            registry=await KvSessionRegistry.open(host_js, names),
            journal=journal,
            provider=ScriptedProvider(tokens=TOKENS),
            settings=HostSettings(snapshot_every_turns=SNAPSHOT_EVERY, window_max_messages=WINDOW),
        )
        await host.start()
        try:
            registry = await KvSessionRegistry.open(js, names)
            gateway = Gateway(
                Config(namespace=namespace, num_shards=shards, num_hosts=1),
                TurnPublisher(client_nc, names),
                registry,
                NatsJournal(js, names) if persist else journal,
                NO_STORE,
            )
            yield Rig(names, gateway, host, registry, js)
        finally:
            await host.close()
    finally:
        await close_connection(host_nc)


class GatewaySystem(System):
    """Turns through the engine's Gateway (no gRPC): publish on the bus, the host answers, events back."""

    def __init__(self, name: str, gateway: Gateway) -> None:
        super().__init__()
        self.name = name
        self.gateway = gateway
        self.turns_sent = 0

    async def new_loop(self) -> TurnFn:
        """A new session and its turn function."""
        session = await self.gateway.create_session(TENANT, cs_pb2.CreateSessionRequest())
        return self.turn_fn(session.session_id)

    def turn_fn(self, session_id: str) -> TurnFn:
        """Timed turns of ``session_id``: request → first delta, request → terminal event."""

        async def turn(text: str) -> TurnTiming:
            self.turns_sent += 1
            request = cs_pb2.SendTurnRequest(session_id=session_id, text=text)
            started = time.perf_counter()
            sent_ns = time.time_ns()
            first: float | None = None
            accepted_ns = 0
            phases: dict[str, float] = {}
            count = 0
            outcome = ""
            async for event in self.gateway.send_turn(TENANT, request, trace_headers={}):
                kind = event.WhichOneof("kind")
                if kind == "delta":
                    if first is None:
                        first = time.perf_counter()
                        # The host stamps its events with the wall clock; it runs in this process.
                        emitted_ns = event.time.ToNanoseconds()
                        phases["to_accepted"] = (accepted_ns - sent_ns) / 1e9
                        phases["accepted_to_delta"] = (emitted_ns - accepted_ns) / 1e9
                        phases["delta_delivery"] = (time.time_ns() - emitted_ns) / 1e9
                    count += 1
                elif kind == "accepted":
                    accepted_ns = event.time.ToNanoseconds()
                elif kind == "error":
                    raise TurnFailed(f"error event {event.error.reason}: {event.error.message}")
                elif kind in ("completed", "cancelled"):
                    outcome = kind
            ended = time.perf_counter()
            if outcome != "completed" or first is None or count != TOKENS:
                raise TurnFailed(f"turn ended {outcome or 'without a terminal event'} after {count} deltas")
            return TurnTiming(first - started, ended - started, count, phases)

        return turn


# --- section: engine context --------------------------------------------------------------------------------


async def section_engine(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """bench_turns' relay and engine at 1 session, the real host and writer processes' RSS, the writer's status."""
    out: dict[str, Any] = {}
    async with relay_system(TOKENS, tmp / "relay", 30.0, False) as relay:
        level = await run_level(relay, 1, args.engine_turns, 2, 30.0)
        out["relay"] = level.summary()
    started = time.perf_counter()
    async with engine_system(TOKENS, tmp / "engine", 2, False) as system:
        out["start_s"] = time.perf_counter() - started
        level = await run_level(system, 1, args.engine_turns, 2, 30.0)
        out["engine"] = level.summary()
        engine = cast(Any, system).engine
        await engine.writer.flush()
        out["writer_status"] = dict(await engine.writer.status())
        out["host_rss"] = [rss_bytes(info["pid"]) for info in engine.hosts.info]
        out["writer_rss"] = rss_bytes((await engine.writer.started())["pid"])
        out["gateway_rss"] = rss_bytes()
        out["host_stats"] = await engine.hosts.stats()
        pids = system.pids
    out["leftover_pids"] = still_running(pids)
    return out


def render_engine(out: dict[str, Any]) -> str:
    """The engine section as text."""
    engine, relay = out["engine"], out["relay"]
    status = out["writer_status"]
    lines = [
        "| system | turns | errors | TTFT p50 ms | TTFT p99 ms | turn p50 ms | turn p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, s in (("relay", relay), ("engine", engine)):
        lines.append(
            f"| {name} | {s['turns_ok']} | {s['errors']} | {_fmt(s['ttft_p50_ms'])} | {_fmt(s['ttft_p99_ms'])} "
            f"| {_fmt(s['latency_p50_ms'])} | {_fmt(s['latency_p99_ms'])} |"
        )
    lines += [
        "",
        f"engine/relay TTFT p50 at 1 session: {_fmt(_ratio(engine['ttft_p50_ms'], relay['ttft_p50_ms']), suffix='x')}"
        f" (turn p50 {_fmt(_ratio(engine['latency_p50_ms'], relay['latency_p50_ms']), suffix='x')})",
        f"RSS of the engine's processes: host actors {', '.join(f'{b / 2**20:.0f} MiB' for b in out['host_rss'])}; "
        f"writer actor {out['writer_rss'] / 2**20:.0f} MiB; this process (gateway, client) "
        f"{out['gateway_rss'] / 2**20:.0f} MiB",
        f"writer after a flush: healthy={status['healthy']}, {status['flushed_rows']} rows in {status['flushes']} "
        f"flushes, last flush {status['last_flush_ms']:.1f} ms, failures {status['failures']}",
        f"engine start {out['start_s']:.1f} s; processes left after teardown: {out['leftover_pids'] or 'none'}",
    ]
    return "\n".join(lines)


# --- section: memory per live session (runs in a child process) ---------------------------------------------


def build_live_sessions(count: int, turns_seen: int, texts: TextSource) -> dict[SessionKey, SessionActor]:
    """``count`` idle session actors as a host holds them after ``turns_seen`` turns each.

    The state is built by SessionState.apply from turn records, as activation builds it; turns older than the
    window get empty texts (apply drops their messages anyway), so only the kept window carries text.
    """
    provider = ScriptedProvider(tokens=TOKENS)
    journal = NatsJournal(cast(JetStreamContext, None), Names())
    sessions: dict[SessionKey, SessionActor] = {}
    seq = 1_000_000
    for _ in range(count):
        key = SessionKey(TENANT, uuid7())
        settings = SessionSettings(
            system_prompt=texts.text(SYSTEM_PROMPT_CHARS), window_max_messages=WINDOW, snapshot_every_turns=20
        )
        state = SessionState(incarnation=str(time.time_ns()))
        for index in range(1, turns_seen + 1):
            seq += 3
            kept = index > turns_seen - WINDOW // 2
            user, reply = (texts.text(MESSAGE_CHARS), texts.text(MESSAGE_CHARS)) if kept else ("", "")
            record = TurnRecord(
                tenant_id=TENANT,
                session_id=key.session_id,
                turn_id=uuid7(),
                incarnation=state.incarnation,
                turn_index=index,
                status="completed",
                user_text=user,
                reply_text=reply,
                ledger_seq=seq,
            )
            state.apply(record, WINDOW)
        ledger: SessionLog = _NatsSessionLog(journal, key.tenant_id, key.session_id, seq + 1)
        sessions[key] = SessionActor(key, settings, state, provider, ledger)
    return sessions


def session_breakdown(actor: SessionActor) -> dict[str, int]:
    """Bytes of one session's parts, by sys.getsizeof (objects shared between parts counted once)."""
    state = actor.state
    message_ids = {id(m.turn_id) for m in state.messages}
    text = sum(sys.getsizeof(m.text) for m in state.messages)
    messages = sys.getsizeof(state.messages) + sum(sys.getsizeof(m) for m in state.messages)
    message_turn_ids = sum(sys.getsizeof(t) for t in {id(m.turn_id): m.turn_id for m in state.messages}.values())
    recent = sys.getsizeof(state.recent) + sum(
        (0 if id(k) in message_ids else sys.getsizeof(k)) + sys.getsizeof(v) for k, v in state.recent.items()
    )
    return {
        "window_text": text,
        "window_messages": messages,
        "window_turn_ids": message_turn_ids,
        "recent_turns_map": recent,
        "system_prompt": sys.getsizeof(actor.settings.system_prompt),
        "recent_entries": len(state.recent),
        "window_entries": len(state.messages),
    }


def memory_child(count: int) -> dict[str, Any]:
    """Measure ``count`` live sessions in this (fresh) process by RSS, and up to 2,000 (per-session figures
    do not depend on the count; tracing every allocation is slow) by tracemalloc; returns the figures."""
    texts = TextSource(seed=7)
    gc.collect()
    baseline = rss_bytes()
    traced_count = min(count, TRACED_SESSIONS)
    out: dict[str, Any] = {"sessions": count, "traced_sessions": traced_count, "baseline_rss": baseline}
    sessions = build_live_sessions(count, RECENT_TURNS, texts)
    gc.collect()
    out["rss_per_session"] = (rss_bytes() - baseline) / count
    out["breakdown"] = session_breakdown(next(iter(sessions.values())))
    del sessions
    gc.collect()
    for label, turns_seen in (("long", RECENT_TURNS), ("twenty", 20)):
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        sessions = build_live_sessions(traced_count, turns_seen, texts)
        gc.collect()
        out[f"traced_per_session_{label}"] = (tracemalloc.get_traced_memory()[0] - before) / traced_count
        if label == "twenty":
            out["breakdown_twenty"] = session_breakdown(next(iter(sessions.values())))
        del sessions
        gc.collect()
        tracemalloc.stop()
    return out


async def section_memory(args: argparse.Namespace, host_rss: int | None) -> dict[str, Any]:
    """Run the memory child and derive the sessions that fit in 2 GiB."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.bench_durability",
        "--child",
        "memory",
        "--sessions",
        str(args.sessions),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=300)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"the memory child exited with {proc.returncode}")
    out: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    out["host_rss"] = host_rss
    base = host_rss or out["baseline_rss"]
    out["base_for_capacity"] = base
    out["base_source"] = "the engine's host actor process" if host_rss else "the child's RSS after imports"
    out["fit_in_2gib_rss"] = int((HOST_BUDGET_BYTES - base) // out["rss_per_session"])
    out["fit_in_2gib_traced"] = int((HOST_BUDGET_BYTES - base) // out["traced_per_session_long"])
    return out


def render_memory(out: dict[str, Any]) -> str:
    """The memory section as text."""
    b, b20 = out["breakdown"], out["breakdown_twenty"]
    traced, traced20 = out["traced_per_session_long"], out["traced_per_session_twenty"]
    named = ("window_text", "window_messages", "window_turn_ids", "recent_turns_map", "system_prompt")
    rest, rest20 = traced - sum(b[k] for k in named), traced20 - sum(b20[k] for k in named)
    lines = [
        f"{out['sessions']:,} idle sessions in a fresh process for RSS, {out['traced_sessions']:,} under tracemalloc "
        f"(40 window messages of {MESSAGE_CHARS} characters, {SYSTEM_PROMPT_CHARS}-character system prompt):",
        "",
        "| session | RSS growth / session | tracemalloc / session |",
        "|---|---:|---:|",
        f"| long-lived (≥ 64 turns: 40 messages, 64 recent turn ids) | {out['rss_per_session'] / 1024:.1f} KiB "
        f"| {traced / 1024:.1f} KiB |",
        f"| 20 turns (40 messages, 20 recent turn ids) | – | {traced20 / 1024:.1f} KiB |",
        "",
        "| part (sys.getsizeof) | long-lived | 20 turns |",
        "|---|---:|---:|",
    ]
    labels = {
        "window_text": "window message text (40 str)",
        "window_messages": "Message objects + list",
        "window_turn_ids": "turn ids of the window's messages",
        "recent_turns_map": "recent turn ids → ledger seq (OrderedDict, ids not in the window, ints)",
        "system_prompt": "system prompt str",
    }
    for key, label in labels.items():
        lines.append(f"| {label} | {b[key] / 1024:.1f} KiB | {b20[key] / 1024:.1f} KiB |")
    lines.append(
        f"| the rest (actor, state, settings, key, ledger handle, dict slot; by difference) "
        f"| {rest / 1024:.1f} KiB | {rest20 / 1024:.1f} KiB |"
    )
    lines += [
        "",
        f"RSS of a fresh process after this benchmark's imports (ray, lancedb, nats, grpc): "
        f"{out['baseline_rss'] / 2**20:.0f} MiB; RSS of the engine's real host actor: "
        + (f"{out['host_rss'] / 2**20:.0f} MiB" if out["host_rss"] else "not measured (engine section skipped)"),
        f"live sessions in 2 GiB after {out['base_for_capacity'] / 2**20:.0f} MiB ({out['base_source']}): "
        f"{out['fit_in_2gib_rss']:,} by RSS growth, {out['fit_in_2gib_traced']:,} by tracemalloc",
    ]
    return "\n".join(lines)


# --- section: activation ------------------------------------------------------------------------------------


class TimedJetStream:
    """A JetStreamContext that times the calls NatsJournal.open makes: the latest snapshot (get_last_msg),
    the pull consumer that reads the records (pull_subscribe) and the fencing marker (publish). Everything else
    is passed through."""

    def __init__(self, inner: JetStreamContext) -> None:
        self._inner = inner
        self.seconds: dict[str, float] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _timed(self, label: str, call: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        try:
            return await call
        finally:
            self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - started

    async def get_last_msg(self, *args: Any, **kwargs: Any) -> Any:
        """Timed as ``snapshot``."""
        return await self._timed("snapshot", self._inner.get_last_msg(*args, **kwargs))

    async def pull_subscribe(self, *args: Any, **kwargs: Any) -> Any:
        """Timed as ``consumer``."""
        return await self._timed("consumer", self._inner.pull_subscribe(*args, **kwargs))

    async def publish(self, *args: Any, **kwargs: Any) -> Any:
        """Timed as ``marker``."""
        return await self._timed("marker", self._inner.publish(*args, **kwargs))


async def section_activation(args: argparse.Namespace, url: str, client_nc: NatsClient) -> dict[str, Any]:
    """Activation from the ledger at several history lengths, then cold vs warm first turns through a host."""
    texts = TextSource(seed=11)
    out: dict[str, Any] = {"classes": {}}
    async with bus_rig(url, client_nc, "act", persist=True) as rig:
        journal = NatsJournal(rig.client_js, rig.names)
        timed_js = TimedJetStream(rig.client_js)
        timed_journal = NatsJournal(cast(JetStreamContext, timed_js), rig.names)
        sessions: dict[int, list[tuple[str, str]]] = {}
        started = time.perf_counter()
        for turns in args.activation_turns:
            sessions[turns] = []
            for _ in range(args.activation_sessions):
                created = await rig.gateway.create_session(TENANT, cs_pb2.CreateSessionRequest())
                sessions[turns].append((created.session_id, incarnation_of(created)))
        append_s: list[float] = []
        await asyncio.gather(
            *(
                populate_session(journal, sid, inc, turns, texts, append_s=append_s)
                for turns, group in sessions.items()
                for sid, inc in group
            )
        )
        out["populate_s"] = time.perf_counter() - started
        out["populate_appends"] = len(append_s)
        # Classes interleaved (session i of every class, then i + 1), so drift over time hits them alike.
        parts = ("registry", "open", "snapshot", "consumer", "marker", "restore", "total")
        timing: dict[int, dict[str, list[float]]] = {t: {part: [] for part in parts} for t in sessions}
        replayed: dict[int, list[int]] = {t: [] for t in sessions}
        snapshot_bytes: dict[int, list[int]] = {t: [] for t in sessions}
        for _ in range(args.activation_rounds):
            for index in range(args.activation_sessions):
                for turns, group in sessions.items():
                    sid = group[index][0]
                    t0 = time.perf_counter()
                    definition = await rig.registry.get(TENANT, sid)
                    t1 = time.perf_counter()
                    current = incarnation_of(definition)
                    timed_js.seconds.clear()
                    loaded, _ledger = await timed_journal.open(TENANT, sid, current, holder="bench-activator")
                    t2 = time.perf_counter()
                    for part in ("snapshot", "consumer", "marker"):
                        timing[turns][part].append(timed_js.seconds.get(part, 0.0))
                    state = SessionState.restore(loaded, current, WINDOW)
                    t3 = time.perf_counter()
                    if state.turn_count != turns:
                        raise RuntimeError(f"restored {state.turn_count} turns, expected {turns}")
                    for name, seconds in (("registry", t1 - t0), ("open", t2 - t1), ("restore", t3 - t2)):
                        timing[turns][name].append(seconds)
                    timing[turns]["total"].append(t3 - t0)
                    replayed[turns].append(len(loaded.turns))
                    snapshot_bytes[turns].append(len(loaded.snapshot.to_json()) if loaded.snapshot else 0)
        system = GatewaySystem("act", rig.gateway)
        cold: dict[int, list[TurnTiming]] = {t: [] for t in sessions}
        warm: dict[int, list[TurnTiming]] = {t: [] for t in sessions}
        for index in range(args.activation_sessions):
            for turns, group in sessions.items():
                turn = system.turn_fn(group[index][0])
                cold[turns].append(await turn(PROMPT))
                warm[turns].append(await turn(PROMPT))
        for turns in sessions:
            out["classes"][turns] = {
                "samples": len(timing[turns]["total"]),
                "timing": timing[turns],
                "replayed": max(replayed[turns]),
                "snapshot_bytes": max(snapshot_bytes[turns]),
                "cold_ttft": [t.ttft_s for t in cold[turns]],
                "warm_ttft": [t.ttft_s for t in warm[turns]],
                "cold_turn": [t.latency_s for t in cold[turns]],
                "warm_turn": [t.latency_s for t in warm[turns]],
            }
        out["host_stats"] = rig.host.stats()
    return out


def render_activation(out: dict[str, Any]) -> str:
    """The activation section as text."""
    lines = [
        f"Populating the ledger: {out['populate_appends']:,} turn appends (+ snapshots) in {out['populate_s']:.1f} s.",
        "",
        "| prior turns | records replayed | snapshot KiB | samples | registry get p50 | journal.open p50 | open p99 "
        "| restore p50 | total p50 ms | total p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for turns, c in out["classes"].items():
        t = c["timing"]
        lines.append(
            f"| {turns} | {c['replayed']} | {c['snapshot_bytes'] / 1024:.1f} | {c['samples']} "
            f"| {_fmt(_p(t['registry'], 50))} | {_fmt(_p(t['open'], 50))} | {_fmt(_p(t['open'], 99))} "
            f"| {_fmt(_p(t['restore'], 50), 3)} | {_fmt(_p(t['total'], 50))} | {_fmt(_p(t['total'], 99))} |"
        )
    lines += [
        "",
        "journal.open by step, p50 ms: the latest snapshot (a direct get), creating the pull consumer that reads the "
        "records after it, reading them (consumer info, fetch, unsubscribe; by difference), the fencing marker "
        "(a JetStream publish, fsynced):",
        "",
        "| prior turns | snapshot get | create consumer | read records | append marker |",
        "|---:|---:|---:|---:|---:|",
    ]
    for turns, c in out["classes"].items():
        t = c["timing"]
        read = [
            o - s - c_ - m for o, s, c_, m in zip(t["open"], t["snapshot"], t["consumer"], t["marker"], strict=True)
        ]
        lines.append(
            f"| {turns} | {_fmt(_p(t['snapshot'], 50))} | {_fmt(_p(t['consumer'], 50))} | {_fmt(_p(read, 50))} "
            f"| {_fmt(_p(t['marker'], 50))} |"
        )
    lines += [
        "",
        "First turn on a host that has not activated the session (cold) vs the next turn (warm), through the "
        "Gateway, the bus and an in-process SessionHost (ms):",
        "",
        "| prior turns | sessions | cold TTFT p50 | cold TTFT p99 | warm TTFT p50 | warm TTFT p99 | cold − warm p50 "
        "| cold turn p50 | warm turn p50 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for turns, c in out["classes"].items():
        cold50, warm50 = _p(c["cold_ttft"], 50), _p(c["warm_ttft"], 50)
        lines.append(
            f"| {turns} | {len(c['cold_ttft'])} | {_fmt(cold50)} | {_fmt(_p(c['cold_ttft'], 99))} | {_fmt(warm50)} "
            f"| {_fmt(_p(c['warm_ttft'], 99))} | {_fmt(cold50 - warm50)} | {_fmt(_p(c['cold_turn'], 50))} "
            f"| {_fmt(_p(c['warm_turn'], 50))} |"
        )
    return "\n".join(lines)


# --- section: TTFT with persistence on vs off ---------------------------------------------------------------


class WriterChild:
    """A BatchWriter in a child process (as the WriterActor runs it), on one namespace's ledger."""

    def __init__(self, url: str, namespace: str, lancedb_dir: Path) -> None:
        self.url = url
        self.namespace = namespace
        self.lancedb_dir = lancedb_dir
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start the child and wait until its writer consumes the ledger."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.bench_durability",
            "--child",
            "writer",
            "--nats-url",
            self.url,
            "--namespace",
            self.namespace,
            "--lancedb",
            str(self.lancedb_dir),
            cwd=REPO_ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        line = await self._line(60.0)
        if line.get("ready") is not True:
            raise RuntimeError(f"the writer child did not start: {line}")

    async def _line(self, timeout_s: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        raw = await asyncio.wait_for(self.proc.stdout.readline(), timeout_s)
        if not raw:
            raise RuntimeError("the writer child exited")
        parsed: dict[str, Any] = json.loads(raw)
        return parsed

    async def status(self) -> dict[str, Any]:
        """The writer's status and the rows in its tables."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"status\n")
        await self.proc.stdin.drain()
        return await self._line(30.0)

    async def wait_stored(self, turns: int, limit_s: float) -> dict[str, Any]:
        """Poll until ``turns`` turn rows are stored (or ``limit_s`` passes); the last status."""
        deadline = time.monotonic() + limit_s
        while True:
            status = await self.status()
            if status["transcripts"] >= turns or time.monotonic() > deadline:
                return status
            await asyncio.sleep(0.1)

    async def close(self) -> dict[str, Any]:
        """Stop the child (its writer flushes what it holds); its final status."""
        proc, self.proc = self.proc, None
        if proc is None:
            return {}
        final: dict[str, Any] = {}
        try:
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.close()
            raw = await asyncio.wait_for(proc.stdout.read(), 30.0)
            lines = raw.decode().strip().splitlines()
            final = json.loads(lines[-1]) if lines else {}
            await asyncio.wait_for(proc.wait(), 10.0)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return final


async def writer_child(url: str, namespace: str, lancedb: str) -> None:
    """The writer child's body: a BatchWriter set up as WriterActor does; commands on stdin, replies on stdout."""
    names = Names(namespace)
    nc = await connect(url, name="bench-writer-child")
    try:
        js = nc.jetstream()
        registry = await KvSessionRegistry.open(js, names)

        async def session_exists(tenant_id: str, session_id: str, incarnation: str) -> bool:
            try:
                session = await registry.get(tenant_id, session_id)
            except NotFound:
                return False
            return incarnation_of(session) == incarnation

        store = await TranscriptStore.open(lancedb)
        source = LedgerReader(js, names)
        writer = BatchWriter(source, store, session_exists=session_exists)
        await writer.start()

        async def report(**extra: Any) -> None:
            status = dict(writer.status())
            status["transcripts"] = await store.count("transcripts")
            status["snapshots"] = await store.count("snapshots")
            print(json.dumps({**status, **extra}), flush=True)

        print(json.dumps({"ready": True}), flush=True)
        reader = asyncio.StreamReader()
        loop = asyncio.get_running_loop()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if line.strip() == b"status":
                await report()
        await writer.close()
        await source.close()
        await report(closed=True)
        await store.close()
    finally:
        await close_connection(nc)


@dataclass
class ActorTimings:
    """Turns of a bare SessionActor: submit → first delta, → terminal event, → acknowledged."""

    ttft_s: list[float] = field(default_factory=list)
    terminal_s: list[float] = field(default_factory=list)
    done_s: list[float] = field(default_factory=list)


async def actor_turns(actor: SessionActor, turns: int, timings: ActorTimings | None) -> None:
    """Run ``turns`` turns one after another on ``actor`` with a sink that timestamps the events."""
    for _ in range(turns):
        marks: dict[str, float] = {}
        finished = asyncio.Event()

        async def sink(event: TurnEvent, marks: dict[str, float] = marks) -> None:
            kind = event_to_proto(event).WhichOneof("kind")  # converted as the host does before publishing
            if kind == "delta" and "first" not in marks:
                marks["first"] = time.perf_counter()
            elif kind in ("completed", "error", "cancelled"):
                marks["terminal"] = time.perf_counter()
                marks["completed"] = float(kind == "completed")

        async def done(finished: asyncio.Event = finished) -> None:
            finished.set()

        started = time.perf_counter()
        await actor.submit(LocalInFlight(Turn(uuid7(), PROMPT), sink, done))
        await asyncio.wait_for(finished.wait(), 10.0)
        ended = time.perf_counter()
        if not marks.get("completed") or "first" not in marks:
            raise TurnFailed("a bare actor turn did not complete with an answer")
        if timings is not None:
            timings.ttft_s.append(marks["first"] - started)
            timings.terminal_s.append(marks["terminal"] - started)
            timings.done_s.append(ended - started)


async def run_block(level: LevelResult, loops: Sequence[TurnFn], seconds: float) -> None:
    """Every loop runs one unmeasured turn, then turns one after another until ``seconds`` have passed;
    results go to ``level``."""
    # One unmeasured turn per loop first: a host whose shard sat idle can hold the first turn for up to its
    # fetch timeout (see the idle section), which has nothing to do with the journal being compared.
    await asyncio.gather(*(turn(PROMPT) for turn in loops))
    deadline = time.perf_counter() + seconds

    async def drive(turn: TurnFn) -> None:
        while time.perf_counter() < deadline:
            try:
                timing = await asyncio.wait_for(turn(PROMPT), 30.0)
            except Exception as exc:  # a failed turn is a data point, not the end of the run
                level.record_error(exc, warmup=False)
                continue
            level.ttft_s.append(timing.ttft_s)
            level.latency_s.append(timing.latency_s)
            level.tokens += timing.tokens
            for phase, value in (timing.phases or {}).items():
                level.phases.setdefault(phase, []).append(value)

    started = time.perf_counter()
    await asyncio.gather(*(drive(turn) for turn in loops))
    level.window_s += time.perf_counter() - started


async def section_ttft(args: argparse.Namespace, url: str, client_nc: NatsClient, tmp: Path) -> dict[str, Any]:
    """TTFT and turn latency with the session journal off (memory), on (ledger) and on with the writer.

    Each variant runs in blocks of ``--ttft-block`` seconds, rotated over ``--ttft-cycles`` cycles so that
    each takes every position and drift on a shared machine hits all alike. A block is long enough for the
    writer (flush interval 1 s) to flush during the on+writer blocks; after each of those the run waits until
    the writer has stored everything, so its flushes do not spill into the next variant's block.

    Every (variant, concurrency) pair has a namespace (streams) of its own: each turn leaves an ordered
    consumer on the events stream for 30 s, and nats-server 2.15 refuses a stream's 1,001st consumer, so
    more than about 1,000 turns per 30 s on one namespace fail (reported by the run, see RESULTS.md).
    """
    variants = {"off": ("ttoff", False), "on": ("tton", True), "on+writer": ("ttonw", True)}
    order = list(variants)
    results: dict[tuple[str, int], LevelResult] = {}
    blocks: dict[tuple[str, int], list[float]] = {}
    out: dict[str, Any] = {
        "block_s": args.ttft_block,
        "cycles": args.ttft_cycles,
        "turns_sent": {},
        "host_stats": {},
        "writer_final": {},
        "writer_progress": [],
        "events_consumers": {},
    }
    for concurrency in (1, 16):
        async with contextlib.AsyncExitStack() as stack:
            rigs: dict[str, Rig] = {}
            for variant, (prefix, persist) in variants.items():
                context = bus_rig(url, client_nc, f"{prefix}{concurrency}", persist=persist)
                rigs[variant] = await stack.enter_async_context(context)
            systems = {v: GatewaySystem(v, rig.gateway) for v, rig in rigs.items()}
            writer = WriterChild(url, rigs["on+writer"].names.namespace, tmp / f"ttonw{concurrency}-lancedb")
            await writer.start()
            try:
                loops: dict[str, list[TurnFn]] = {}
                for variant, system in systems.items():
                    loops[variant] = list(await asyncio.gather(*(system.new_loop() for _ in range(concurrency))))
                    for _ in range(2):  # warm-up: activation, first consumers
                        await asyncio.gather(*(turn(PROMPT) for turn in loops[variant]))
                    results[(variant, concurrency)] = LevelResult(variant, concurrency, 0)
                await writer.wait_stored(systems["on+writer"].turns_sent, 20.0)
                for cycle in range(args.ttft_cycles):
                    for variant in order[cycle % 3 :] + order[: cycle % 3]:
                        level = results[(variant, concurrency)]
                        before = len(level.ttft_s)
                        await run_block(level, loops[variant], args.ttft_block)
                        blocks.setdefault((variant, concurrency), []).append(_p(level.ttft_s[before:], 50))
                        if variant == "on+writer":
                            status = await writer.wait_stored(systems[variant].turns_sent, 20.0)
                            out["writer_progress"].append(status)
                out["writer_final"][concurrency] = await writer.close()
            finally:
                await writer.close()
            for variant, rig in rigs.items():
                key = f"{variant}@{concurrency}"
                out["turns_sent"][key] = systems[variant].turns_sent
                out["host_stats"][key] = rig.host.stats()
                info = await rig.client_js.stream_info(rig.names.events_stream)
                out["events_consumers"][key] = info.state.consumer_count
    out["levels"] = {f"{v}@{c}": level.summary() for (v, c), level in results.items()}
    out["blocks"] = {f"{v}@{c}": values for (v, c), values in blocks.items()}

    # The bare actor: the same turn with each journal, in alternating blocks.
    names = Names("bare")
    await ensure_ledger(client_nc.jetstream(), names, LedgerSettings())
    nats_journal = NatsJournal(client_nc.jetstream(), names)
    memory_journal = InMemoryJournal()
    actors: dict[str, SessionActor] = {}
    registry = await KvSessionRegistry.open(client_nc.jetstream(), names)
    for label, journal in (("off", memory_journal), ("on", nats_journal)):
        session_id = uuid7()
        incarnation = await define_session(registry, session_id)
        loaded, session_log = await journal.open(TENANT, session_id, incarnation, holder="bench-actor")
        state = SessionState.restore(loaded, incarnation, WINDOW)
        actors[label] = SessionActor(
            SessionKey(TENANT, session_id), SessionSettings(), state, ScriptedProvider(tokens=TOKENS), session_log
        )
    bare: dict[str, ActorTimings] = {"off": ActorTimings(), "on": ActorTimings()}
    for actor in actors.values():
        await actor_turns(actor, 5, None)
    for block in range(args.actor_turns // 50 * 2):
        label = ("off", "on")[block % 2]
        await actor_turns(actors[label], 50, bare[label])
    for actor in actors.values():
        await actor.close()
    out["bare"] = {label: dataclasses.asdict(t) for label, t in bare.items()}
    return out


def render_ttft(out: dict[str, Any]) -> str:
    """The TTFT section as text."""
    levels = out["levels"]
    lines = [
        "Through the Gateway, the JetStream bus and an in-process SessionHost; only the session journal differs "
        f"(ms; {out['cycles']} rotated cycles of {out['block_s']:.1f} s blocks per variant):",
        "",
        "| persistence | sessions | turns | errors | TTFT p50 | TTFT p99 | turn p50 | turn p99 | turns/s "
        "| TTFT p50 vs off | turn p50 vs off | → accepted | accepted → delta | delta delivery |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for concurrency in (1, 16):
        off = levels[f"off@{concurrency}"]
        for variant in ("off", "on", "on+writer"):
            s = levels[f"{variant}@{concurrency}"]
            phases = s["ttft_phases_p50_ms"]
            lines.append(
                f"| {variant} | {concurrency} | {s['turns_ok']} | {s['errors'] + s['warmup_errors']} "
                f"| {_fmt(s['ttft_p50_ms'])} | {_fmt(s['ttft_p99_ms'])} | {_fmt(s['latency_p50_ms'])} "
                f"| {_fmt(s['latency_p99_ms'])} | {_fmt(s['turns_per_s'], 0)} "
                f"| {_fmt(_ratio(s['ttft_p50_ms'], off['ttft_p50_ms']), suffix='x')} "
                f"| {_fmt(_ratio(s['latency_p50_ms'], off['latency_p50_ms']), suffix='x')} "
                f"| {_fmt(phases.get('to_accepted', math.nan))} | {_fmt(phases.get('accepted_to_delta', math.nan))} "
                f"| {_fmt(phases.get('delta_delivery', math.nan))} |"
            )
    lines += ["", "TTFT p50 of each block (ms), in the order they ran, to show the drift:", ""]
    lines += ["| persistence | sessions | blocks |", "|---|---:|---|"]
    for key, values in out["blocks"].items():
        variant, concurrency = key.split("@")
        lines.append(f"| {variant} | {concurrency} | " + ", ".join(_fmt(v) for v in values) + " |")
    lines.append("")
    for concurrency, final in out["writer_final"].items():
        key = f"on+writer@{concurrency}"
        lines.append(
            f"on+writer at {concurrency} session(s): {out['turns_sent'][key]} turns sent; the writer child stored "
            f"{final.get('transcripts')} turn rows and {final.get('snapshots')} snapshots in {final.get('flushes')} "
            f"flushes (healthy={final.get('healthy')}, failures={final.get('failures')})"
        )
    lines.append(
        "ordered consumers left on each namespace's events stream at the end (nats-server 2.15 allows 1,000): "
        + ", ".join(f"{k} {v}" for k, v in out["events_consumers"].items())
    )
    lines += [
        "",
        "The bare SessionActor (no bus; the sink only timestamps), µs:",
        "",
        "| journal | turns | submit → first delta p50 | p99 | → terminal event p50 | p99 | → acknowledged p50 | p99 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, t in out["bare"].items():
        lines.append(
            f"| {label} | {len(t['ttft_s'])} | {_p(t['ttft_s'], 50) * 1e3:.0f} | {_p(t['ttft_s'], 99) * 1e3:.0f} "
            f"| {_p(t['terminal_s'], 50) * 1e3:.0f} | {_p(t['terminal_s'], 99) * 1e3:.0f} "
            f"| {_p(t['done_s'], 50) * 1e3:.0f} | {_p(t['done_s'], 99) * 1e3:.0f} |"
        )
    return "\n".join(lines)


# --- section: writer throughput and flush latency -----------------------------------------------------------


class TimedStore:
    """A RecordStore that times the TranscriptStore's writes and optimizations."""

    def __init__(self, inner: TranscriptStore) -> None:
        self.inner = inner
        self.writes: list[tuple[int, float]] = []
        """(rows, seconds) of every write."""
        self.optimizes: list[float] = []

    async def write(self, turns: Sequence[TurnRecord], snapshots: Sequence[SnapshotRecord]) -> None:
        """Write through, timed."""
        started = time.perf_counter()
        await self.inner.write(turns, snapshots)
        self.writes.append((len(turns) + len(snapshots), time.perf_counter() - started))

    async def optimize(self) -> None:
        """Optimize through, timed."""
        started = time.perf_counter()
        await self.inner.optimize()
        self.optimizes.append(time.perf_counter() - started)


class TimedSource:
    """A LedgerSource that times the LedgerReader's fetches (the writer waits on them between flushes)."""

    def __init__(self, inner: LedgerReader) -> None:
        self.inner = inner
        self.fetch_s: list[float] = []
        self.fetched = 0

    async def fetch(self, batch: int, timeout_s: float) -> Sequence[LedgerReader.Entry]:
        """Fetch through, timed."""
        started = time.perf_counter()
        entries = await self.inner.fetch(batch, timeout_s)
        self.fetch_s.append(time.perf_counter() - started)
        self.fetched += len(entries)
        return entries


@dataclass
class WriterRun:
    """One flush size: the writer through the ledger, and the raw store writes of the same batches."""

    flush_rows: int
    elapsed_s: float = 0.0
    stored_turns: int = 0
    stored_snapshots: int = 0
    flush_ms: list[float] = field(default_factory=list)
    """The writer's own last_flush_ms after every flush (session check, write, acks)."""
    write_s: list[float] = field(default_factory=list)
    optimize_s: list[float] = field(default_factory=list)
    session_checks: int = 0
    fetch_s: float = 0.0
    """Time the writer spent in LedgerReader.fetch (getting and parsing messages from JetStream)."""
    fetches: int = 0
    status: dict[str, Any] = field(default_factory=dict)
    raw_elapsed_s: float = 0.0
    raw_write_s: list[float] = field(default_factory=list)
    raw_optimize_s: list[float] = field(default_factory=list)


async def run_writer(
    js: JetStreamContext,
    *,
    names: Names,
    registry: KvSessionRegistry,
    flush_rows: int,
    lancedb_dir: Path,
    expected: tuple[int, int],
) -> WriterRun:
    """A fresh durable consumer and store; the BatchWriter runs until every record is stored."""
    run = WriterRun(flush_rows)
    with contextlib.suppress(Exception):
        await js.delete_consumer(names.ledger_stream, names.writer_consumer)
    await ensure_ledger(js, names, LedgerSettings())  # the engine's consumer again, from the first entry

    async def session_exists(tenant_id: str, session_id: str, incarnation: str) -> bool:
        # As WriterActor: one registry read per distinct session in a flush.
        run.session_checks += 1
        try:
            session = await registry.get(tenant_id, session_id)
        except NotFound:
            return False
        return incarnation_of(session) == incarnation

    store = await TranscriptStore.open(str(lancedb_dir))
    timed = TimedStore(store)
    reader = LedgerReader(js, names)
    source = TimedSource(reader)
    writer = BatchWriter(source, timed, flush_rows=flush_rows, session_exists=session_exists)
    original_flush = writer.flush

    async def sampled_flush() -> None:
        before = writer.status()["flushes"]
        await original_flush()
        status = writer.status()
        if status["flushes"] > before:
            run.flush_ms.append(status["last_flush_ms"])

    writer.flush = sampled_flush  # type: ignore[method-assign]  # the loop calls self.flush(): sample each
    try:
        started = time.perf_counter()
        await writer.start()
        deadline = started + WRITER_DEADLINE_S
        # The writer's own counter is polled every 10 ms (no I/O, so polling does not slow the writer down);
        # store.count confirms. A LanceDB count every few ms would compete with the writer for the loop.
        while True:
            if writer.status()["flushed_rows"] >= sum(expected) or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.01)
        run.elapsed_s = time.perf_counter() - started
        while True:
            turns = await store.count("transcripts")
            snapshots = await store.count("snapshots")
            if (turns >= expected[0] and snapshots >= expected[1]) or time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.05)
        run.stored_turns, run.stored_snapshots = turns, snapshots
        run.status = dict(writer.status())
    finally:
        await writer.close()
        await reader.close()
        await store.close()
    run.fetch_s, run.fetches = sum(source.fetch_s), len(source.fetch_s)
    run.write_s = [s for _, s in timed.writes]
    run.optimize_s = list(timed.optimizes)
    return run


async def run_raw(entries: Sequence[Entry], flush_rows: int, lancedb_dir: Path, run: WriterRun) -> None:
    """The baseline: TranscriptStore.write of the same records in batches of ``flush_rows`` ledger entries,
    optimizing every 50 writes as the writer does, with no ledger and no writer."""
    store = await TranscriptStore.open(str(lancedb_dir))
    timed = TimedStore(store)
    try:
        started = time.perf_counter()
        for index, begin in enumerate(range(0, len(entries), flush_rows), 1):
            batch = entries[begin : begin + flush_rows]
            await timed.write(
                [e for e in batch if isinstance(e, TurnRecord)], [e for e in batch if isinstance(e, SnapshotRecord)]
            )
            if index % 50 == 0:
                await timed.optimize()
        run.raw_elapsed_s = time.perf_counter() - started
    finally:
        await store.close()
    run.raw_write_s = [s for _, s in timed.writes]
    run.raw_optimize_s = list(timed.optimizes)


async def section_writer(args: argparse.Namespace, client_nc: NatsClient, tmp: Path) -> dict[str, Any]:
    """Append the records through the ledger, then run the writer and the raw baseline at each flush size."""
    names = Names("wr")
    js = client_nc.jetstream()
    await ensure_ledger(js, names, LedgerSettings())
    registry = await KvSessionRegistry.open(js, names)
    journal = NatsJournal(js, names)
    texts = TextSource(seed=5)
    sessions = [(sid, await define_session(registry, sid)) for sid in (uuid7() for _ in range(args.writer_sessions))]
    entries: list[Entry] = []
    append_s: list[float] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(
            populate_session(journal, sid, inc, args.writer_turns, texts, append_s=append_s, entries=entries)
            for sid, inc in sessions
        )
    )
    publish_s = time.perf_counter() - started
    turn_records = [e for e in entries if isinstance(e, TurnRecord)]
    snapshots = [e for e in entries if isinstance(e, SnapshotRecord)]
    out: dict[str, Any] = {
        "entries": len(entries),
        "turn_records": len(turn_records),
        "snapshots": len(snapshots),
        "markers": sum(e is None for e in entries),
        "record_bytes_mean": sum(len(r.to_json()) for r in turn_records[:500]) / min(len(turn_records), 500),
        "snapshot_bytes_mean": sum(len(s.to_json()) for s in snapshots[:100]) / max(min(len(snapshots), 100), 1),
        "publish_s": publish_s,
        "append_s": append_s,
        "concurrency": args.writer_sessions,
        "runs": [],
        "uneven": [f for f in FLUSH_SIZES if len(entries) % f],
    }
    for flush_rows in FLUSH_SIZES:
        run = await run_writer(
            js,
            names=names,
            registry=registry,
            flush_rows=flush_rows,
            lancedb_dir=tmp / f"wr-{flush_rows}",
            expected=(len(turn_records), len(snapshots)),
        )
        await run_raw(entries, flush_rows, tmp / f"raw-{flush_rows}", run)
        out["runs"].append(dataclasses.asdict(run))
        print(
            f"  flush_rows {flush_rows}: writer {len(turn_records) / run.elapsed_s:,.0f} turn rows/s, "
            f"raw {len(turn_records) / run.raw_elapsed_s:,.0f}",
            flush=True,
        )
    return out


def render_writer(out: dict[str, Any]) -> str:
    """The writer section as text."""
    turns = out["turn_records"]
    append = out["append_s"]
    lines = [
        f"{turns:,} turn records (mean {out['record_bytes_mean'] / 1024:.1f} KiB of JSON) + {out['snapshots']:,} "
        f"snapshots (mean {out['snapshot_bytes_mean'] / 1024:.1f} KiB) + {out['markers']} activation markers = "
        f"{out['entries']:,} ledger entries, appended through SessionLog.append_turn by {out['concurrency']} "
        f"sessions at once in {out['publish_s']:.1f} s: {turns / out['publish_s']:,.0f} appends/s, append "
        f"latency p50 {_fmt(_p(append, 50))} ms, p99 {_fmt(_p(append, 99))} ms.",
    ]
    if out["uneven"]:
        lines.append(f"NOTE: the entry count is not a multiple of flush_rows {out['uneven']}: the last flush waited.")
    lines += [
        "",
        "| flush_rows | turn rows/s | entries/s | elapsed s | flushes | flush p50 ms | flush p99 ms "
        "| LanceDB write p50 ms | write p99 ms | optimize (n, s) | registry reads | fetching s "
        "| raw rows/s | writer/raw |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in out["runs"]:
        rate = turns / run["elapsed_s"]
        raw_rate = turns / run["raw_elapsed_s"]
        flush = run["flush_ms"]
        lines.append(
            f"| {run['flush_rows']} | {rate:,.0f} | {out['entries'] / run['elapsed_s']:,.0f} | {run['elapsed_s']:.1f} "
            f"| {len(flush)} | {_fmt(percentile(flush, 50), 1)} | {_fmt(percentile(flush, 99), 1)} "
            f"| {_fmt(_p(run['write_s'], 50), 1)} | {_fmt(_p(run['write_s'], 99), 1)} "
            f"| {len(run['optimize_s'])}, {sum(run['optimize_s']):.1f} | {run['session_checks']:,} "
            f"| {run['fetch_s']:.1f} | {raw_rate:,.0f} | {_fmt(rate / raw_rate, suffix='x')} |"
        )
        if run["stored_turns"] != turns or run["stored_snapshots"] != out["snapshots"]:
            lines.append(
                f"| ^ INCOMPLETE: stored {run['stored_turns']} turns, {run['stored_snapshots']} snapshots "
                "before the deadline | | | | | | | | | | | | | |"
            )
    lines += [
        "",
        "Where the writer's time went (s): fetching from JetStream, flushing (registry reads, LanceDB write, acks), "
        "optimizing, and the rest (decoding JSON into records, the loop):",
        "",
        "| flush_rows | elapsed | fetching | flushing | of which LanceDB write | optimizing | rest |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in out["runs"]:
        flushing = sum(run["flush_ms"]) / 1e3
        optimizing = sum(run["optimize_s"])
        rest = run["elapsed_s"] - run["fetch_s"] - flushing - optimizing
        lines.append(
            f"| {run['flush_rows']} | {run['elapsed_s']:.1f} | {run['fetch_s']:.1f} | {flushing:.1f} "
            f"| {sum(run['write_s']):.1f} | {optimizing:.1f} | {rest:.1f} |"
        )
    lines += [
        "",
        "Raw TranscriptStore.write of the same batches (no ledger, no writer), ms:",
        "",
        "| flush_rows | writes | write p50 | write p99 | optimize (n, s) | elapsed s |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for run in out["runs"]:
        lines.append(
            f"| {run['flush_rows']} | {len(run['raw_write_s'])} | {_fmt(_p(run['raw_write_s'], 50), 1)} "
            f"| {_fmt(_p(run['raw_write_s'], 99), 1)} | {len(run['raw_optimize_s'])}, "
            f"{sum(run['raw_optimize_s']):.1f} | {run['raw_elapsed_s']:.1f} |"
        )
    return "\n".join(lines)


# --- section: turns after an idle gap -----------------------------------------------------------------------


async def section_idle(args: argparse.Namespace, url: str, client_nc: NatsClient) -> dict[str, Any]:
    """Turns of one session after random idle gaps of 0-2 s, on a host with one shard (the engine's fetch
    settings: batches of 64, 1 s timeout): how long the host takes to pick up a turn after its shard was idle."""
    rng = random.Random(3)
    samples: list[tuple[float, float, float]] = []
    async with bus_rig(url, client_nc, "idle", persist=True, shards=1) as rig:
        system = GatewaySystem("idle", rig.gateway)
        turn = await system.new_loop()
        await turn(PROMPT)
        for _ in range(args.idle_turns):
            gap = rng.uniform(0.0, 2.0)
            await asyncio.sleep(gap)
            timing = await turn(PROMPT)
            samples.append((gap, timing.ttft_s, (timing.phases or {}).get("to_accepted", math.nan)))
    return {"samples": samples}


def render_idle(out: dict[str, Any]) -> str:
    """The idle section as text."""
    samples = out["samples"]
    ttft = [t for _, t, _ in samples]
    slow = [(g, t, a) for g, t, a in samples if t > 0.1]
    lines = [
        f"{len(samples)} turns, each after an idle gap of 0-2 s, one shard: TTFT p50 {_fmt(_p(ttft, 50))} ms, "
        f"p90 {_fmt(_p(ttft, 90))} ms, p99 {_fmt(_p(ttft, 99))} ms, max {_fmt(max(ttft) * 1e3)} ms; "
        f"{len(slow)} turns over 100 ms:",
        "",
        "| idle gap before s | TTFT ms | of which request → accepted emitted ms |",
        "|---:|---:|---:|",
    ]
    for gap, t, accepted in sorted(slow, key=lambda x: -x[1])[:10]:
        lines.append(f"| {gap:.2f} | {t * 1e3:.1f} | {accepted * 1e3:.1f} |")
    return "\n".join(lines)


# --- the run ------------------------------------------------------------------------------------------------


def verdict(results: dict[str, Any]) -> list[str]:
    """Lines judging the issue's aims."""
    lines: list[str] = []
    memory = results.get("memory")
    if memory:
        per = max(memory["rss_per_session"], memory["traced_per_session_long"])
        lines.append(
            f"aim 'memory per live session ≤ 20 KiB': {'met' if per <= MEMORY_AIM_BYTES else 'NOT met'} "
            f"({memory['rss_per_session'] / 1024:.1f} KiB by RSS, "
            f"{memory['traced_per_session_long'] / 1024:.1f} KiB by tracemalloc, long-lived session; "
            f"{memory['traced_per_session_twenty'] / 1024:.1f} KiB after 20 turns); "
            f"{memory['fit_in_2gib_rss']:,} live sessions in 2 GiB"
        )
    ttft = results.get("ttft")
    if ttft:
        for concurrency in (1, 16):
            off = ttft["levels"][f"off@{concurrency}"]["ttft_p50_ms"]
            for variant in ("on", "on+writer"):
                ratio = _ratio(ttft["levels"][f"{variant}@{concurrency}"]["ttft_p50_ms"], off)
                met = "met" if ratio <= TTFT_AIM else "NOT met"
                lines.append(
                    f"aim 'TTFT with persistence within 10% of without' ({variant} vs off, {concurrency} "
                    f"session{'s' if concurrency > 1 else ''}): {met} ({ratio:.2f}x)"
                )
    writer = results.get("writer")
    if writer:
        for run in writer["runs"]:
            if run["stored_turns"] != writer["turn_records"]:
                lines.append(f"writer at flush_rows {run['flush_rows']}: NOT every record stored before the deadline")
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_durability",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: .venv/bin/python -m bench.bench_durability --json durability.json",
    )
    parser.add_argument(
        "--sections",
        type=_section_list,
        default=list(DEFAULT_SECTIONS),
        metavar="S1,S2",
        help=f"sections to run, among {','.join(SECTIONS)} (default: {','.join(DEFAULT_SECTIONS)}; they run in "
        "that order)",
    )
    parser.add_argument(
        "--sessions", type=positive_int, default=10_000, help="live sessions built in the memory section (10,000)"
    )
    parser.add_argument(
        "--writer-sessions", type=positive_int, default=320, help="sessions appending in the writer section (320)"
    )
    parser.add_argument(
        "--writer-turns",
        type=positive_int,
        default=60,
        help="turns per session in the writer section (60: 320 x (60 turns + 3 snapshots + 1 marker) = 20,480 "
        "ledger entries, a multiple of every flush size, so no flush waits for the 1 s interval)",
    )
    parser.add_argument(
        "--activation-turns",
        type=functools.partial(int_list, minimum=0, what="turn counts"),
        default=[0, 20, 200, 219],
        metavar="N1,N2",
        help="prior turns of the activation section's session classes (default: 0,20,200,219)",
    )
    parser.add_argument(
        "--activation-sessions",
        type=positive_int,
        default=32,
        help=f"sessions per activation class (32; sessions x classes x (rounds + 2) must stay under "
        f"{ACTIVATIONS_PER_MINUTE}: each open leaves a ledger consumer for 60 s and a stream holds 1,000)",
    )
    parser.add_argument("--activation-rounds", type=positive_int, default=3, help="activations timed per session (3)")
    parser.add_argument(
        "--ttft-block", type=float, default=1.2, metavar="S", help="seconds per block in the ttft section (1.2)"
    )
    parser.add_argument(
        "--ttft-cycles", type=positive_int, default=3, help="rotated cycles of blocks in the ttft section (3)"
    )
    parser.add_argument(
        "--actor-turns", type=positive_int, default=300, help="bare-actor turns per journal, in blocks of 50 (300)"
    )
    parser.add_argument(
        "--idle-turns", type=positive_int, default=60, help="turns after an idle gap in the idle section (60)"
    )
    parser.add_argument(
        "--engine-turns", type=positive_int, default=20, help="measured turns in the engine section (20)"
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=600.0,
        metavar="S",
        help="wait up to S seconds for a running pytest or bench.bench_* run to finish before starting (600)",
    )
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write every figure as JSON")
    parser.add_argument("--child", choices=("memory", "writer"), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--nats-url", default="", help=argparse.SUPPRESS)
    parser.add_argument("--namespace", default="", help=argparse.SUPPRESS)
    parser.add_argument("--lancedb", default="", help=argparse.SUPPRESS)
    return parser


def _section_list(raw: str) -> list[str]:
    values = [part.strip() for part in raw.split(",") if part.strip()]
    unknown = [v for v in values if v not in SECTIONS]
    if not values or unknown:
        raise argparse.ArgumentTypeError(f"sections are among {','.join(SECTIONS)}; got {raw!r}")
    return [s for s in SECTIONS if s in values]


class OtherLoad:
    """Samples, once a second, the other test suites and benchmarks running on the machine, per section."""

    def __init__(self) -> None:
        self.section = ""
        self.seen: dict[str, set[int]] = {}
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            pids = running_test_suites()
            if pids:
                self.seen.setdefault(self.section, set()).update(pids)
            await asyncio.sleep(1.0)

    def start(self) -> None:
        """Start sampling in the background."""
        self._task = asyncio.create_task(self._sample(), name="bench-other-load")

    async def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def summary(self) -> dict[str, list[int]]:
        """Section → pids of other runs seen during it."""
        return {section: sorted(pids) for section, pids in self.seen.items()}


@contextlib.contextmanager
def _section(name: str, timings: dict[str, float], other: OtherLoad) -> Iterator[None]:
    print(f"\n== {name} (load {load_average()}) ==", flush=True)
    other.section = name
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = time.perf_counter() - started
        other.section = ""
        print(f"({name}: {timings[name]:.1f} s)", flush=True)


async def bench(args: argparse.Namespace) -> int:
    """Run the requested sections, print the tables and the verdict, write the JSON; return the exit status."""
    began = time.perf_counter()
    command = "python -m bench.bench_durability " + shlex.join(sys.argv[1:])
    print(f"Salon durability benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"command: {command}")
    quiet = await wait_for_quiet(args.quiet_wait)
    tree_before = tree_state()
    print(f"tree: {tree_before}")
    load_before = load_average()
    print(f"{quiet}; load average before: {load_before}", flush=True)
    results: dict[str, Any] = {}
    rendered: dict[str, str] = {}
    timings: dict[str, float] = {}
    other = OtherLoad()
    other.start()
    renderers: dict[str, Callable[[dict[str, Any]], str]] = {
        "engine": render_engine,
        "memory": render_memory,
        "activation": render_activation,
        "ttft": render_ttft,
        "writer": render_writer,
        "idle": render_idle,
    }
    with tempfile.TemporaryDirectory(prefix="salon-durability-") as tmp_name:
        tmp = Path(tmp_name)
        # Ray forks its processes: the engine section runs before this process uses LanceDB.
        if "engine" in args.sections:
            with _section("engine", timings, other):
                results["engine"] = await section_engine(args, tmp)
        if "memory" in args.sections:
            with _section("memory", timings, other):
                host_rss = max(results["engine"]["host_rss"]) if "engine" in results else None
                results["memory"] = await section_memory(args, host_rss)
        server_sections = [s for s in ("activation", "ttft", "writer", "idle") if s in args.sections]
        if server_sections:
            async with nats_server(tmp) as (_server, url):
                client_nc = await connect(url, name="bench-client")
                try:
                    steps: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
                        "activation": lambda: section_activation(args, url, client_nc),
                        "ttft": lambda: section_ttft(args, url, client_nc, tmp),
                        "writer": lambda: section_writer(args, client_nc, tmp),
                        "idle": lambda: section_idle(args, url, client_nc),
                    }
                    for name in server_sections:
                        with _section(name, timings, other):
                            results[name] = await steps[name]()
                finally:
                    await close_connection(client_nc)
    for name in SECTIONS:
        if name in results:
            rendered[name] = renderers[name](results[name])
            print(f"\n### {name}\n")
            print(rendered[name])
    lines = verdict(results)
    print()
    for line in lines:
        print(line)
    left = sorted(descendants(os.getpid()))
    elapsed = time.perf_counter() - began
    load_after = load_average()
    tree_after = tree_state()
    if tree_after != tree_before:
        print(f"NOTE: the working tree changed during the run: now {tree_after}")
    print(f"child processes still running at the end: {left or 'none'}")
    await other.stop()
    overlapping = other.summary()
    for section, pids in overlapping.items():
        print(f"NOTE: another test suite or benchmark ran during {section or 'the gaps'} (pids {pids})")
    print(f"load average after: {load_after}")
    print(f"sections: {', '.join(f'{k} {v:.1f} s' for k, v in timings.items())}; total {elapsed:.1f} s")
    if args.json is not None:
        payload = {
            **run_header(command, load_before, load_after),
            "quiet": quiet,
            "tree": {"before": tree_before, "after": tree_after},
            "overlapping_test_runs": overlapping,
            "results": results,
            "rendered": rendered,
            "verdict": lines,
            "section_s": timings,
            "total_s": elapsed,
            "leftover_pids": left,
        }
        args.json.write_text(json.dumps(payload, indent=1, default=str) + "\n")
        print(f"wrote {args.json}")
    failed = bool(left) or any("NOT every record" in line for line in lines)
    if "engine" in results and (results["engine"]["engine"]["errors"] or results["engine"]["leftover_pids"]):
        failed = True
    if "ttft" in results and any(s["errors"] or s["warmup_errors"] for s in results["ttft"]["levels"].values()):
        failed = True
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the command line and run the benchmark (or one of its child processes)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    opens = args.activation_sessions * len(args.activation_turns) * (args.activation_rounds + 2)
    if "activation" in args.sections and opens > ACTIVATIONS_PER_MINUTE:
        # Each activation leaves a consumer on the ledger stream for 60 s; nats-server 2.15 allows 1,000.
        parser.error(
            f"the activation section would open sessions {opens} times; keep it under {ACTIVATIONS_PER_MINUTE}"
        )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.child == "memory":
        print(json.dumps(memory_child(args.sessions)), flush=True)
        return 0
    if args.child == "writer":
        asyncio.run(writer_child(args.nats_url, args.namespace, args.lancedb))
        return 0
    return asyncio.run(bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
