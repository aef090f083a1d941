"""The action layer of a turn: a model round's tool calls run, waited for and recorded, and a waiting turn taken
up again after its host died.

When a model round calls tools, :meth:`ToolLoop.start_round` checks each call against the offered tools and
their schemas (an invalid call is answered at once with an error the model sees: only its ``tool_result``
event is sent), appends the round (its text, usage and calls) to the session's ledger as a progress record,
then sends the calls' events: ``tool_call`` for each valid call and ``approval_required`` after it for a tool
that needs a person's decision. MCP calls that need no decision start at once on the host's servers. Then
:meth:`ToolLoop.wait` waits, holding no model connection, until every call has its result: a client's
(:meth:`ToolLoop.answer` with a ``SubmitToolResult``), an MCP server's, or a person's rejection
(``DecideApproval``; an approval lets the call run). Each answer is appended to the ledger before its events
are sent, and tool output is checked by the injection guardrail first (a blocked result is replaced by an
error the model sees). The wait ends at the round's deadline (``TOOL_WAIT_TIMEOUT``), at the turn's deadline,
or when the turn is stopped (cancel, interrupt, rollback): unanswered calls then get ``timeout`` or
``cancelled`` results and MCP calls still running are stopped.

A host that dies while a turn waits loses nothing: the turn's message is redelivered, and
:meth:`ToolLoop.resume` rebuilds the turn's rounds and calls from its progress records, sends the events of the
last recorded step the events stream does not hold (and no other), and the turn waits on; the model is never
asked again for a recorded round. An MCP call that was running when the host died is not run twice: the model
is told it may or may not have completed. An answer given while no host served the turn was stored by the
gateway (:mod:`salon.actors.stored_answers`): each wait first takes the turn's stored answers, through the same
checks as one sent to it, so each is taken once (the ledger then holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from salon import otel
from salon.actors.control import ControlReply, DecideApproval, SubmitToolResult
from salon.actors.events import Delta
from salon.actors.guardrails import Guardrails
from salon.actors.model import ModelResult, ToolResult, ToolSpec
from salon.actors.model_call import DEADLINE_PASSED
from salon.actors.recorder import Recorder
from salon.actors.running import RunningTurn
from salon.actors.stored_answers import as_message, in_taking_order
from salon.actors.tool_calls import (
    ToolRound,
    answered,
    call_id_usable,
    call_of,
    decided,
    entry_events,
    new_entry,
    numbered,
    usage_of,
    waits,
)
from salon.actors.tool_servers import ToolServers
from salon.actors.tools import (
    TOOL_WAIT_TIMEOUT,
    ToolSelection,
    offered_tools,
    rejection,
    timed_out,
    validate_call,
)
from salon.actors.turn import SessionKey
from salon.storage import AnswerStore, ProgressRecord, SalonError, ToolApproval, ToolCallEntry, ToolSource

log = logging.getLogger(__name__)

WAIT_TIMED_OUT = "nobody answered the turn's tool calls before their deadline"
RESTARTED = "The engine restarted while this call ran on its MCP server; it may or may not have completed."
CALL_CANCELLED = "The turn was stopped before this call had its result."
INJECTION_WITHHELD = (
    "The tool's output was withheld: the prompt-injection guardrail found instructions in it. Do not retry the "
    "call with the same arguments; tell the user the result could not be used."
)
STORED_RETRY_S = 2.0
"""How often a wait tries again to read the turn's stored answers when the store could not be read."""
MAX_TOOL_NAMES = 200
"""Distinct tool names the host's call counts keep apart (more are counted as ``_OTHER``)."""

OUTCOMES: dict[str, str] = {
    "rejected": "rejected",
    "timeout": "timeout",
    "invalid_call": "invalid",
    "cancelled": "cancelled",
}
"""A call's metric outcome by its result's source; a client's or MCP server's result is ``ok`` or ``error``."""


@dataclass
class ToolStats:
    """The host's tool figures: calls by tool and outcome, time turns spent waiting, turns waiting now."""

    calls: Counter[tuple[str, str]] = field(default_factory=Counter)
    wait_ms: int = 0
    waits: int = 0
    waiting: int = 0
    _names: set[str] = field(default_factory=set)

    def called(self, entry: ToolCallEntry) -> None:
        """Count a call that has its result."""
        outcome = OUTCOMES.get(entry.source, "error" if entry.is_error else "ok")
        if entry.tool not in self._names and len(self._names) < MAX_TOOL_NAMES:
            self._names.add(entry.tool)
        tool = entry.tool if entry.tool in self._names else "_OTHER"
        self.calls[tool, outcome] += 1

    def waited(self, seconds: float) -> None:
        """Count one wait of a turn for its tools."""
        self.wait_ms += int(seconds * 1000)
        self.waits += 1

    def figures(self) -> dict[str, int]:
        """The figures as the host's ``stats()`` reports them (``tool_calls.<tool>.<outcome>``, …)."""
        found = {f"tool_calls.{tool}.{outcome}": n for (tool, outcome), n in self.calls.items()}
        found.update(tool_wait_ms=self.wait_ms, tool_waits=self.waits, waiting_turns=self.waiting)
        return found


