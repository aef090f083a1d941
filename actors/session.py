"""The session actor: one conversation's state and its turns, one at a time, in arrival order.

Plain asyncio: no Ray, NATS, gRPC or API types here. The host hands it each turn as an
:class:`~salon.actors.turn.InFlight` and gives it the session's ledger handle. A turn ends in this order: its answer
is streamed, its outcome is appended to the ledger (retried while the ledger is unreachable), applied to the
state, the terminal event is sent, and only then is the turn done (the host acknowledges it). So a client
that saw a turn complete can read it back, and an acknowledged turn is never lost.

The actor coordinates its parts: the line of turns (:mod:`salon.actors.turn_queue`), each turn's state
(:mod:`salon.actors.running`), running a turn (:mod:`salon.actors.execution`, with :mod:`salon.actors.prompt`,
:mod:`salon.actors.model_call` and its tool calls in :mod:`salon.actors.tool_loop`), the ledger
(:mod:`salon.actors.recorder`) and the rolling summary (:mod:`salon.actors.summary_writer`).

A turn waiting for tool results or approvals stays at the head of the line (later turns queue behind it, or
interrupt it under their policy); :meth:`SessionActor.answer` hands it what the gateway routed here. When the
session closes while a turn waits, the turn is handed back unfinished: its progress is in the ledger and the
session's next activation takes it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal

from salon import otel
from salon.actors.control import ControlReply, DecideApproval, SubmitToolResult
from salon.actors.emitter import ending_steps, record_steps
from salon.actors.execution import TurnExecution
from salon.actors.guardrails import new_canary
from salon.actors.model import ModelProvider
from salon.actors.model_call import ModelCall
from salon.actors.prompt import PromptBuilder
from salon.actors.recorder import Recorder
from salon.actors.running import CANCELLED, RunningTurn, trace_outcome
from salon.actors.state import RECENT_TURNS_KEPT, SessionState
from salon.actors.summary import ExtractiveSummarizer, Summarizer
from salon.actors.summary_writer import SummaryWriter
from salon.actors.tool_loop import ToolLoop, ToolStats
from salon.actors.tool_servers import NoToolServers, ToolServers
from salon.actors.turn import InFlight, LocalInFlight, SessionKey, SessionSettings, Turn
from salon.actors.turn_queue import POLICIES, TurnQueue
from salon.storage import AnswerStore, Fenced, Retriever, SessionLog

__all__ = [
    "POLICIES",
    "RECENT_TURNS_KEPT",
    "InFlight",
    "LocalInFlight",
    "SessionActor",
    "SessionKey",
    "SessionSettings",
    "SessionState",
    "Turn",
]

log = logging.getLogger(__name__)


class SessionActor:
    """Runs a session's turns one at a time, in the order they were submitted."""

    def __init__(
        self,
        key: SessionKey,
        settings: SessionSettings,
        state: SessionState,
        provider: ModelProvider,
        ledger: SessionLog,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_retry_delay_s: float = 2.0,
        retriever: Retriever | None = None,
        summarizer: Summarizer | None = None,
        tool_servers: ToolServers | None = None,
        tool_stats: ToolStats | None = None,
        stored_answers: AnswerStore | None = None,
    ) -> None:
        self.key = key
        self.settings = settings
        self.state = state
        self._clock = clock
        self._queue = TurnQueue()
        self._runner: asyncio.Task[None] | None = None
        self._closed = False
        self.fenced = False
        """Set when another host took the session over; the host then drops this actor."""
        self.last_active = clock()
        self._prompts = PromptBuilder(key, settings, state, retriever)
        self._recorder = Recorder(key, state, ledger, max_retry_delay_s=max_retry_delay_s, closing=lambda: self._closed)
        self._tools = ToolLoop(
            key,
            tool_servers or NoToolServers(),
            self._recorder,
            tool_stats or ToolStats(),
            closing=lambda: self._closed,
            stored=stored_answers,
        )
        self._execution = TurnExecution(
            key,
            settings,
            self._prompts,
            ModelCall(key, provider, settings.system_prompt),
            self._tools,
            canary=new_canary(),
        )
        self._summary = SummaryWriter(key, settings, state, summarizer or ExtractiveSummarizer())

    @property
    def busy(self) -> bool:
        """Whether a turn is running or queued."""
        return bool(self._queue)

    @property
    def pending_turns(self) -> int:
        """Turns running or waiting."""
        return len(self._queue)

    @property
    def waiting(self) -> bool:
        """Whether the running turn waits for tool results or approvals (holding no model connection)."""
        return bool(self._queue) and self._queue.head.waiting

    async def wait_idle(self) -> None:
        """Return once no turn is running or queued."""
        while self._runner is not None:
            await asyncio.shield(self._runner)

    async def wait_settled(self, poll_s: float = 0.05) -> None:
        """Return once no turn is running, or the running one waits for its tools (a waiting turn is not work a
        drain should wait for: it goes on from its records wherever the session is activated next)."""
        while self._runner is not None and not self.waiting:
            await asyncio.wait({asyncio.shield(self._runner)}, timeout=poll_s)

    async def submit(self, inflight: InFlight) -> bool:
        """Take a turn: its events (starting with ``accepted``) go to ``inflight.emit``, and
        ``inflight.done()`` is called once it has ended and been recorded.

        A turn this session already recorded is answered from its record without calling the model. One
        that is queued or running is a duplicate: it is not taken (returns False, ``done`` is never called);
        the copy already here will finish and be acknowledged.
        """
        if self._closed:
            raise RuntimeError("session actor is closed")
        self.last_active = self._clock()
        turn = inflight.turn
        if turn.turn_id in self.state.recent:
            await self._replay(RunningTurn.take(inflight, self.key), self.state.recent[turn.turn_id])
            return True
        if self._queue.holds(turn.turn_id):
            return False
        cancelled = self._queue.cancelled_before_arrival(turn.turn_id)
        progress = list(self.state.unfinished.get(turn.turn_id, ()))
        running = RunningTurn.take(inflight, self.key, cancelled=cancelled, progress=progress)
        # Placing the turn before the first await fixes its place in line.
        position = self._queue.admit(running, turn.policy or self.settings.double_texting)
        if position is None:
            await running.emitter.error(
                "SESSION_BUSY", "the session is running another turn", retryable=True, partial=False, retry_after_s=1.0
            )
            await inflight.done()
            return True
        if self._runner is None:
            self._runner = asyncio.create_task(self._run(), name=f"session-{self.key}")
        if not turn.prior_seq and not progress:
            # A turn taken up again was accepted by its first attempt (its events may have aged out since).
            await running.emitter.accepted(position, trace_id=turn.trace_id)
        return True

    def cancel(self, turn_id: str, reason: str = CANCELLED) -> Literal["cancelled", "finished", "pending"]:
        """Stop a turn: ``cancelled`` when it was queued or running here (it ends with a cancelled event and is
        recorded as such), ``finished`` when it had already ended, ``pending`` when it has not arrived yet
        (it will be cancelled on arrival)."""
        if self._queue.cancel(turn_id, reason):
            return "cancelled"
        if turn_id in self.state.recent:
            return "finished"
        self._queue.cancel_on_arrival(turn_id)
        return "pending"

    async def answer(self, message: SubmitToolResult | DecideApproval) -> ControlReply:
        """Take a tool result or an approval decision for one of the running turn's calls (routed here by the
        gateway). ``not_found`` for a turn not running here (queued, finished, unknown), ``resuming`` for one
        this session will take up again once its message is redelivered."""
        self.last_active = self._clock()
        head = self._queue.head if self._queue else None
        if head is None or head.turn_id != message.turn_id or (head.progress and not head.calls):
            # Not here yet, or here but its calls not rebuilt from its records yet: it takes answers once it waits.
            return ControlReply("resuming" if message.turn_id in self.state.unfinished else "not_found")
        if head.emitter.finished:
            # Its last event is out (the client may already answer again) while the session still records it.
            return ControlReply("not_found")
        return await self._tools.answer(head, message)

    async def _replay(self, running: RunningTurn, ledger_seq: int) -> None:
        emitter = running.emitter
        record = await self._recorder.read_turn(ledger_seq)
        if record is None:
            if not emitter.last_seq:
                await emitter.accepted(0, trace_id=running.turn.trace_id, replayed=True)
            await emitter.error(
                "TURN_RECORD_EXPIRED",
                "the turn was recorded but its record is no longer kept",
                retryable=False,
                partial=False,
            )
        else:
            # The record's events, numbered as they were first sent; those the client has are skipped.
            for step in record_steps(emitter, record)[emitter.last_seq :]:
                await step()
        await running.inflight.done()

    async def _run(self) -> None:
        try:
            while self._queue and not self.fenced:
                try:
                    await self._execute(self._queue.head)
                finally:
                    if not self.fenced:
                        self._queue.popleft()
                        self.last_active = self._clock()
            if self.fenced:
                await self._release_all()
        finally:
            self._runner = None

    async def _release_all(self) -> None:
        while self._queue:
            running = self._queue.popleft()
            try:
                await running.inflight.release()
            except Exception:
                log.exception("handing a turn back to the bus failed; it is redelivered after its ack wait")

    async def _execute(self, running: RunningTurn) -> None:
        ids = {
            otel.attributes.TURN_ID: running.turn_id,
            otel.attributes.SESSION_ID: self.key.session_id,
            otel.attributes.TENANT_ID: self.key.tenant_id,  # also names the turn in the logs of its block
        }
        with otel.span(otel.attributes.SPAN_SESSION_TURN, parent=running.turn.trace_context, attributes=ids) as span:
            await self._execute_turn(running)
            if span.is_recording():
                trace_outcome(span, running)

    async def _execute_turn(self, running: RunningTurn) -> None:
        running.begin()
        try:
            await self._execution.run(running)
        except asyncio.CancelledError:
            if running.cut_short:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._conclude(running, retry=False))
            elif running.parked:
                with contextlib.suppress(Exception):
                    await asyncio.shield(running.inflight.release())
            raise
        except Fenced:
            self._fence(running)
            return
        except Exception:
            # A bug must end the turn (recorded, acknowledged), never leave it in flight with no runner.
            log.exception("turn failed inside the engine (session %s)", self.key)
            self._tools.abandon(running)
            running.outcome.fail("INTERNAL", "the engine failed while running this turn", partial=bool(running.deltas))
        running.settle_stop()
        try:
            await self._conclude(running, retry=True)
        except Fenced:
            # Another host owns the session now; it will run this (unacknowledged) turn again, continuing
            # after the events already sent.
            self._fence(running)

    def _fence(self, running: RunningTurn) -> None:
        log.warning("session %s was taken over by another host; dropping it here", self.key)
        self.fenced = True
        running.outcome.status = "fenced"
        self._tools.abandon(running)

    async def _conclude(self, running: RunningTurn, *, retry: bool) -> None:
        """Record the turn, apply it to the state, send its ending, and hand it back as done."""
        record = running.record(
            self.key, self.state.incarnation, self.state.turn_count + 1, user_id=self.settings.user_id
        )
        nats = {otel.attributes.MESSAGING_SYSTEM: "nats", otel.attributes.MESSAGING_OPERATION: "send"}
        with otel.span(otel.attributes.SPAN_LEDGER_APPEND, kind=otel.SpanKind.PRODUCER, attributes=nats):
            record = await self._recorder.append(record, retry=retry)
        self.state.apply(record, self.settings.window_max_messages)
        with otel.span(otel.attributes.SPAN_EVENTS_PUBLISH, kind=otel.SpanKind.PRODUCER, attributes=nats):
            for step in ending_steps(running.emitter, record):
                await step()
        try:
            await running.inflight.done()
        except Exception:
            log.exception("acknowledging a turn failed; its redelivery will be answered from its record")
        if self._recorder.snapshot_due(self.settings.snapshot_every_turns):
            await self.save_snapshot()
        if not (self._closed or self.fenced):
            self._summary.schedule(self._prompts.window())

    async def wait_summary(self) -> None:
        """Wait for a summary rewrite in progress (tests and orderly passivation)."""
        await self._summary.wait()

    async def save_snapshot(self) -> None:
        """Append a snapshot of the state (best effort: it is a cache of the ledger)."""
        if not self.fenced:
            await self._recorder.save_snapshot()

    async def close(self) -> None:
        """Stop the running turn (recorded and acknowledged as cancelled) and drop queued ones, which stay
        unacknowledged so the bus redelivers them to the session's next activation. Idempotent."""
        self._closed = True
        runner = self._runner
        if runner is not None:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        self._queue.clear()
        await self._summary.close()

    async def passivate(self) -> None:
        """Close and leave a snapshot, so the next activation replays nothing."""
        await self.close()
        await self.save_snapshot()
