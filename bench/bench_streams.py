"""Benchmark of the stream controls (issue: cancel, resume, slow readers), in one run.

Three measurements, each on a whole Salon engine (embedded NATS with JetStream, local Ray, session hosts,
gRPC gateway) driven through the generated stubs:

* ``cancel``: the engine's model chain is the Anthropic provider (the real SDK) against the local
  :class:`~salon.providers.fake_servers.FakeAnthropicServer`, which streams a long answer slowly. A turn is
  sent, two deltas are read, then ``CancelTurn`` is sent. Measured from sending ``CancelTurn``: the unary
  call's answer, the fake server seeing the SDK hang up (the upstream stream closed) and the client receiving
  the ``cancelled`` event.
* ``resume``: same engine and slow upstream. A turn is sent, its first ``--resume-after`` events are read,
  the call is dropped (the turn goes on: disconnect policy CONTINUE), and after ``--resume-settle`` seconds
  (so later events already exist) ``ResumeTurn(after_seq=k)`` is timed to its first event (which must be
  ``k + 1``). The turn is then cancelled.
* ``ttft``: a second engine with the scripted provider (``--tokens`` tokens, no delays). ``--sessions``
  client loops on one shared channel send turns back to back for ``--phase-seconds`` per phase; time to
  first token (request sent → first delta received) and turns/s per phase. Phases, in order: ``baseline``;
  ``slow readers`` (``--slow-readers`` extra clients, each on its own channel with BDP probing off so its
  HTTP/2 window stays at 64 KiB, each starts a turn of large deltas, reads one event and never reads again);
  ``baseline again`` (after the slow readers were drained and closed). The ratio slow/baseline of TTFT
  p50/p99 is the figure of the issue's aim; baseline again/baseline shows the run's own noise. The slow
  readers are held stalled until ``stream_write_timeout_s`` + 3 s after they stopped reading, then drained:
  whether the timeout cut them off is read from the gateway's log and from the slow calls' final status.

  Every turn's gateway stream is a JetStream ordered consumer on the events stream that outlives the turn
  by its 30 s inactivity threshold, and the embedded nats-server refuses a stream's 1001st consumer
  (``maximum consumers limit reached``): above ~33 turns/s sustained, new turns fail with NATS_UNAVAILABLE.
  So, unless ``--no-consumer-wait``, each phase first waits until the events stream holds at most
  ``--max-consumers`` consumers, and phases are short (``--phase-seconds``).

Both engines run one after the other in this process (the gateway, the client and the fake server share its
event loop; hosts and nats-server are their own processes). Every child process is checked after teardown.
The exit status is 1 when any measured operation failed, else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.bench_turns import descendants, still_running
from bench.common import load_average, non_negative_int, percentile, positive_int, run_header
from salon.engine.app import Engine
from salon.engine.config import Config
from salon.providers import scripted_reply
from salon.providers.fake_servers import FakeAnthropicServer, Reply
from salon.storage.jetstream.client import connect
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import conversation_service_pb2_grpc as cs_grpc

log = logging.getLogger("bench.streams")

PROMPT = "the quick brown fox jumps over the lazy dog"
MODEL = "claude-bench"
SLOW_CHANNEL_OPTIONS = (("grpc.http2.bdp_probe", 0),)
"""Slow readers' channels: no BDP probing, so the stream window stays at its initial 64 KiB."""
CUT_OFF_LOG = "stopped reading"
"""Part of the gateway's warning when ``stream_write_timeout_s`` cuts a slow reader off."""


def _ms(values: Sequence[float], q: float) -> float:
    return percentile(values, q) * 1e3


def _fmt(value: float, digits: int = 2, suffix: str = "") -> str:
    return "n/a" if math.isnan(value) else f"{value:.{digits}f}{suffix}"


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _reason(error: grpc.aio.AioRpcError) -> str:
    """``CODE reason`` of a failed call (the reason from the ``salon-error-reason`` trailer)."""
    reason = ""
    for key, value in error.trailing_metadata() or ():
        if key == "salon-error-reason":
            reason = str(value)
    return f"{error.code().name} {reason}".strip()


