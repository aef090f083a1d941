"""Numbering a turn's events, and the events a recorded turn stands for (to replay or finish it).

Sequence numbers are per turn, from 1, without gaps: a turn continued after its host died goes on from the
last number the earlier attempt sent, and a turn replayed from its record gets the numbers it had first (its
tool calls' events at the numbers they were sent with, the answer's pieces in between).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Sequence

from salon.actors.context import PassageEntry, TurnContext
from salon.actors.events import (
    Accepted,
    Cancelled,
    Citation,
    Citations,
    Completed,
    Delta,
    EventBody,
    Failed,
    Guardrail,
    TurnEvent,
    Usage,
)
from salon.actors.model import ModelResult
from salon.actors.tool_calls import entry_events
from salon.storage import GuardrailDecision, TurnRecord

EventSink = Callable[[TurnEvent], Awaitable[None]]
"""Where a turn's events go (the host publishes them on the turn's event subject)."""
DeltaJoin = Callable[[int, str], bool]
"""Adds text to the turn's delta numbered so, if that delta has not left yet (True); else False."""
JOINS_PER_YIELD = 8
"""Pieces joined between two turns of the event loop: a producer that never pauses still lets the turn's
store (and other sessions) run."""


class TurnEmitter:
    """Numbers and sends one turn's events.

    Sequence numbers are assigned and events handed to the sink under one lock, so events reach the sink
    in sequence order even when different tasks emit for the same turn (the accepted event is sent by the
    submitter while the session's runner may already be streaming). Nothing is sent after a terminal event.
    """

    def __init__(
        self, session_id: str, turn_id: str, sink: EventSink, *, start_seq: int = 0, join: DeltaJoin | None = None
    ) -> None:
        self.session_id = session_id
        self.turn_id = turn_id
        self._sink = sink
        self._join = join
        self._seq = start_seq
        """Events up to ``start_seq`` were sent by an earlier attempt at the turn; numbering continues."""
        self._delta_seq = -1
        """Number of the last delta this emitter sent."""
        self._joined = 0
        self._lock = asyncio.Lock()
        self.finished = False

    @property
    def last_seq(self) -> int:
        """Sequence number of the last event emitted (0 before the first)."""
        return self._seq

    def skip_to(self, seq: int) -> None:
        """Number the next event after ``seq``: events up to it were sent by an earlier attempt at the turn (a
        number never goes back)."""
        self._seq = max(self._seq, seq)

    async def emit(self, body: EventBody) -> None:
        """Number ``body`` and send it (dropped once the turn has had its terminal event)."""
        async with self._lock:
            await self._emit(body)

    async def _emit(self, body: EventBody) -> None:
        if self.finished:
            return
        self._seq += 1
        event = TurnEvent(self.session_id, self.turn_id, self._seq, time.time_ns(), body)
        if event.terminal:
            self.finished = True
        await self._sink(event)

    async def accepted(self, queue_position: int, trace_id: str = "", replayed: bool = False) -> None:
        """Emit the first event: the turn reached its session."""
        await self.emit(Accepted(queue_position, trace_id, replayed))

    async def citations(self, passages: Sequence[PassageEntry]) -> None:
        """Emit the passages the prompt holds, before the first token."""
        await self.emit(Citations(tuple(citation_of(p) for p in passages)))

    async def delta(self, text: str, pieces: list[str], *, join: bool = False) -> None:
        """Emit a piece of the answer and add it to ``pieces`` (the answer's pieces as sent) in the same step, so
        a turn cancelled meanwhile records what it sent. With ``join``, the piece goes into the previous event
        instead when that is this emitter's delta and has not left yet (the sink's ``join`` decides), and into
        the last of ``pieces``: a replay from the record then numbers the pieces as they were sent."""
        async with self._lock:
            joiner = self._join if join and self._delta_seq == self._seq and not self.finished else None
            if joiner is not None and joiner(self._seq, text):
                pieces[-1] += text
                self._joined += 1
                if self._joined % JOINS_PER_YIELD == 0:
                    await asyncio.sleep(0)
                return
            pieces.append(text)
            await self._emit(Delta(text))
            if not self.finished:
                self._delta_seq = self._seq

    async def usage(self, result: ModelResult, model_rounds: int = 0) -> None:
        """Emit what the turn consumed (``result``: its model rounds summed)."""
        await self.emit(Usage.of(result, model_rounds))

    async def completed(self, stop_reason: str, stop_sequence: str = "") -> None:
        """Emit the terminal event of a turn that finished normally."""
        await self.emit(Completed(stop_reason, stop_sequence))

    async def error(
        self, reason: str, message: str, *, retryable: bool, partial: bool, retry_after_s: float | None = None
    ) -> None:
        """Emit the terminal event of a turn that failed."""
        await self.emit(Failed(reason, message, retryable=retryable, partial=partial, retry_after_s=retry_after_s))

    async def guardrail(self, decisions: Sequence[GuardrailDecision]) -> None:
        """Emit what the guardrails decided (names checks and counts, never the matched text)."""
        await self.emit(Guardrail(tuple(decisions)))

    async def cancelled(self, reason: str) -> None:
        """Emit the terminal event of a cancelled turn."""
        await self.emit(Cancelled(reason))