class ToolLoop:
    """Runs the tool calls of one session's turns (one turn at a time, as the session runs them)."""

    def __init__(
        self,
        key: SessionKey,
        servers: ToolServers,
        recorder: Recorder,
        stats: ToolStats,
        *,
        closing: Callable[[], bool] = lambda: False,
        stored: AnswerStore | None = None,
    ) -> None:
        self._key = key
        self._servers = servers
        self._recorder = recorder
        self._stats = stats
        self._closing = closing
        self._stored = stored
        """Answers the gateway kept while no host served the session (None: it keeps none)."""

    # What a turn offers

    async def offer(self, running: RunningTurn, selection: ToolSelection) -> tuple[ToolSpec, ...]:
        """The tools ``running`` offers the model (its own definitions and its MCP servers' listed tools, plus the
        servers offered to every session), noted on the turn."""
        servers = (*selection.mcp_servers, *self._servers.all_sessions(self._key.tenant_id))
        selection = dataclasses.replace(selection, mcp_servers=tuple(dict.fromkeys(servers)))
        if not selection:
            return ()
        named = [*selection.mcp_servers, *(t.server for t in selection.tools if t.server)]
        listed = await self._servers.listed(self._key.tenant_id, list(dict.fromkeys(named))) if named else {}
        offered, left_out = offered_tools(selection, listed)
        if left_out:
            log.info("session %s: %d tools left out (servers down, names taken or too many)", self._key, len(left_out))
        running.offered = {spec.name: spec for spec in offered}
        return offered

    # A round's calls

    async def start_round(self, running: RunningTurn, number: int) -> None:
        """Record round ``number``'s calls (``running.round_calls``), send their events, and start the MCP calls
        that need no decision. Raises :class:`Fenced` (and other ledger errors) when the round cannot be
        recorded: it then never ran."""
        now = time.time_ns()
        entries = self._entries(running, number, now)
        deltas = tuple(running.deltas[running.round_start :])
        result = running.outcome.result or ModelResult()
        calls = running.calls
        async with calls.lock:
            seq = running.emitter.last_seq
            entries = _numbered(entries, seq, {})
            await self._record(running, "round", seq, entries, retry=True, number=number, deltas=deltas, result=result)
            calls.add_round(ToolRound(number, deltas, result, tuple(e.call_id for e in entries)), entries)
            await _send(running, entries, seq)
        for entry in entries:
            if entry.answered:
                self._stats.called(entry)
                continue
            calls.spans[entry.call_id] = otel.start_tool_span(
                entry.tool,
                entry.call_id,
                server=entry.server,
                round_index=number,
                requires_approval=entry.requires_approval,
                arguments=entry.arguments_json,
            )
            if entry.server and not entry.requires_approval:
                self._start_mcp(running, entry)

    def _entries(self, running: RunningTurn, number: int, now: int) -> list[ToolCallEntry]:
        """The round's calls as entries: each checked against the offered tools, ids made usable in the API."""
        deadline = now + int(running.policy.wait_timeout_s * 1e9)
        taken = set(running.calls.entries)
        entries = []
        for n, made in enumerate(running.round_calls, 1):
            usable = call_id_usable(made.call_id, taken)
            call = made if usable else dataclasses.replace(made, call_id=_fresh_id(number, n, taken))
            taken.add(call.call_id)
            spec = running.offered.get(call.name)
            entry = new_entry(call, spec, number, now)
            refusal = validate_call(call, spec, running.offered)
            if refusal is not None:
                entry = answered(entry, refusal, "invalid_call", now)
            elif waits(entry):
                entry = dataclasses.replace(entry, wait_deadline_ns=deadline)
            entries.append(entry)
        return entries

    # Waiting

    async def wait(self, running: RunningTurn) -> None:
        """Wait until every call of the last round has its result. On the round's deadline the turn fails
        (``TOOL_WAIT_TIMEOUT``); on the turn's deadline, or when it is stopped, it ends as cancelled; either way
        the unanswered calls get their results. Cancelling the caller (the session closing) leaves the turn as
        it is, for the session's next activation."""
        calls = running.calls
        taken = not calls.unanswered() or await self._take_stored(running)
        pending = calls.unanswered()
        if not pending:
            return
        deadline_ns = max((e.wait_deadline_ns for e in pending if waits(e)), default=0)
        waiting = any(waits(e) for e in pending)
        started = time.monotonic()
        if waiting:
            running.set_waiting(True)
            self._stats.waiting += 1
        try:
            retry = None if taken else functools.partial(self._take_stored, running)
            timed_out_ = await self._until_answered(running, deadline_ns, retry)
        finally:
            if waiting:
                running.set_waiting(False)
                self._stats.waiting -= 1
                self._stats.waited(time.monotonic() - started)
        if calls.failure is not None:
            raise calls.failure
        if timed_out_:
            await self.settle(running, "timeout")
            running.outcome.fail(TOOL_WAIT_TIMEOUT, WAIT_TIMED_OUT, partial=bool(running.deltas))
        elif running.cancel_reason:
            await self.settle(running, "cancelled")

    async def _until_answered(
        self, running: RunningTurn, deadline_ns: int, retry: Callable[[], Awaitable[bool]] | None
    ) -> bool:
        """Wait in a task of the turn's (so stopping the turn stops the wait); whether the round's deadline
        passed first. ``retry``: reads the stored answers again (until it succeeds) while the wait goes on."""
        task = asyncio.create_task(_answered(running, retry))
        running.task = task
        if running.cancel_reason:
            task.cancel()  # stopped while the round was being recorded, before there was a wait to stop
        try:
            limits = [running.seconds_left(), (deadline_ns - time.time_ns()) / 1e9 if deadline_ns else None]
            timeout = min((max(t, 0.0) for t in limits if t is not None), default=None)
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if done or running.cancel_reason:
                return False
            task.cancel()
            await asyncio.wait({task})
            if running.seconds_left() == 0.0:
                running.stop(DEADLINE_PASSED)
                return False
            return True
        except asyncio.CancelledError:
            # The session is closing: the turn stays unfinished, to be taken up again from its records.
            running.parked = True
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise
        finally:
            running.task = None

    async def settle(self, running: RunningTurn, source: ToolSource) -> None:
        """The turn ends without some results: stop its MCP calls, give each unanswered call a ``source``
        result (``timeout`` or ``cancelled``) and send those results' events. Answers are refused from now
        on."""
        calls = running.calls
        await _stop_tasks(calls.tasks)
        async with calls.lock:
            calls.closed = True
            pending = calls.unanswered()
            if not pending:
                return
            now = time.time_ns()
            results = {e.call_id: timed_out(call_of(e)) if source == "timeout" else _cancelled(e) for e in pending}
            updated = [answered(e, results[e.call_id], source, now) for e in pending]
            seq = running.emitter.last_seq
            updated = _numbered(updated, seq, calls.entries)
            calls.update(updated)
            await _send(running, updated, seq)
        for entry in updated:
            self._finish(running, entry)

    def abandon(self, running: RunningTurn) -> None:
        """The session closes while the turn waits: stop its MCP calls and its spans; nothing is recorded (the
        turn goes on from its records where the session is activated next)."""
        for task in running.calls.tasks:
            task.cancel()
        for span in running.calls.spans.values():
            span.end()
        running.calls.spans.clear()

    # Answers

    async def _take_stored(self, running: RunningTurn) -> bool:
        """Hand the turn the answers stored for it while no host served it; whether they could be read."""
        if self._stored is None:
            return True
        key = self._key
        try:
            stored = await self._stored.of_turn(key.tenant_id, key.session_id, running.turn_id)
        except SalonError as exc:
            log.warning("stored tool answers of session %s could not be read (%s); trying again", key, exc.reason)
            return False
        for answer in in_taking_order(stored):
            reply = await self.answer(running, as_message(answer))
            if reply.result == "unavailable":
                return False  # not recorded: read again later
            if reply.result == "accepted":
                log.info("session %s took a tool answer stored while its host was away", key)
        return True

    async def answer(self, running: RunningTurn, message: SubmitToolResult | DecideApproval) -> ControlReply:
        """Take a client's result or a person's decision for one of the turn's calls; what became of it."""
        try:
            if isinstance(message, SubmitToolResult):
                return await self._submit(running, message)
            return await self._decide(running, message)
        except SalonError as exc:
            # Not recorded, so not taken: the caller may send it again.
            log.warning("a tool answer for session %s could not be recorded (%s)", self._key, exc.reason)
            return ControlReply("unavailable", exc.reason, "the answer could not be recorded; retry shortly")

    async def _submit(self, running: RunningTurn, message: SubmitToolResult) -> ControlReply:
        calls = running.calls
        async with calls.lock:
            entry = calls.entries.get(message.call_id)
            if entry is None or entry.server or (calls.closed and not entry.answered):
                return ControlReply("not_found")
            if entry.answered:
                return ControlReply("duplicate")
            if entry.requires_approval and entry.approval is None:
                return ControlReply("approval_pending")
            result = ToolResult(entry.call_id, entry.tool, message.content, is_error=message.is_error)
            updated = await self._take_result(running, entry, result, "client", retry=False)
        self._finish(running, updated)
        return ControlReply("accepted")

    async def _decide(self, running: RunningTurn, message: DecideApproval) -> ControlReply:
        calls = running.calls
        async with calls.lock:
            entry = calls.entries.get(message.call_id)
            if entry is None or not entry.requires_approval:
                return ControlReply("not_found")
            if entry.approval is not None:
                return ControlReply("duplicate", verdict="approve" if entry.approval.approved else "reject")
            if entry.answered or calls.closed:
                return ControlReply("not_found")
            now = time.time_ns()
            approval = ToolApproval(message.approve, message.reason, message.approver, message.decided_by, now)
            updated = decided(entry, approval)
            if not message.approve:
                updated = answered(updated, rejection(call_of(entry), message.reason), "rejected", now)
            seq = running.emitter.last_seq
            (updated,) = _numbered([updated], seq, calls.entries)
            await self._record(running, "update", seq, [updated], retry=False)
            calls.update([updated])
            await _send(running, [updated], seq)
        if not message.approve:
            self._finish(running, updated)
        elif updated.server:
            self._start_mcp(running, updated)
        return ControlReply("accepted", verdict="approve" if message.approve else "reject")

    async def _take_result(
        self, running: RunningTurn, entry: ToolCallEntry, result: ToolResult, source: ToolSource, *, retry: bool
    ) -> ToolCallEntry:
        """Record and send a call's result (with the calls' lock held): checked by the injection guardrail first,
        a blocked one replaced by an error the model sees."""
        decision = Guardrails(running.turn.guardrails).check_tool_result(result.content, entry.call_id)
        if decision is not None and decision.action == "block":
            log.warning("guardrail withheld a tool result of session %s: prompt injection", self._key)
            result = ToolResult(entry.call_id, entry.tool, INJECTION_WITHHELD, is_error=True)
        calls = running.calls
        seq = running.emitter.last_seq
        (updated,) = _numbered([answered(entry, result, source, guardrail=decision)], seq, calls.entries)
        await self._record(running, "update", seq, [updated], retry=retry)
        calls.update([updated])
        await _send(running, [updated], seq)
        return updated

    # MCP calls

    def _start_mcp(self, running: RunningTurn, entry: ToolCallEntry) -> None:
        task = asyncio.create_task(self._run_mcp(running, entry), name=f"mcp-call-{entry.call_id}")
        running.calls.tasks.add(task)
        task.add_done_callback(running.calls.tasks.discard)

    async def _run_mcp(self, running: RunningTurn, entry: ToolCallEntry) -> None:
        result = await self._servers.call(self._key.tenant_id, call_of(entry), entry.server)
        await self._mcp_result(running, entry.call_id, result)

    async def _mcp_result(self, running: RunningTurn, call_id: str, result: ToolResult) -> None:
        calls = running.calls
        try:
            async with calls.lock:
                entry = calls.entries[call_id]
                if entry.answered or calls.closed:
                    return
                updated = await self._take_result(running, entry, result, "mcp", retry=True)
        except SalonError as exc:
            # The result cannot be recorded (the session moved to another host): the turn cannot go on here.
            calls.failure = exc
            calls.changed.set()
            return
        self._finish(running, updated)

    def _finish(self, running: RunningTurn, entry: ToolCallEntry) -> None:
        """A call has its result: count it and end its span."""
        self._stats.called(entry)
        span = running.calls.spans.pop(entry.call_id, None)
        if span is not None:
            approved = entry.approval.approved if entry.approval is not None else None
            otel.end_tool_span(
                span, source=entry.source, is_error=entry.is_error, result=entry.result, approved=approved
            )

    # Recording

    async def _record(
        self,
        running: RunningTurn,
        kind: str,
        seq: int,
        entries: Sequence[ToolCallEntry],
        *,
        retry: bool,
        number: int = 0,
        deltas: tuple[str, ...] = (),
        result: ModelResult | None = None,
    ) -> None:
        """Append one step of the turn to the ledger, before its events are sent."""
        calls = running.calls
        record = ProgressRecord(
            tenant_id=self._key.tenant_id,
            session_id=self._key.session_id,
            turn_id=running.turn_id,
            incarnation=self._recorder.incarnation,
            index=calls.steps + 1,
            kind="round" if kind == "round" else "update",
            seq=seq,
            calls=tuple(entries),
            round=number,
            deltas=deltas,
            usage=usage_of(result) if result is not None else {},
            recorded_at_ns=time.time_ns(),
        )
        await self._recorder.append_progress(record, retry=retry and not self._closing())
        calls.steps += 1

    # Taking a turn up again

    async def resume(self, running: RunningTurn) -> None:
        """Rebuild ``running`` from what an earlier attempt recorded: its rounds, calls, answer so far and
        usage; send the events of its last recorded step that were not sent; settle the MCP calls that were
        running when that attempt ended. The turn then waits for the rest, if any."""
        records = running.progress
        if not records:
            return
        calls = running.calls
        calls.restore(records)
        last = records[-1]
        sent_until = max([last.seq, *(s for c in last.calls for s, _ in entry_events(c))])
        current = [e.body.text for e in running.turn.prior_events if e.seq > sent_until and isinstance(e.body, Delta)]
        running.deltas = [*calls.round_deltas(), *current]
        running.round_start = len(running.deltas) - len(current)
        running.results = calls.results()
        running.model_rounds = len(calls.rounds)
        # The recorded rounds ended well (they called tools): the turn goes on from there.
        running.outcome.status, running.outcome.result = "completed", calls.rounds[-1].result
        start = max(running.turn.prior_seq, last.seq)
        running.emitter.skip_to(start)
        await _send(running, last.calls, start)
        for entry in calls.unanswered():
            ran = entry.server and (not entry.requires_approval or entry.approval is not None)
            if ran:
                await self._mcp_result(running, entry.call_id, ToolResult(entry.call_id, entry.tool, RESTARTED, True))
            else:
                calls.spans[entry.call_id] = otel.start_tool_span(
                    entry.tool,
                    entry.call_id,
                    server=entry.server,
                    round_index=entry.round,
                    requires_approval=entry.requires_approval,
                    arguments=entry.arguments_json,
                )
        if calls.failure is not None:
            raise calls.failure