def _retry_after_s(error: grpc.aio.AioRpcError) -> float:
    """The engine's retry hint (``salon-retry-after-ms``) of a failed call; 1 s without one."""
    for key, value in error.trailing_metadata() or ():
        if key == "salon-retry-after-ms":
            with contextlib.suppress(ValueError):
                return int(str(value)) / 1e3
    return 1.0


def _counts(items: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        out[item] = out.get(item, 0) + 1
    return out


class _CutOffCounter(logging.Handler):
    """Counts the gateway's "stopped reading" warnings (one per slow reader cut off), with their times."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.times: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Note the time of every cut-off warning."""
        if CUT_OFF_LOG in record.getMessage():
            self.times.append(time.perf_counter())


# --- engines ----------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running_engine(config: Config) -> AsyncIterator[tuple[Engine, grpc.aio.Channel, float]]:
    """Start an engine and a channel to it; yields (engine, channel, start seconds); tears both down."""
    engine = Engine(config)
    try:
        started = time.perf_counter()
        await engine.start()
        start_s = time.perf_counter() - started
        async with grpc.aio.insecure_channel(engine.target) as channel:
            await asyncio.wait_for(channel.channel_ready(), 10)
            yield engine, channel, start_s
    finally:
        await engine.close()


async def _session(stub: cs_grpc.ConversationServiceStub) -> str:
    response = await stub.CreateSession(cs_pb2.CreateSessionRequest(), timeout=10)
    return str(response.session.session_id)


def _send(stub: cs_grpc.ConversationServiceStub, session_id: str, text: str) -> Any:
    request = cs_pb2.SendTurnRequest(session_id=session_id, text=text, idempotency_key=uuid.uuid4().hex)
    return stub.SendTurn(request)


# --- cancel -----------------------------------------------------------------------------------------------


@dataclass
class CancelResult:
    """Cancel latencies (seconds) and failures."""

    ack_s: list[float] = field(default_factory=list)
    upstream_s: list[float] = field(default_factory=list)
    event_s: list[float] = field(default_factory=list)
    upstream_finished: int = 0
    """Upstream answers that ran to their end (the cancel did not close them): should be 0."""
    errors: list[str] = field(default_factory=list)


async def _read_until(call: Any, kind: str, timeout_s: float) -> float:
    """Read ``call`` until an event of ``kind``; the time it arrived (perf_counter)."""
    async with asyncio.timeout(timeout_s):
        while True:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise RuntimeError(f"stream ended without a {kind} event")
            if response.event.WhichOneof("kind") == kind:
                return time.perf_counter()


async def _deltas(call: Any, count: int, timeout_s: float) -> str:
    """Read ``call`` until ``count`` deltas came; the turn id."""
    turn_id = ""
    seen = 0
    async with asyncio.timeout(timeout_s):
        while seen < count:
            response = await call.read()
            if response is grpc.aio.EOF:
                raise RuntimeError(f"stream ended after {seen} deltas")
            turn_id = response.event.turn_id
            kind = response.event.WhichOneof("kind")
            if kind == "delta":
                seen += 1
            elif kind in ("error", "completed", "cancelled"):
                raise RuntimeError(f"turn ended ({kind}) after {seen} deltas")
    return turn_id


async def measure_cancels(
    stub: cs_grpc.ConversationServiceStub, server: FakeAnthropicServer, count: int, warmup: int
) -> CancelResult:
    """``warmup`` unmeasured then ``count`` measured cancels, one after the other, each on a new session."""
    result = CancelResult()
    for i in range(warmup + count):
        measured = i >= warmup
        call = None
        try:
            session_id = await _session(stub)
            before = len(server.requests)
            call = _send(stub, session_id, PROMPT)
            turn_id = await _deltas(call, 2, 30)
            recorded = server.requests[before]

            async def upstream_closed(rec: Any = recorded) -> float:
                await rec.disconnected.wait()
                return time.perf_counter()

            closed = asyncio.ensure_future(asyncio.wait_for(upstream_closed(), 30))
            cancelled = asyncio.ensure_future(_read_until(call, "cancelled", 30))
            started = time.perf_counter()
            await stub.CancelTurn(cs_pb2.CancelTurnRequest(session_id=session_id, turn_id=turn_id), timeout=10)
            acked = time.perf_counter()
            closed_at, event_at = await asyncio.gather(closed, cancelled)
            if recorded.finished:
                result.upstream_finished += 1
            if measured:
                result.ack_s.append(acked - started)
                result.upstream_s.append(closed_at - started)
                result.event_s.append(event_at - started)
        except Exception as exc:  # a failed cancel is a data point, not the end of the run
            result.errors.append(f"{'warm-up ' if not measured else ''}{type(exc).__name__}: {exc}")
        finally:
            if call is not None:
                call.cancel()
    return result


# --- resume -----------------------------------------------------------------------------------------------


@dataclass
class ResumeResult:
    """Resume latencies (seconds) and failures."""

    first_s: list[float] = field(default_factory=list)
    wrong_seq: int = 0
    errors: list[str] = field(default_factory=list)


async def measure_resumes(
    stub: cs_grpc.ConversationServiceStub, count: int, warmup: int, after: int, settle_s: float
) -> ResumeResult:
    """``warmup`` unmeasured then ``count`` measured drop-and-resume cycles, each on a new session."""
    result = ResumeResult()
    for i in range(warmup + count):
        measured = i >= warmup
        session_id = turn_id = ""
        resumed = None
        try:
            session_id = await _session(stub)
            call = _send(stub, session_id, PROMPT)
            async with asyncio.timeout(30):
                while True:
                    response = await call.read()
                    if response is grpc.aio.EOF:
                        raise RuntimeError("stream ended before the resume point")
                    turn_id = response.event.turn_id
                    if response.event.seq >= after:
                        break
            call.cancel()  # the client drops the stream; the turn goes on
            await asyncio.sleep(settle_s)
            started = time.perf_counter()
            resumed = stub.ResumeTurn(cs_pb2.ResumeTurnRequest(session_id=session_id, turn_id=turn_id, after_seq=after))
            first = await asyncio.wait_for(resumed.read(), 30)
            got = time.perf_counter()
            if first is grpc.aio.EOF:
                raise RuntimeError("resumed stream ended at once")
            if first.event.seq != after + 1:
                result.wrong_seq += 1
            if measured:
                result.first_s.append(got - started)
        except Exception as exc:  # a failed resume is a data point
            result.errors.append(f"{'warm-up ' if not measured else ''}{type(exc).__name__}: {exc}")
        finally:
            if resumed is not None:
                resumed.cancel()
            if turn_id:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    await stub.CancelTurn(cs_pb2.CancelTurnRequest(session_id=session_id, turn_id=turn_id), timeout=10)
    return result


# --- ttft under slow readers ------------------------------------------------------------------------------


@dataclass
class Phase:
    """One TTFT phase: every measured turn's time to first token, turns/s, failures."""

    name: str
    ttft_s: list[float] = field(default_factory=list)
    window_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    first_error_s: float | None = None
    """Seconds into the phase of its first failed turn."""
    consumers: int = -1
    """Consumers on the engine's events stream at the end of the phase (-1: not read)."""

    def summary(self) -> dict[str, Any]:
        """The reported figures."""
        return {
            "phase": self.name,
            "turns": len(self.ttft_s),
            "errors": len(self.errors),
            "ttft_p50_ms": _ms(self.ttft_s, 50),
            "ttft_p99_ms": _ms(self.ttft_s, 99),
            "turns_per_s": len(self.ttft_s) / self.window_s if self.window_s else math.nan,
            "window_s": self.window_s,
            "errors_by_reason": _counts(self.errors),
            "first_error_s": self.first_error_s,
            "events_stream_consumers": self.consumers,
        }


async def _turn(stub: cs_grpc.ConversationServiceStub, session_id: str, tokens: int, timeout_s: float) -> float:
    """One turn read to its end; its time to first token (raises unless it completed with the scripted answer of
    ``tokens`` tokens: a delta may carry several)."""
    started = time.perf_counter()
    first = math.nan
    count = 0
    text = ""
    outcome = ""
    async with asyncio.timeout(timeout_s):
        async for response in _send(stub, session_id, PROMPT):
            kind = response.event.WhichOneof("kind")
            if kind == "delta":
                if not count:
                    first = time.perf_counter() - started
                count += 1
                text += response.event.delta.text
            elif kind in ("completed", "error", "cancelled"):
                outcome = kind
    if outcome != "completed" or text != "".join(scripted_reply(PROMPT, tokens)):
        raise RuntimeError(f"turn ended {outcome or 'without a terminal event'} after {count} deltas")
    return first


async def run_phase(
    name: str,
    stub: cs_grpc.ConversationServiceStub,
    sessions: Sequence[str],
    *,
    tokens: int,
    seconds: float,
    min_turns: int,
    timeout_s: float,
) -> Phase:
    """Every session sends turns back to back until ``seconds`` passed and it sent ``min_turns``."""
    phase = Phase(name)
    started = time.perf_counter()
    deadline = started + seconds

    async def loop(session_id: str) -> None:
        done = 0
        while done < min_turns or time.perf_counter() < deadline:
            done += 1
            try:
                phase.ttft_s.append(await _turn(stub, session_id, tokens, timeout_s))
            except grpc.aio.AioRpcError as exc:  # a failed turn is a data point; back off as a client would
                phase.errors.append(_reason(exc))
                if phase.first_error_s is None:
                    phase.first_error_s = time.perf_counter() - started
                await asyncio.sleep(_retry_after_s(exc))
            except Exception as exc:
                phase.errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(loop(s) for s in sessions))
    phase.window_s = time.perf_counter() - started
    s = phase.summary()
    print(
        f"    {name}: {s['turns']} turns, {s['errors']} errors {json.dumps(s['errors_by_reason'])}, "
        f"TTFT p50 {_fmt(s['ttft_p50_ms'])} ms p99 {_fmt(s['ttft_p99_ms'])} ms, {_fmt(s['turns_per_s'], 0)} turns/s",
        flush=True,
    )
    return phase