def citation_of(passage: PassageEntry) -> Citation:
    """What the client is told about a passage of the prompt."""
    return Citation(
        source=passage.source,
        document_id=passage.document_id,
        chunk_id=passage.chunk_id,
        score=passage.score,
        table_version=passage.table_version,
        title=passage.title,
    )


Step = Callable[[], Awaitable[None]]

INPUT_SOURCES = frozenset({"user", "passage"})
"""Decisions about what went into the prompt: sent right after ``accepted``. The others (about the output)
are sent after the last delta."""


def input_steps(emitter: TurnEmitter, record: TurnRecord) -> list[Step]:
    """The guardrail notice about the turn's input (if any), sent before the answer."""
    decisions = [d for d in record.guardrails if d.source in INPUT_SOURCES]
    return [functools.partial(emitter.guardrail, decisions)] if decisions else []


def ending_steps(emitter: TurnEmitter, record: TurnRecord) -> list[Step]:
    """The events after a turn's deltas, from its record: the same for a first run and for a replay."""
    output = [d for d in record.guardrails if d.source not in INPUT_SOURCES]
    notice: list[Step] = [functools.partial(emitter.guardrail, output)] if output else []
    return notice + _usage_steps(emitter, record) + _terminal_steps(emitter, record)


def _usage_steps(emitter: TurnEmitter, record: TurnRecord) -> list[Step]:
    """The usage event: for a completed turn, and for one that ended otherwise after tool rounds (whose tokens
    were spent and count against the tenant's budget)."""
    spent = record.input_tokens or record.output_tokens
    if record.status != "completed" and not (spent and (record.tool_calls or record.model_rounds > 1)):
        return []
    usage = ModelResult(
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cache_read_input_tokens=record.cache_read_input_tokens,
        cache_creation_input_tokens=record.cache_creation_input_tokens,
        provider=record.provider,
        model=record.model,
        estimated_cost_usd=record.estimated_cost_usd,
    )
    return [functools.partial(emitter.usage, usage, record.model_rounds)]


def _terminal_steps(emitter: TurnEmitter, record: TurnRecord) -> list[Step]:
    if record.status == "completed":
        return [functools.partial(emitter.completed, record.stop_reason or "end_turn")]
    if record.status in ("cancelled", "rolled_back"):
        return [functools.partial(emitter.cancelled, record.error_message or "the turn was cancelled")]
    return [
        functools.partial(
            emitter.error,
            record.error_reason or "INTERNAL",
            record.error_message or "the turn failed",
            retryable=record.retryable,
            partial=record.status == "partial",
            retry_after_s=record.retry_after_s or None,
        )
    ]


def record_steps(emitter: TurnEmitter, record: TurnRecord) -> list[Step]:
    """Every event a recorded turn stands for, numbered as first sent: accepted, the input guardrail notice,
    citations, deltas, the output guardrail notice, ending."""
    steps: list[Step] = [functools.partial(emitter.accepted, 0, trace_id=record.trace_id, replayed=True)]
    steps += input_steps(emitter, record)
    passages = TurnContext.from_json(record.context_json).passages
    if passages:
        steps.append(functools.partial(emitter.citations, passages))
    steps += [functools.partial(emitter.emit, body) for body in _answer_events(record, len(steps))]
    return steps + ending_steps(emitter, record)


def _answer_events(record: TurnRecord, before: int) -> list[EventBody]:
    """The answer's pieces and the tool calls' events, in the order they were sent: each tool event at its
    recorded number, the pieces filling the numbers left between them (after the ``before`` opening events)."""
    placed = [event for entry in record.tool_calls for event in entry_events(entry)]
    taken = {seq for seq, _ in placed}
    # A record shrunk to fit the ledger keeps the answer whole, without its pieces: it goes as one.
    pieces = record.deltas or ((record.reply_text,) if record.reply_text else ())
    seq = before
    for text in pieces:
        seq += 1
        while seq in taken:
            seq += 1
        placed.append((seq, Delta(text)))
    placed.sort(key=lambda item: item[0])
    return [body for _, body in placed]


async def recorded_events(record: TurnRecord, after_seq: int = 0) -> list[TurnEvent]:
    """The events of a recorded turn with a sequence number above ``after_seq`` (to resume from a record)."""
    events: list[TurnEvent] = []

    async def collect(event: TurnEvent) -> None:
        events.append(event)

    emitter = TurnEmitter(record.session_id, record.turn_id, collect)
    for step in record_steps(emitter, record):
        await step()
    return [e for e in events if e.seq > after_seq]
