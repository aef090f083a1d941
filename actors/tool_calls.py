"""A turn's tool calls as they stand: the model rounds that called tools, each call with its approval and result,
and the events that told the client about them, with their sequence numbers.

This is the turn's side of the action layer that needs no I/O: making a call's entry from the model's call,
answering it, the events an entry stands for (the same for a first run, a turn taken up after its host died
and a replay of the turn's record), the messages the next model round sees, and rebuilding all of it from the
turn's progress records. Running calls, waiting and recording are :mod:`salon.actors.tool_loop`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import Span

from salon.actors.events import ApprovalDecided, ApprovalRequired, EventBody, Guardrail, ToolCallEvent, ToolResultEvent
from salon.actors.memory import estimate_tokens
from salon.actors.model import Message, ModelResult, ToolCall, ToolResult, ToolSpec
from salon.actors.tools import MAX_ARGUMENTS_BYTES, MAX_CALL_ID_CHARS, preview
from salon.storage import GuardrailDecision, ProgressRecord, ToolApproval, ToolCallEntry, ToolSource

_USAGE_FIELDS = (
    "stop_reason",
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "provider",
    "model",
    "estimated_cost_usd",
)


def usage_of(result: ModelResult) -> dict[str, Any]:
    """What a progress record keeps of a round's result."""
    return {name: getattr(result, name) for name in _USAGE_FIELDS}


def result_of(usage: Mapping[str, Any]) -> ModelResult:
    """The round's result a progress record kept (its usage and stop reason)."""
    return ModelResult(**{name: usage[name] for name in _USAGE_FIELDS if name in usage})


def total(results: Sequence[ModelResult]) -> ModelResult:
    """The rounds' results summed (tokens and cost); the last round's stop reason, provider and model."""
    if not results:
        return ModelResult()
    last = results[-1]
    return dataclasses.replace(
        last,
        input_tokens=sum(r.input_tokens for r in results),
        output_tokens=sum(r.output_tokens for r in results),
        cache_read_input_tokens=sum(r.cache_read_input_tokens for r in results),
        cache_creation_input_tokens=sum(r.cache_creation_input_tokens for r in results),
        estimated_cost_usd=sum(r.estimated_cost_usd for r in results),
    )


def call_id_usable(call_id: str, taken: Iterable[str]) -> bool:
    """Whether a model's call id can name its call in the API: 1 to 256 printable characters, new in the turn."""
    return bool(call_id) and len(call_id) <= MAX_CALL_ID_CHARS and call_id.isprintable() and call_id not in taken


def new_entry(call: ToolCall, spec: ToolSpec | None, number: int, now_ns: int) -> ToolCallEntry:
    """The entry of a call the model made in round ``number`` (``spec``: the offered tool it names, if any)."""
    arguments = call.arguments_json
    if len(arguments.encode("utf-8", "surrogatepass")) > MAX_ARGUMENTS_BYTES:
        arguments = "{}"  # refused as too large: the record keeps none of it
    return ToolCallEntry(
        call_id=call.call_id,
        tool=call.name,
        arguments_json=arguments,
        server=spec.server if spec is not None else "",
        round=number,
        requires_approval=spec.requires_approval if spec is not None else False,
        called_at_ns=now_ns,
        call_tokens=estimate_tokens(call.name + arguments),
    )


def answered(
    entry: ToolCallEntry,
    result: ToolResult,
    source: ToolSource,
    at_ns: int = 0,
    guardrail: GuardrailDecision | None = None,
) -> ToolCallEntry:
    """``entry`` with its result."""
    return dataclasses.replace(
        entry,
        result=result.content,
        is_error=result.is_error,
        source=source,
        result_at_ns=at_ns or time.time_ns(),
        result_tokens=estimate_tokens(result.content),
        guardrail=guardrail,
    )


def decided(entry: ToolCallEntry, approval: ToolApproval) -> ToolCallEntry:
    """``entry`` with its approval decided."""
    return dataclasses.replace(entry, approval=approval)


def waits(entry: ToolCallEntry) -> bool:
    """Whether the turn waits for someone outside the engine to answer ``entry``: a client's result or a person's
    decision (an MCP call without approval is the engine's own work)."""
    return not entry.answered and (not entry.server or (entry.requires_approval and entry.approval is None))


def call_of(entry: ToolCallEntry) -> ToolCall:
    """The call as the model made it."""
    return ToolCall(entry.call_id, entry.tool, entry.arguments_json)


def result_for_model(entry: ToolCallEntry) -> ToolResult:
    """The result as the model sees it."""
    return ToolResult(entry.call_id, entry.tool, entry.result, is_error=entry.is_error)


def entry_events(entry: ToolCallEntry) -> list[tuple[int, EventBody]]:
    """The events ``entry`` stands for, with their sequence numbers (those sent so far: a number is 0 until its
    event is sent)."""
    events: list[tuple[int, EventBody]] = []
    if entry.call_seq:
        events.append(
            (
                entry.call_seq,
                ToolCallEvent(
                    entry.call_id,
                    entry.tool,
                    entry.arguments_json,
                    entry.requires_approval,
                    entry.server,
                    entry.round,
                    entry.wait_deadline_ns,
                ),
            )
        )
    if entry.approval_seq:
        body = ApprovalRequired(
            entry.call_id, entry.tool, entry.arguments_json, entry.server, entry.round, entry.wait_deadline_ns
        )
        events.append((entry.approval_seq, body))
    if entry.decided_seq and entry.approval is not None:
        a = entry.approval
        events.append((entry.decided_seq, ApprovalDecided(entry.call_id, a.approved, a.reason, a.approver)))
    if entry.guardrail_seq and entry.guardrail is not None:
        events.append((entry.guardrail_seq, Guardrail((entry.guardrail,))))
    if entry.result_seq:
        events.append((entry.result_seq, _result_event(entry)))
    return events