@dataclass
class SlowReader:
    """A client that started a turn of large deltas, read one event and stopped reading."""

    channel: grpc.aio.Channel
    call: Any
    outcome: str = ""
    events_read: int = 1


async def start_slow_readers(target: str, count: int, text: str, failures: list[str]) -> list[SlowReader]:
    """``count`` slow readers, each on its own channel (BDP probing off), each past its first event.

    A turn that fails to start is tried again (up to 3 attempts, 1 s apart); every failure goes to ``failures``.
    """
    readers: list[SlowReader] = []
    for _ in range(count):
        channel = grpc.aio.insecure_channel(target, options=SLOW_CHANNEL_OPTIONS)
        stub = cs_grpc.ConversationServiceStub(channel)  # type: ignore[no-untyped-call]
        for attempt in range(3):
            try:
                session_id = await _session(stub)
                call = _send(stub, session_id, text)
                first = await asyncio.wait_for(call.read(), 30)
            except (grpc.aio.AioRpcError, TimeoutError) as exc:
                reason = _reason(exc) if isinstance(exc, grpc.aio.AioRpcError) else "no first event in 30 s"
                failures.append(f"slow reader start, attempt {attempt + 1}: {reason}")
                await asyncio.sleep(1.0)
                continue
            reader = SlowReader(channel, call)
            if first is grpc.aio.EOF:
                reader.outcome = "ended at once"
            readers.append(reader)
            break
        else:
            await channel.close()
    return readers


