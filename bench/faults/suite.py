"""The fault suite: real engines, real faults, closed-loop clients, and what each fault cost.

One engine (``salon serve`` on a temporary data directory, on a small tmpfs when this process may mount one)
runs every fault in turn, ``runs`` times each, on fresh sessions per run. The model is a protocol-speaking fake
Anthropic server in this process (:mod:`bench.faults.model`), so generations are counted where they are paid
for. After each run the suite reads back every session's history at once, the events the events stream stored
for its turns, and the model's counts; at the end, once the batch writer has caught up, it reads every history
again, stops the engine and counts the transcript rows in LanceDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bench.faults.clients import Channels, Client, Policy, TurnLog, reason_of
from bench.faults.cluster import EngineSettings, Serve, Tmpfs, engine_nats_url, start_serve
from bench.faults.faults import Fault, catalogue
from bench.faults.model import CountingModel, variants_in
from salon.actors.placement import shard_for
from salon.storage import Names
from salon.storage.bus import H_MSG_ID, TurnEnvelope
from salon.storage.jetstream.client import close_connection, connect
from salon.storage.jetstream.events import unpack_events
from salon.storage.jetstream.read import read_subject
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import turn_pb2

log = logging.getLogger("bench.faults")

TENANT = "default"
NAMESPACE = "salon"
NUM_SHARDS = 8
HOSTS = 2


@dataclass(frozen=True)
class Options:
    """How the suite runs."""

    runs: int = 2
    clients: int = 3
    seed: int = 1
    tokens: int = 24
    token_delay_s: float = 0.015
    faults: tuple[str, ...] = ()
    """Faults to run (empty: all)."""
    ack_wait_s: float = 2.0
    write_timeout_s: float = 1.5
    max_turns_per_host: int = 6
    disk_full_s: float = 2.0
    recovery_timeout_s: float = 90.0
    min_turns: int = 2
    """Turns each client completes in a run at least (one of them after the fault)."""
    tmpfs_mb: int = 384
    work_dir: Path | None = None
    keep: bool = False


@dataclass
class FaultResult:
    """What one fault cost over its runs."""

    name: str
    what: str
    survives: str = ""
    skipped: str = ""
    runs: int = 0
    turns: int = 0
    acked: int = 0
    hidden: int = 0
    """Acknowledged turns missing from GetHistory right after the run."""
    lost: int = 0
    """Acknowledged turns missing from GetHistory or the transcript at the end of the suite."""
    dup_history: int = 0
    dup_rows: int = 0
    dup_stored_events: int = 0
    gaps: int = 0
    repeats: int = 0
    contradictions: int = 0
    """Events or history replies that differ from what a client saw under the same sequence number."""
    generations: list[int] = field(default_factory=list)
    """Model requests per turn (acknowledged turns)."""
    restarts: int = 0
    """Generations from the start beyond a turn's first: an attempt died before any of its tokens were stored
    (what it had generated is in ``tokens_paid_twice``)."""
    second_full: int = 0
    """Answers generated in full again although an earlier generation of the turn had streamed to its end and
    some of it was stored: progress a client could have seen, thrown away (must be 0). An earlier generation
    killed before any of its tokens were stored (the engine died before its first store, even if the model had
    already sent everything) is a restart from the start: counted in ``restarts`` and ``tokens_paid_twice``."""
    contradicted_prefills: int = 0
    tokens_paid_twice: int = 0
    recovery_s: list[float] = field(default_factory=list)
    unrecovered: int = 0
    task_errors: int = 0
    """Client or fault tasks that failed (a bug of the suite or an answer it did not expect)."""
    abandoned: int = 0
    failed: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    notes: list[str] = field(default_factory=list)
    suspects: list[dict[str, Any]] = field(default_factory=list)
    """The first turns that broke a promise, in detail (for the JSON)."""
    seconds: float = 0.0

    def row(self) -> dict[str, Any]:
        """The figures, for JSON."""
        gens = self.generations
        return {
            "fault": self.name,
            "what": self.what,
            "skipped": self.skipped,
            "runs": self.runs,
            "turns": self.turns,
            "acknowledged": self.acked,
            "lost": self.lost,
            "hidden_right_after": self.hidden,
            "duplicate_history_entries": self.dup_history,
            "duplicate_rows": self.dup_rows,
            "duplicate_stored_events": self.dup_stored_events,
            "event_gaps": self.gaps,
            "event_repeats": self.repeats,
            "contradictions": self.contradictions,
            "generations_per_turn_mean": statistics.fmean(gens) if gens else 0.0,
            "generations_per_turn_max": max(gens, default=0),
            "restarts_from_the_start": self.restarts,
            "second_full_generations": self.second_full,
            "contradicted_prefills": self.contradicted_prefills,
            "tokens_paid_twice": self.tokens_paid_twice,
            "recovery_s": self.recovery_s,
            "unrecovered_runs": self.unrecovered,
            "task_errors": self.task_errors,
            "abandoned": self.abandoned,
            "failed": dict(self.failed),
            "statuses": dict(self.statuses),
            "notes": self.notes,
            "suspects": self.suspects,
            "seconds": self.seconds,
        }


class Suite:
    """The engine under test and everything around it. Lifecycle: ``async with Suite(options)``."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.model = CountingModel(options.tokens, options.token_delay_s)
        self.channels = Channels()
        self.names = Names(NAMESPACE)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self.work = Path()
        self.tmpfs: Tmpfs | None = None
        self.tmpfs_unavailable = ""
        self.settings: EngineSettings | None = None
        self.engine: Serve | None = None
        self.gateway: Serve | None = None
        self.starts = 0
        self._main_target = ""
        self.sessions: list[tuple[str, str, FaultResult]] = []
        """Every (session id, incarnation, fault) the suite used, for the final checks."""
        self.acked: list[tuple[TurnLog, FaultResult]] = []

    async def __aenter__(self) -> Suite:
        if self.options.work_dir is not None:
            self.work = self.options.work_dir
            self.work.mkdir(parents=True, exist_ok=True)
        else:
            self._tmp = tempfile.TemporaryDirectory(prefix="salon-faults-")
            self.work = Path(self._tmp.name)
        self.tmpfs = Tmpfs(self.work / "data", self.options.tmpfs_mb)
        if not self.tmpfs.mount():
            self.tmpfs_unavailable = self.tmpfs.why_not
            (self.work / "data").mkdir(parents=True, exist_ok=True)
        model_url = await self.model.start()
        env = {
            "SALON_MODEL_CHAIN": "anthropic",
            "SALON_ANTHROPIC_BASE_URL": model_url,
            "SALON_ANTHROPIC_MODEL": "claude-faults",
            "ANTHROPIC_API_KEY": "fault-suite",
            "SALON_EMBEDDING_MODEL": "hash",
            "SALON_NUM_HOSTS": str(HOSTS),
            "SALON_NUM_SHARDS": str(NUM_SHARDS),
            "SALON_ACK_WAIT_S": str(self.options.ack_wait_s),
            "SALON_WRITER_ACK_WAIT_S": "3",
            "SALON_STREAM_WRITE_TIMEOUT_S": str(self.options.write_timeout_s),
            "SALON_MAX_TURNS_PER_HOST": str(self.options.max_turns_per_host),
            "SALON_MAX_TURNS_PER_TENANT": str(self.options.max_turns_per_host),
            "SALON_DEDUPE_WINDOW_S": "60",
            "SALON_EVENT_RETENTION_S": "600",
            "SALON_SHUTDOWN_GRACE_S": "5",
            "SALON_FLUSH_INTERVAL_S": "0.5",
            "SALON_LOG_LEVEL": "WARNING",
        }
        self.settings = EngineSettings(self.work / "data", env, self.work / "logs")
        await self.start_engine()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.channels.close()
        for serve in (self.gateway, self.engine):
            if serve is not None:
                with contextlib.suppress(Exception):
                    await serve.stop(30.0)
        self.gateway = self.engine = None
        await self.model.close()
        if self.tmpfs is not None:
            self.tmpfs.unmount()
        if self._tmp is not None and not self.options.keep:
            self._tmp.cleanup()

    # --- the engine ---------------------------------------------------------------------------------------

    async def start_engine(self) -> None:
        """Start the main ``salon serve`` on the data directory."""
        assert self.settings is not None
        self.starts += 1
        self.engine = await start_serve(self.settings, f"engine-{self.starts}")

    def targets(self) -> list[str]:
        """The gateways clients may use, the main engine's last (while it restarts: where it was)."""
        if self.engine is not None:
            self._main_target = self.engine.target
        extra = [self.gateway.target] if self.gateway is not None and self.gateway.target else []
        return [*extra, self._main_target]

    async def kill_and_restart(self) -> float:
        """SIGKILL every process of the engine (and the extra gateway) at once, then start the engine again on
        the same data directory; returns when the processes were killed."""
        gateway = self.gateway is not None
        serves = [s for s in (self.gateway, self.engine) if s is not None]
        await asyncio.gather(*(s.kill() for s in serves))
        killed = time.monotonic()
        self.gateway = None
        self.engine = None
        await self.start_engine()
        if gateway:
            await self.start_gateway()
        return killed

    async def start_gateway(self) -> None:
        """Start an extra gateway (``salon serve --gateway-only``) on the deployment."""
        assert self.settings is not None
        self.starts += 1
        url = engine_nats_url(self.settings.data_dir)
        self.gateway = await start_serve(self.settings, f"gateway-{self.starts}", gateway_only=True, nats_url=url)

    async def kill_gateway(self) -> None:
        """SIGKILL the extra gateway."""
        if self.gateway is not None:
            await self.gateway.kill()
            self.gateway = None

    async def stop_gateway(self) -> None:
        """Stop the extra gateway, if any."""
        if self.gateway is not None:
            await self.gateway.stop(30.0)
            self.gateway = None

    def continue_process(self, pid: int) -> None:
        """SIGCONT a process this suite stopped."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)

    async def fill_disk(self, hold_s: float) -> None:
        """Fill the data directory's tmpfs, hold it full, free it."""
        assert self.tmpfs is not None
        filler = await asyncio.to_thread(self.tmpfs.fill)
        try:
            await asyncio.sleep(hold_s)
        finally:
            filler.unlink(missing_ok=True)

    async def probe(self, timeout_s: float) -> bool:
        """Whether a fresh turn completes within ``timeout_s`` (the engine serves)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                stub = self.channels.stub(self.targets()[-1])
                created = await stub.CreateSession(cs_pb2.CreateSessionRequest(), timeout=5.0)
                call = stub.SendTurn(
                    cs_pb2.SendTurnRequest(session_id=created.session.session_id, text="probe"), timeout=10.0
                )
                async for response in call:
                    if response.event.HasField("completed"):
                        return True
            except (grpc.aio.AioRpcError, IndexError):
                pass
            await asyncio.sleep(0.5)
        return False

    async def heal(self, result: FaultResult) -> None:
        """After a fault's runs: when the engine no longer serves, note it and start it again."""
        if await self.probe(30.0):
            return
        result.notes.append("the engine did not serve after this fault; the suite killed and restarted it")
        await self.kill_and_restart()

    async def nats(self) -> Any:
        """A NATS connection to the deployment (the engine's own credentials, from its data directory)."""
        assert self.settings is not None
        return await connect(engine_nats_url(self.settings.data_dir), name="salon-fault-suite", timeout_s=15.0)

    # --- the runs -----------------------------------------------------------------------------------------

    async def run_fault(self, fault: Fault, seed: int) -> FaultResult:
        """Every run of ``fault``; then make sure the engine serves for the next."""
        result = FaultResult(fault.name, fault.what, fault.survives)
        started = time.monotonic()
        run = Run(self, fault, result, 0, random.Random(seed))
        result.skipped = fault.skip_reason(run)
        if result.skipped:
            return result
        try:
            for index in range(self.options.runs):
                if fault.gateway and self.gateway is None:
                    await self.start_gateway()  # (again: the last run killed it)
                run = Run(self, fault, result, index, random.Random(f"{seed}/{fault.name}/{index}"))
                await run.execute()
        finally:
            if fault.gateway:
                await self.stop_gateway()
        await self.heal(result)
        result.seconds = time.monotonic() - started
        return result

    async def final_checks(self, results: Sequence[FaultResult]) -> list[str]:
        """Once the writer caught up: every acknowledged turn in every history and once in the transcript."""
        notes: list[str] = []
        caught_up = await self._writer_caught_up(120.0)
        if not caught_up:
            notes.append("the batch writer had not caught up after 120 s; transcript rows may be missing")
        histories: dict[str, list[str]] = {}
        for session_id, _, _ in self.sessions:
            histories[session_id] = [t.turn_id for t in await self.history(session_id)]
        for log_, result in self.acked:
            if log_.key not in histories.get(log_.session_id, []):
                result.lost += 1
        assert self.engine is not None
        code = await self.engine.stop(90.0)
        self.engine = None
        if code != 0:
            notes.append(f"salon serve exited with {code} on SIGTERM")
        rows = await self._transcript_rows()
        by_session: dict[str, Counter[str]] = {}
        for session_id, turn_id in rows:
            by_session.setdefault(session_id, Counter())[turn_id] += 1
        seen: set[str] = set()
        for session_id, _, result in self.sessions:
            if session_id in seen:
                continue
            seen.add(session_id)
            counts = by_session.get(session_id, Counter())
            result.dup_rows += sum(n - 1 for n in counts.values() if n > 1)
        for log_, result in self.acked:
            if log_.key in histories.get(log_.session_id, []) and log_.key not in by_session.get(
                log_.session_id, Counter()
            ):
                result.lost += 1
        return notes

    async def _writer_caught_up(self, timeout_s: float) -> bool:
        nc = await self.nats()
        try:
            js = nc.jetstream()
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    info = await js.consumer_info(self.names.ledger_stream, self.names.writer_consumer)
                    if not info.num_pending and not info.num_ack_pending:
                        return True
                await asyncio.sleep(0.5)
            return False
        finally:
            await close_connection(nc)

    async def _transcript_rows(self) -> list[tuple[str, str]]:
        """(session id, turn id) of every transcript row, read from LanceDB after the engine stopped."""
        from salon.storage.tables import TranscriptStore

        assert self.settings is not None
        store = await TranscriptStore.open(str(self.settings.data_dir / "lancedb"))
        try:
            rows: list[tuple[str, str]] = []
            for session_id in {s for s, _, _ in self.sessions}:
                for record in await store.history(TENANT, session_id, limit=10_000):
                    rows.append((session_id, record.turn_id))
            return rows
        finally:
            await store.close()

    async def history(self, session_id: str, timeout_s: float = 60.0) -> list[Any]:
        """A session's whole history (every page), retried while the engine is unavailable."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                stub = self.channels.stub(self.targets()[-1])
                turns: list[Any] = []
                token = ""
                while True:
                    reply = await stub.GetHistory(
                        cs_pb2.GetHistoryRequest(session_id=session_id, page_size=500, page_token=token), timeout=10.0
                    )
                    turns += reply.turns
                    token = reply.next_page_token
                    if not token:
                        return turns
            except grpc.aio.AioRpcError as exc:
                if time.monotonic() > deadline or exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                    raise RuntimeError(f"GetHistory kept failing: {reason_of(exc)}") from exc
                await asyncio.sleep(0.5)


class Run:
    """One run of one fault: fresh sessions, the clients' loops, the fault, the checks."""

    def __init__(self, suite: Suite, fault: Fault, result: FaultResult, index: int, rng: random.Random) -> None:
        self.suite = suite
        self.fault = fault
        self.result = result
        self.index = index
        self.rng = rng
        self.clients: list[Client] = []
        self.extra: list[Client] = []
        """Clients the fault added (spike, slow reader): their turns are checked like the others'."""
        self.stop = asyncio.Event()
        self.fault_end = 0.0

    def _prefix(self) -> str:
        return f"{self.fault.name.replace('_', '')}{self.index}"

    async def _client(self, name: str, policy: Policy) -> Client:
        stub = self.suite.channels.stub(self.suite.targets()[-1])
        deadline = time.monotonic() + 60.0
        while True:
            try:
                created = await stub.CreateSession(cs_pb2.CreateSessionRequest(), timeout=10.0)
                break
            except grpc.aio.AioRpcError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        session = created.session
        self.suite.sessions.append((session.session_id, str(session.create_time.ToNanoseconds()), self.result))
        rng = random.Random(f"{self.rng.random()}")
        return Client(
            name, session.session_id, channels=self.suite.channels, targets=self.suite.targets, rng=rng, policy=policy
        )

    async def signal_role(self, role: str, rng: random.Random, sig: str) -> int:
        """Send SIGKILL or SIGSTOP to one process of ``role`` under the engine (chosen by ``rng``); its pid."""
        engine = self.suite.engine
        assert engine is not None
        pids = engine.role(role)
        if not pids:
            raise RuntimeError(f"no {role} process found under the engine")
        pid = rng.choice(pids)
        os.kill(pid, signal.SIGKILL if sig == "KILL" else signal.SIGSTOP)
        return pid

    async def _whole(self, timeout_s: float = 60.0) -> None:
        """Wait until the engine has all its processes (Ray restarts a killed actor in its own time)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            engine = self.suite.engine
            if engine is not None and len(engine.role("host")) >= HOSTS and engine.role("writer"):
                return
            await asyncio.sleep(0.2)
        self.result.notes.append(f"run {self.index}: the engine was missing processes after {timeout_s:.0f} s")

    async def execute(self) -> None:
        """Run the clients, inject the fault, wait for recovery, stop the clients, check."""
        await self._whole()
        policy = self.fault.policy
        self.clients = [await self._client(f"{self._prefix()}c{i}", policy) for i in range(self.suite.options.clients)]
        loops = [asyncio.create_task(c.run(self.stop), name=f"client-{c.name}") for c in self.clients]
        during = asyncio.create_task(self.fault.during(self, self.rng), name="fault-during")
        try:
            delay = self.rng.uniform(0.3, 1.0)
            await asyncio.sleep(delay)
            ended = await self.fault.inject(self, self.rng)
            self.fault_end = ended if ended is not None else time.monotonic()
            recovered = await self._wait_recovered()
            if recovered is None:
                self.result.unrecovered += 1
                self.result.notes.append(
                    f"run {self.index}: not recovered within {self.suite.options.recovery_timeout_s:.0f} s; "
                    "the suite killed and restarted the engine"
                )
                await self.suite.kill_and_restart()
            elif type(self.fault).inject is not Fault.inject:
                self.result.recovery_s.append(recovered - self.fault_end)
            log.info("%s run %d: injected after %.2f s", self.fault.name, self.index, delay)
        finally:
            self.stop.set()
            for outcome in await asyncio.gather(*loops, during, return_exceptions=True):
                if isinstance(outcome, Exception):
                    self.result.task_errors += 1
                    self.result.notes.append(f"run {self.index}: a client task failed: {outcome!r}")
        await self.check()

    async def _wait_recovered(self) -> float | None:
        """When every client had completed a turn after the fault (and ``min_turns`` in all); None on timeout."""
        deadline = time.monotonic() + self.suite.options.recovery_timeout_s
        while time.monotonic() < deadline:
            firsts = []
            for client in self.clients:
                done = [t.ended for t in client.turns if t.completed and t.ended >= self.fault_end]
                total = sum(1 for t in client.turns if t.completed)
                if not done or total < self.suite.options.min_turns:
                    break
                firsts.append(min(done))
            else:
                return max(firsts)
            await asyncio.sleep(0.05)
        return None

    # --- what some faults do beside the clients ---------------------------------------------------------------

    async def spike(self, rng: random.Random) -> None:
        """Ten times the clients at once, two turns each."""
        extra = [await self._client(f"{self._prefix()}x{i}", Policy()) for i in range(10 * len(self.clients))]
        self.extra += extra
        await asyncio.gather(*(c.run(asyncio.Event(), max_turns=2) for c in extra))

    async def slow_reader(self, rng: random.Random) -> None:
        """One client with large tokens that pauses past the write timeout after the first event of a turn."""
        options = self.suite.options
        policy = Policy(slow=True, slow_pause_s=options.write_timeout_s * 2 + 0.5, big=True)
        client = await self._client(f"{self._prefix()}slow", policy)
        self.extra.append(client)
        await client.run(asyncio.Event(), max_turns=1)

    async def duplicates(self, rng: random.Random) -> None:
        """While the clients run: a second SendTurn with the same key for some running turns, and copies of turn
        messages on the bus (a new message id, so JetStream's dedupe does not drop them) while they run and
        after they ended."""
        twins: list[asyncio.Task[None]] = []
        copied: set[str] = set()
        nc = await self.suite.nats()
        try:
            while not self.stop.is_set():
                await asyncio.sleep(rng.uniform(0.05, 0.2))
                for client in self.clients:
                    if not client.turns:
                        continue
                    turn = client.turns[-1]
                    if turn.key in copied or not turn.events or turn.outcome:
                        continue
                    copied.add(turn.key)
                    twins.append(asyncio.create_task(self._twin(client, turn)))
                    await self._copy_on_bus(nc, client, turn)
            # Copies of turns that ended: answered from their records, without the model.
            for client in self.clients:
                for turn in client.turns[:2]:
                    if turn.completed:
                        await self._copy_on_bus(nc, client, turn)
            await asyncio.gather(*twins, return_exceptions=True)
        finally:
            await close_connection(nc)

    async def _twin(self, client: Client, turn: TurnLog) -> None:
        """SendTurn again with the turn's key; what it sees must agree with what the client saw."""
        stub = self.suite.channels.stub(self.suite.targets()[-1])
        text = f"[{turn.tag}] question {turn.key.rsplit('-', 1)[-1]} from {client.name}"
        twin = TurnLog(client.name, client.session_id, turn.key, turn.tag, time.monotonic())
        try:
            call = stub.SendTurn(
                cs_pb2.SendTurnRequest(session_id=client.session_id, text=text, idempotency_key=turn.key),
                timeout=60.0,
            )
            expected = 1
            async for response in call:
                expected = Client._note(twin, response.event, expected)
        except grpc.aio.AioRpcError as exc:
            self.result.statuses[f"twin:{reason_of(exc)}"] += 1
        # Compared once the client's turn is over: every number both hold must carry the same event.
        while not turn.outcome and not self.stop.is_set():  # noqa: ASYNC110 - the client's loop sets it
            await asyncio.sleep(0.05)
        for seq, content in twin.events.items():
            held = turn.events.get(seq)
            if held is not None and held != content:
                self.result.contradictions += 1
        self.result.gaps += twin.gaps
        self.result.repeats += twin.repeats

    async def _copy_on_bus(self, nc: Any, client: Client, turn: TurnLog) -> None:
        index = turn.key.rsplit("-", 1)[-1]
        request = cs_pb2.SendTurnRequest(
            session_id=client.session_id, text=f"[{turn.tag}] question {index} from {client.name}"
        )
        request.idempotency_key = turn.key
        envelope = TurnEnvelope(tenant_id=TENANT, turn_id=turn.key, request=request)
        headers = envelope.headers()
        headers[H_MSG_ID] += f".copy{self.rng.randrange(10**9)}"
        shard = shard_for(TENANT, client.session_id, NUM_SHARDS)
        await nc.jetstream().publish(self.suite.names.turn_subject(shard), request.SerializeToString(), headers=headers)

    # --- checks ---------------------------------------------------------------------------------------------

    async def check(self) -> None:
        """History, stored events and model counts of every turn of the run."""
        result = self.result
        result.runs += 1
        clients = self.clients + self.extra
        nc = await self.suite.nats()
        try:
            for client in clients:
                await self._check_client(nc, client)
        finally:
            await close_connection(nc)

    async def _check_client(self, nc: Any, client: Client) -> None:
        result = self.result
        suite = self.suite
        history = await suite.history(client.session_id)
        ids = [t.turn_id for t in history]
        replies = {t.turn_id: t.reply_text for t in history}
        result.dup_history += len(ids) - len(set(ids))
        stored = await self._stored_events(nc, client.session_id)
        result.statuses.update(client.statuses)
        for turn in client.turns:
            result.turns += 1
            result.gaps += turn.gaps
            result.repeats += turn.repeats
            result.contradictions += turn.contradictions
            count = suite.model.count(turn.tag)
            result.restarts += max(count.full - 1, 0)
            events = stored.get(turn.key, [])
            stored_text = "".join(e.delta.text for e in events if e.WhichOneof("kind") == "delta")
            if variants_in(stored_text) - {count.full - 1}:
                # Words of a generation before the last full one were stored, and yet the answer began again.
                result.second_full += count.second_full
            result.contradicted_prefills += count.contradicted
            # Tokens received, not deltas: a delta may carry several (each of the model's tokens is one word).
            answer = suite.options.tokens if turn.completed else len(turn.reply().split())
            result.tokens_paid_twice += max(count.tokens_sent - answer, 0)
            seqs = Counter(e.seq for e in events)
            result.dup_stored_events += sum(n - 1 for n in seqs.values() if n > 1)
            odd = count.second_full or count.contradicted or turn.gaps or turn.repeats or turn.contradictions
            if (odd or not turn.completed) and len(result.suspects) < 30:
                result.suspects.append(
                    {
                        "turn": turn.key,
                        "session": turn.session_id,
                        "outcome": turn.outcome,
                        "attempts": turn.attempts[:12],
                        "seen": sorted(turn.events)[-3:],
                        "model": {"full": count.full, "continuations": count.continuations, "sent": count.tokens_sent},
                        "stored": [(e.seq, e.WhichOneof("kind")) for e in events][:6],
                    }
                )
            if turn.outcome == "abandoned":
                result.abandoned += 1
            elif not turn.completed:
                result.failed[turn.outcome] += 1
            if not turn.completed:
                continue
            result.acked += 1
            result.generations.append(count.requests)
            suite.acked.append((turn, result))
            if turn.key not in replies:
                result.hidden += 1
            elif replies[turn.key] != turn.reply():
                result.contradictions += 1

    async def _stored_events(self, nc: Any, session_id: str) -> dict[str, list[turn_pb2.TurnEvent]]:
        """Every event the events stream holds for the session's turns, per turn id."""
        names = self.suite.names
        subject = names.event_subject(TENANT, session_id, "*")
        msgs = await read_subject(nc.jetstream(), names.events_stream, subject)
        out: dict[str, list[turn_pb2.TurnEvent]] = {}
        for msg in msgs:
            for event in unpack_events(msg.data, msg.headers):
                out.setdefault(event.turn_id, []).append(event)
        return out


async def run_suite(options: Options) -> tuple[list[FaultResult], list[str]]:
    """Run the chosen faults and the final checks; the results per fault and notes about the run."""
    chosen = [f for f in catalogue() if not options.faults or f.name in options.faults]
    results: list[FaultResult] = []
    async with Suite(options) as suite:
        if suite.tmpfs_unavailable:
            log.warning("disk_full is skipped: %s", suite.tmpfs_unavailable)
        for fault in chosen:
            log.info("fault %s: %d runs", fault.name, options.runs)
            results.append(await suite.run_fault(fault, options.seed))
        notes = await suite.final_checks(results)
        notes.append(f"engine starts: {suite.starts} (processes started by the suite, including extra gateways)")
        notes.append(f"model requests without a tag (summaries, probes): {suite.model.untagged}")
    return results, notes