def _result_event(entry: ToolCallEntry) -> ToolResultEvent:
    text, size = preview(entry.result)
    approval = entry.approval
    since = approval.decided_at_ns if approval is not None and approval.approved else entry.called_at_ns
    duration = max(entry.result_at_ns - since, 0) / 1e9 if entry.result_at_ns and since else 0.0
    return ToolResultEvent(entry.call_id, entry.tool, entry.is_error, entry.source, text, size, duration)


def numbered(entry: ToolCallEntry, last_seq: int, before: ToolCallEntry | None = None) -> tuple[ToolCallEntry, int]:
    """``entry`` with sequence numbers for the events it adds to ``before`` (the same call earlier; None for a
    new call), numbered after ``last_seq``; and the last number used."""
    seq = last_seq
    numbers: dict[str, int] = {}
    valid = entry.source != "invalid_call"
    due = {
        "call_seq": valid,
        "approval_seq": valid and entry.requires_approval,
        "decided_seq": entry.approval is not None,
        "guardrail_seq": entry.guardrail is not None,
        "result_seq": entry.answered,
    }
    for name, wanted in due.items():
        known = getattr(before, name, 0) or getattr(entry, name)
        if not known and wanted:
            seq += 1
        numbers[name] = known or (seq if wanted else 0)
    return (
        dataclasses.replace(
            entry,
            call_seq=numbers["call_seq"],
            approval_seq=numbers["approval_seq"],
            decided_seq=numbers["decided_seq"],
            guardrail_seq=numbers["guardrail_seq"],
            result_seq=numbers["result_seq"],
        ),
        seq,
    )


@dataclass(frozen=True, slots=True)
class ToolRound:
    """A model round that called tools."""

    number: int
    deltas: tuple[str, ...]
    """The text the round streamed before its calls."""
    result: ModelResult
    call_ids: tuple[str, ...]

    @property
    def text(self) -> str:
        """The round's text."""
        return "".join(self.deltas)


@dataclass(eq=False)
class TurnCalls:
    """One turn's tool rounds and calls, in order, and what its waits need: a lock that keeps recording and
    sending a step together, a signal that some call changed, the MCP calls running, and each waiting call's
    span."""

    rounds: list[ToolRound] = field(default_factory=list)
    entries: dict[str, ToolCallEntry] = field(default_factory=dict)
    steps: int = 0
    """Progress records appended for the turn (the next one's index is ``steps + 1``)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    spans: dict[str, Span] = field(default_factory=dict)
    closed: bool = False
    """The turn stopped waiting (it is ending): answers are no longer taken."""
    failure: BaseException | None = None
    """Why the turn cannot go on here (an MCP result could not be recorded: the session moved)."""

    def __bool__(self) -> bool:
        return bool(self.rounds)

    def of_round(self, number: int) -> list[ToolCallEntry]:
        """The calls of round ``number``, in the model's order."""
        return [self.entries[i] for r in self.rounds if r.number == number for i in r.call_ids]

    def unanswered(self) -> list[ToolCallEntry]:
        """The calls of the last round still without a result."""
        return [e for e in self.of_round(self.rounds[-1].number) if not e.answered] if self.rounds else []

    def add_round(self, tool_round: ToolRound, entries: Sequence[ToolCallEntry]) -> None:
        """A round that called tools, with its calls' entries."""
        self.rounds.append(tool_round)
        self.update(entries)

    def update(self, entries: Iterable[ToolCallEntry]) -> None:
        """Calls as they stand now."""
        for entry in entries:
            self.entries[entry.call_id] = entry
        self.changed.set()

    def restore(self, records: Sequence[ProgressRecord]) -> None:
        """Rebuild the rounds and calls from the turn's progress records, in order."""
        for record in records:
            if record.kind == "round":
                ids = tuple(c.call_id for c in record.calls)
                self.rounds.append(ToolRound(record.round, record.deltas, result_of(record.usage), ids))
            self.update(record.calls)
            self.steps = max(self.steps, record.index)

    def messages(self, turn_id: str) -> list[Message]:
        """What the next model round sees of the rounds so far: each round's text and calls, then their
        results."""
        out: list[Message] = []
        for r in self.rounds:
            entries = self.of_round(r.number)
            out.append(Message("assistant", r.text, turn_id, tool_calls=tuple(call_of(e) for e in entries)))
            out.append(Message("tool", "", turn_id, tool_results=tuple(result_for_model(e) for e in entries)))
        return out

    def ordered(self) -> tuple[ToolCallEntry, ...]:
        """Every call, round by round, in the model's order."""
        return tuple(self.entries[i] for r in self.rounds for i in r.call_ids)

    def results(self) -> list[ModelResult]:
        """Each tool round's model result."""
        return [r.result for r in self.rounds]

    def round_deltas(self) -> list[str]:
        """The text of the tool rounds, as streamed."""
        return [d for r in self.rounds for d in r.deltas]