async def drain_slow_readers(readers: Sequence[SlowReader], timeout_s: float) -> None:
    """Read every slow reader's stream to its end; note how it ended; close the channels."""

    async def drain(reader: SlowReader) -> None:
        try:
            async with asyncio.timeout(timeout_s):
                while (response := await reader.call.read()) is not grpc.aio.EOF:
                    reader.events_read += 1
                    kind = response.event.WhichOneof("kind")
                    if kind in ("completed", "error", "cancelled"):
                        reader.outcome = kind
            reader.outcome = reader.outcome or "ended without a terminal event"
        except grpc.aio.AioRpcError as exc:
            reader.outcome = _reason(exc)
        except TimeoutError:
            reader.outcome = f"still open after {timeout_s:.0f} s of draining"
            reader.call.cancel()
        finally:
            await reader.channel.close()

    await asyncio.gather(*(drain(r) for r in readers))


@dataclass
class TtftResult:
    """The three phases and what became of the slow readers."""

    phases: list[Phase] = field(default_factory=list)
    slow_outcomes: list[str] = field(default_factory=list)
    slow_start_failures: list[str] = field(default_factory=list)
    slow_events_read: list[int] = field(default_factory=list)
    cut_offs_during_phase: int = 0
    cut_offs_total: int = 0
    first_cut_off_s: float = math.nan
    consumer_waits: dict[str, float] = field(default_factory=dict)
    """Seconds waited before each phase for the events stream's consumers to expire."""
    """Seconds from the slow readers' stop to the first cut-off warning."""
    answer_bytes: int = 0