def _numbered(entries: Sequence[ToolCallEntry], last_seq: int, before: dict[str, ToolCallEntry]) -> list[ToolCallEntry]:
    """``entries`` with sequence numbers for their new events, after ``last_seq``, in order."""
    out = []
    for entry in entries:
        with_seqs, last_seq = numbered(entry, last_seq, before.get(entry.call_id))
        out.append(with_seqs)
    return out


async def _send(running: RunningTurn, entries: Sequence[ToolCallEntry], after_seq: int) -> None:
    """Send the events of ``entries`` numbered after ``after_seq``, in their order (their numbers are the ones
    the emitter gives next)."""
    events = sorted((e for entry in entries for e in entry_events(entry) if e[0] > after_seq), key=lambda e: e[0])
    for seq, body in events:
        if seq != running.emitter.last_seq + 1:
            log.error("tool event numbered %d sent after %d; numbering continues", seq, running.emitter.last_seq)
        await running.emitter.emit(body)


async def _answered(running: RunningTurn, retry: Callable[[], Awaitable[bool]] | None = None) -> None:
    calls = running.calls
    while calls.unanswered() and calls.failure is None:
        calls.changed.clear()
        if not calls.unanswered():
            return
        if retry is None:
            await calls.changed.wait()
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(calls.changed.wait(), STORED_RETRY_S)
        if await retry():
            retry = None


async def _stop_tasks(tasks: set[asyncio.Task[None]]) -> None:
    running = list(tasks)
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)


def _cancelled(entry: ToolCallEntry) -> ToolResult:
    return ToolResult(entry.call_id, entry.tool, CALL_CANCELLED, is_error=True)


def _fresh_id(number: int, n: int, taken: set[str]) -> str:
    candidate, extra = f"call_{number}_{n}", 0
    while candidate in taken:
        extra += 1
        candidate = f"call_{number}_{n}_{extra}"
    return candidate