async def measure_ttft(engine: Engine, channel: grpc.aio.Channel, args: argparse.Namespace) -> TtftResult:
    """Baseline, slow readers, baseline again: each ``--phase-seconds`` of ``--sessions`` turn loops."""
    result = TtftResult()
    stub = cs_grpc.ConversationServiceStub(channel)  # type: ignore[no-untyped-call]
    sessions = await asyncio.gather(*(_session(stub) for _ in range(args.sessions)))
    # Warm-up (unmeasured): every session active on its host, the channel and the hosts warm.
    await run_phase(
        "warm-up", stub, sessions, tokens=args.tokens, seconds=0, min_turns=args.warmup, timeout_s=args.turn_timeout
    )

    nc = await connect(engine.nats_url, name="bench-streams-probe")
    js = nc.jetstream()

    async def consumers() -> int:
        info = await js.stream_info(engine.names.events_stream)
        return int(info.state.consumer_count)

    async def settle_consumers(before: str) -> None:
        """Wait until the per-turn consumers of earlier turns expired (works around the 1000-consumer cap)."""
        if args.no_consumer_wait:
            return
        started = time.perf_counter()
        count = await consumers()
        while count > args.max_consumers and time.perf_counter() - started < 60:
            await asyncio.sleep(1.0)
            count = await consumers()
        waited = time.perf_counter() - started
        result.consumer_waits[before] = waited
        print(f"    waited {waited:.0f} s for the events stream's consumers to fall to {count}", flush=True)

    async def phase(name: str) -> Phase:
        await settle_consumers(name)
        return await run_measured(name)

    async def run_measured(name: str) -> Phase:
        done = await run_phase(
            name,
            stub,
            sessions,
            tokens=args.tokens,
            seconds=args.phase_seconds,
            min_turns=args.min_turns,
            timeout_s=args.turn_timeout,
        )
        with contextlib.suppress(Exception):  # a diagnostic only
            done.consumers = await consumers()
            print(f"    events stream consumers at the end of {name}: {done.consumers}", flush=True)
        return done

    counter = _CutOffCounter()
    servicer_log = logging.getLogger("salon.engine.servicer")
    servicer_log.addHandler(counter)
    try:
        print("  ttft: baseline ...", flush=True)
        result.phases.append(await phase("baseline"))
        words = max(1, (args.slow_text_bytes + 1) // (args.slow_word_bytes + 1))
        text = " ".join(chr(ord("a") + i % 26) * args.slow_word_bytes for i in range(words))
        result.answer_bytes = args.tokens * (args.slow_word_bytes + 1)
        print(f"  ttft: {args.slow_readers} slow readers ...", flush=True)
        await settle_consumers("slow readers (before the readers)")
        readers = await start_slow_readers(engine.target, args.slow_readers, text, result.slow_start_failures)
        print(f"  ttft: {len(readers)} slow readers stopped reading", flush=True)
        stopped = time.perf_counter()
        await asyncio.sleep(args.slow_settle)  # their windows fill and their writes stall
        result.phases.append(await run_measured("slow readers"))
        result.cut_offs_during_phase = len(counter.times)
        # Hold the readers stalled past the write timeout, so whether it cuts them off shows.
        hold = stopped + engine.config.stream_write_timeout_s + 3 - time.perf_counter()
        if hold > 0:
            print(f"  ttft: holding the slow readers {hold:.0f} s more (past the write timeout)", flush=True)
            await asyncio.sleep(hold)
        await drain_slow_readers(readers, args.turn_timeout)
        result.slow_outcomes = [r.outcome for r in readers]
        result.slow_events_read = [r.events_read for r in readers]
        print("  ttft: baseline again ...", flush=True)
        result.phases.append(await phase("baseline again"))
        result.cut_offs_total = len(counter.times)
        if counter.times:
            result.first_cut_off_s = min(counter.times) - stopped
    finally:
        servicer_log.removeHandler(counter)
        await nc.close()
    return result


# --- the run ----------------------------------------------------------------------------------------------


@dataclass
class Run:
    """Everything one run measured."""

    cancel: CancelResult | None = None
    resume: ResumeResult | None = None
    ttft: TtftResult | None = None
    lifecycle: list[dict[str, Any]] = field(default_factory=list)


async def run_provider_engine(args: argparse.Namespace, data_dir: Path, run: Run) -> None:
    """The cancel and resume measurements, on an engine whose model is the fake Anthropic server."""
    delay = args.upstream_token_delay
    tokens = [f"w{i} " for i in range(args.upstream_tokens)]
    server = FakeAnthropicServer(default=lambda body: Reply(tokens=tokens, token_delay_s=delay))
    await server.start()
    try:
        config = Config(
            data_dir=str(data_dir / "provider-engine"),
            grpc_port=0,
            model_provider="scripted",
            model_chain="anthropic",
            anthropic_api_key="test",
            anthropic_model=MODEL,
            anthropic_base_url=server.url,
            num_hosts=args.num_hosts,
        )
        async with running_engine(config) as (_engine, channel, start_s):
            pids = sorted(descendants(os.getpid()))
            stub = cs_grpc.ConversationServiceStub(channel)  # type: ignore[no-untyped-call]
            if args.cancels:
                print(f"  cancel: {args.cancels} cancels ...", flush=True)
                run.cancel = await measure_cancels(stub, server, args.cancels, args.op_warmup)
            if args.resumes:
                print(f"  resume: {args.resumes} resumes ...", flush=True)
                run.resume = await measure_resumes(
                    stub, args.resumes, args.op_warmup, args.resume_after, args.resume_settle
                )
            teardown = time.perf_counter()
    finally:
        await server.close()
    run.lifecycle.append(_lifecycle("provider engine", start_s, time.perf_counter() - teardown, pids))


async def run_scripted_engine(args: argparse.Namespace, data_dir: Path, run: Run) -> None:
    """The TTFT measurement, on an engine with the scripted provider."""
    config = Config(
        data_dir=str(data_dir / "scripted-engine"),
        grpc_port=0,
        model_provider="scripted",
        scripted_tokens=args.tokens,
        scripted_first_token_delay_s=0.0,
        scripted_token_delay_s=0.0,
        num_hosts=args.num_hosts,
    )
    async with running_engine(config) as (engine, channel, start_s):
        pids = sorted(descendants(os.getpid()))
        run.ttft = await measure_ttft(engine, channel, args)
        run.lifecycle.append({"write_timeout_s": config.stream_write_timeout_s})
        teardown = time.perf_counter()
    run.lifecycle.append(_lifecycle("scripted engine", start_s, time.perf_counter() - teardown, pids))


def _lifecycle(name: str, start_s: float, teardown_s: float, pids: Sequence[int]) -> dict[str, Any]:
    return {"engine": name, "start_s": start_s, "teardown_s": teardown_s, "leftover_pids": still_running(pids)}


def render(run: Run, args: argparse.Namespace) -> str:
    """Every table, as Markdown-compatible text."""
    lines: list[str] = []
    rows: list[tuple[str, list[float], int]] = []
    if run.cancel is not None:
        c = run.cancel
        rows += [
            ("cancel: CancelTurn sent → its answer", c.ack_s, len(c.errors)),
            ("cancel: CancelTurn sent → upstream stream closed", c.upstream_s, len(c.errors)),
            ("cancel: CancelTurn sent → `cancelled` event received", c.event_s, len(c.errors)),
        ]
    if run.resume is not None:
        rows.append(("resume: ResumeTurn sent → first resumed event", run.resume.first_s, len(run.resume.errors)))
    if rows:
        lines += ["| measurement | n | failures | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
        for name, values, errors in rows:
            top = max(values) * 1e3 if values else math.nan
            lines.append(
                f"| {name} | {len(values)} | {errors} | {_fmt(_ms(values, 50))} | {_fmt(_ms(values, 99))} "
                f"| {_fmt(top)} |"
            )
        if run.cancel is not None:
            lines.append(f"\nupstream answers that ran to their end despite the cancel: {run.cancel.upstream_finished}")
        if run.resume is not None:
            lines.append(
                f"resumed streams whose first event was not seq {args.resume_after + 1}: {run.resume.wrong_seq}"
            )
    if run.ttft is not None:
        t = run.ttft
        base = t.phases[0].summary() if t.phases else {}
        notes: list[str] = []
        lines += [
            "",
            f"TTFT at {args.sessions} concurrent sessions ({args.tokens} tokens per turn, shared channel):",
            "| phase | turns | errors | TTFT p50 ms | TTFT p99 ms | turns/s | p50 / baseline | p99 / baseline "
            "| turns/s / baseline | first error s | events-stream consumers at end |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for phase in t.phases:
            s = phase.summary()
            lines.append(
                f"| {s['phase']} | {s['turns']} | {s['errors']} | {_fmt(s['ttft_p50_ms'])} "
                f"| {_fmt(s['ttft_p99_ms'])} | {_fmt(s['turns_per_s'], 0)} "
                f"| {_fmt(_ratio(s['ttft_p50_ms'], base['ttft_p50_ms']), suffix='x')} "
                f"| {_fmt(_ratio(s['ttft_p99_ms'], base['ttft_p99_ms']), suffix='x')} "
                f"| {_fmt(_ratio(s['turns_per_s'], base['turns_per_s']), suffix='x')} "
                f"| {'-' if s['first_error_s'] is None else _fmt(s['first_error_s'], 1)} "
                f"| {s['events_stream_consumers']} |"
            )
            if s["errors"]:
                notes.append(f"{s['phase']}: errors by reason {json.dumps(s['errors_by_reason'])}")
        lines += notes
        outcomes: dict[str, int] = {}
        for outcome in t.slow_outcomes:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        lines += [
            "",
            f"slow readers: {args.slow_readers}, each a turn of {args.tokens} deltas of "
            f"{args.slow_word_bytes + 1} bytes ({t.answer_bytes // 1024} KiB), one event read, then none",
            f"stream_write_timeout_s cut-offs (gateway warnings): {t.cut_offs_during_phase} during the slow-reader "
            f"phase, {t.cut_offs_total} in all; first {_fmt(t.first_cut_off_s, 1)} s after the readers stopped",
            f"slow calls' end when finally drained: {json.dumps(outcomes)}; events each read: {t.slow_events_read}",
            f"waits for the per-turn consumers to expire before each phase (s): "
            f"{json.dumps({k: round(v, 1) for k, v in t.consumer_waits.items()})}",
            f"slow reader turns that failed to start (then retried): {len(t.slow_start_failures)} "
            f"{t.slow_start_failures[:3]}",
        ]
    lines.append("")
    for item in run.lifecycle:
        if "engine" in item:
            leftovers = ", ".join(map(str, item["leftover_pids"])) or "none"
            lines.append(
                f"{item['engine']}: start {item['start_s']:.1f} s, teardown {item['teardown_s']:.1f} s, "
                f"processes left after teardown: {leftovers}"
            )
    return "\n".join(lines)


def failures(run: Run) -> list[str]:
    """Every failed measured operation, as text."""
    out: list[str] = []
    if run.cancel is not None:
        out += [f"cancel: {e}" for e in run.cancel.errors]
        if run.cancel.upstream_finished:
            out.append(f"cancel: {run.cancel.upstream_finished} upstream answers ran to their end")
    if run.resume is not None:
        out += [f"resume: {e}" for e in run.resume.errors]
        if run.resume.wrong_seq:
            out.append(f"resume: {run.resume.wrong_seq} resumed at the wrong sequence number")
    if run.ttft is not None:
        for phase in run.ttft.phases:
            out += [f"ttft {phase.name}: {e}" for e in phase.errors]
        out += run.ttft.slow_start_failures
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_streams",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example: .venv/bin/python -m bench.bench_streams --json streams.json",
    )
    add = parser.add_argument
    add("--cancels", type=non_negative_int, default=30, help="measured cancels (0 skips; default: %(default)s)")
    add("--resumes", type=non_negative_int, default=30, help="measured resumes (0 skips; default: %(default)s)")
    add("--op-warmup", type=non_negative_int, default=3, help="unmeasured cancels/resumes first (default: 3)")
    add("--upstream-tokens", type=positive_int, default=400, help="tokens of each fake upstream answer (400)")
    add("--upstream-token-delay", type=float, default=0.02, metavar="S", help="pause between them (0.02 s)")
    add("--resume-after", type=positive_int, default=5, metavar="K", help="events read before the drop (5)")
    add("--resume-settle", type=float, default=0.2, metavar="S", help="pause between drop and resume (0.2 s)")
    add("--no-ttft", action="store_true", help="skip the TTFT measurement (and its engine)")
    add("--sessions", type=positive_int, default=64, help="concurrent sessions of the TTFT phases (64)")
    add("--tokens", type=positive_int, default=64, help="scripted tokens per answer (default: %(default)s)")
    add("--phase-seconds", type=float, default=6.0, metavar="S", help="length of each TTFT phase (6 s)")
    add("--min-turns", type=positive_int, default=3, metavar="N", help="measured turns per session at least (3)")
    add("--warmup", type=non_negative_int, default=1, metavar="N", help="unmeasured turns per session (1)")
    add("--slow-readers", type=non_negative_int, default=8, help="slow readers in the second phase (8)")
    add("--slow-word-bytes", type=positive_int, default=4000, metavar="B", help="size of their words (4000)")
    add("--slow-text-bytes", type=positive_int, default=16000, metavar="B", help="size of their prompt (16000)")
    add("--max-consumers", type=positive_int, default=100, help="consumers allowed before a phase (100)")
    add(
        "--no-consumer-wait",
        action="store_true",
        help="do not wait between phases for the per-turn consumers to expire (shows the 1000-consumer cap)",
    )
    add("--slow-settle", type=float, default=1.0, metavar="S", help="pause before the slow phase (1 s)")
    add("--num-hosts", type=positive_int, default=2, help="engine session hosts (default: %(default)s)")
    add("--turn-timeout", type=float, default=30.0, metavar="S", help="a turn longer than this fails (30 s)")
    add("--json", type=Path, default=None, metavar="PATH", help="also write every figure as JSON")
    return parser


async def bench(args: argparse.Namespace) -> int:
    """Run the measurements, print the tables, write the JSON; return the exit status."""
    began = time.perf_counter()
    command = "python -m bench.bench_streams " + shlex.join(sys.argv[1:])
    print(f"Salon stream-controls benchmark: {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"command: {command}")
    load_before = load_average()
    print(f"load average before: {load_before}")
    run = Run()
    with tempfile.TemporaryDirectory(prefix="salon-bench-streams-") as tmp:
        if args.cancels or args.resumes:
            print("provider engine (Anthropic SDK → local fake server):", flush=True)
            await run_provider_engine(args, Path(tmp), run)
        if not args.no_ttft:
            print("scripted engine:", flush=True)
            await run_scripted_engine(args, Path(tmp), run)
    print()
    print(render(run, args))
    failed = failures(run)
    print()
    print(f"failures: {len(failed)}" + (f", e.g. {failed[:3]}" if failed else ""))
    left = sorted(descendants(os.getpid()))
    print(f"child processes still running at the end: {left or 'none'}")
    load_after = load_average()
    elapsed = time.perf_counter() - began
    print(f"load average after: {load_after}")
    print(f"total {elapsed:.1f} s")
    if args.json is not None:
        payload = {
            **run_header(command, load_before, load_after),
            "cancel": None if run.cancel is None else vars(run.cancel),
            "resume": None if run.resume is None else vars(run.resume),
            "ttft": None
            if run.ttft is None
            else {
                "phases": [p.summary() for p in run.ttft.phases],
                "slow_outcomes": run.ttft.slow_outcomes,
                "slow_start_failures": run.ttft.slow_start_failures,
                "slow_events_read": run.ttft.slow_events_read,
                "cut_offs_during_phase": run.ttft.cut_offs_during_phase,
                "cut_offs_total": run.ttft.cut_offs_total,
                "first_cut_off_s": run.ttft.first_cut_off_s,
            },
            "lifecycle": run.lifecycle,
            "failures": failed,
            "total_s": elapsed,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        print(f"wrote {args.json}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: parse the command line and run the benchmark."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(bench(args))


if __name__ == "__main__":
    raise SystemExit(main())
