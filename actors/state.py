"""A session's state between turns: its memory (messages, rolling summary) and its place in the ledger.

It is a pure function of the session's ledger records, so a snapshot of it is only a cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from salon.actors.context import TurnContext
from salon.actors.guardrails import BLOCK_REASONS
from salon.actors.model import Message, ToolCall, ToolResult
from salon.actors.summary import Summary
from salon.storage import LoadedSession, ProgressRecord, ToolCallEntry, TurnRecord

RECENT_TURNS_KEPT = 16
"""How many finished turns a session remembers by id, to answer a redelivered turn without the model.
Retries of older turns within the dedupe window never reach the session (JetStream drops them); each entry
costs memory in every live session (bench/RESULTS.md: memory per session)."""


@dataclass(slots=True)
class SessionState:
    """What a session remembers between turns. It is a pure function of its ledger records, so a snapshot is
    only a cache: activation applies the records after the latest snapshot."""

    incarnation: str = ""
    messages: list[Message] = field(default_factory=list)
    turn_count: int = 0
    ledger_seq: int = 0
    """Ledger sequence of the last turn applied."""
    recent: dict[str, int] = field(default_factory=dict)
    """Recently finished turns: turn id to ledger sequence, oldest first (a plain dict keeps insertion order at
    half an OrderedDict's size, and every live session holds one)."""
    summary: Summary = field(default_factory=Summary)
    """The rolling summary of the messages that left the window."""
    folding: list[Message] = field(default_factory=list)
    """Messages that left :attr:`messages` and are not in the summary yet."""
    unfinished: dict[str, list[ProgressRecord]] = field(default_factory=dict)
    """Progress records of turns that have not ended (they were waiting for tools when the session was last
    active, or wait now): a turn taken up again continues from them."""
    forgotten: set[str] = field(default_factory=set)
    """Turns sent with ``do_not_remember`` whose messages are still held: they stay in the window while it
    reaches them but are never folded into the summary."""

    def apply(self, record: TurnRecord, keep_messages: int) -> None:
        """Fold one recorded turn into the state.

        A record also carries the summary its prompt held: the newest one seen wins, so a session recovers
        its summary from the ledger (a summary written after turn N is recorded with turn N+1)."""
        self.turn_count = record.turn_index
        self.ledger_seq = record.ledger_seq
        if record.context_json:
            self.adopt_summary(TurnContext.from_json(record.context_json).summary, keep_messages)
        # A turn a guardrail blocked stays out of memory: the next turns' prompts must not carry it again.
        if record.status != "rolled_back" and record.error_reason not in BLOCK_REASONS:
            self.messages += recorded_messages(record)
            if record.do_not_remember:
                self.forgotten.add(record.turn_id)
        self.unfinished.pop(record.turn_id, None)
        self.trim(keep_messages)
        self.recent[record.turn_id] = record.ledger_seq
        while len(self.recent) > RECENT_TURNS_KEPT:
            del self.recent[next(iter(self.recent))]

    def adopt_summary(self, summary: Summary, keep_messages: int) -> None:
        """Take ``summary`` if it is newer than the one held."""
        if summary.version > self.summary.version:
            self.summary = summary
            self.trim(keep_messages)

    def trim(self, keep_messages: int) -> None:
        """Keep the last ``keep_messages`` messages (the window's reach); those that leave wait in
        :attr:`folding` until the summary covers them, up to a bound past which the oldest go anyway (they
        are still in long-term memory)."""
        overflow = len(self.messages) - keep_messages
        # Whole turns only: a tool call never stays behind without its result, nor a result without its call.
        while 0 < overflow < len(self.messages) and _same_turn(self.messages[overflow - 1], self.messages[overflow]):
            overflow += 1
        if overflow > 0:
            self.folding += self.messages[:overflow]
            # A new list of the exact length, not the old one shortened: every live session holds its window,
            # and a shortened list keeps the room it grew to.
            self.messages = self.messages[overflow:]
        through = self.summary.through_turn_index
        if self.folding and self.folding[0].turn_index <= through:
            self.folding = [m for m in self.folding if m.turn_index > through]
        cap = keep_messages * 2 + 8
        if len(self.folding) > cap:
            del self.folding[: len(self.folding) - cap]
        if self.forgotten:
            self.forgotten &= {m.turn_id for m in (*self.folding, *self.messages)}

    def unsummarized(self, window: Sequence[Message]) -> list[Message]:
        """Messages that left ``window`` and are not in the summary yet, oldest first."""
        in_window = {id(m) for m in window}
        first = next((i for i, m in enumerate(self.messages) if id(m) in in_window), len(self.messages))
        through = self.summary.through_turn_index
        held = (*self.folding, *self.messages[:first])
        return [m for m in held if m.turn_index > through and m.turn_id not in self.forgotten]

    def note_progress(self, record: ProgressRecord) -> None:
        """A step of a running turn was recorded."""
        self.unfinished.setdefault(record.turn_id, []).append(record)

    @classmethod
    def restore(cls, loaded: LoadedSession, incarnation: str, keep_messages: int) -> SessionState:
        """The state after the loaded snapshot and the records that follow it."""
        state = cls.from_dict(loaded.snapshot.state) if loaded.snapshot else cls(incarnation=incarnation)
        state.incarnation = incarnation
        for progress in loaded.progress:
            steps = state.unfinished.setdefault(progress.turn_id, [])
            if all(p.index != progress.index for p in steps):
                steps.append(progress)
        for record in loaded.turns:
            if record.turn_index > state.turn_count:
                state.apply(record, keep_messages)
            state.unfinished.pop(record.turn_id, None)
        return state

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        return {
            "version": 4,
            "incarnation": self.incarnation,
            "turn_count": self.turn_count,
            "ledger_seq": self.ledger_seq,
            "messages": [_message_row(m) for m in self.messages],
            "recent": list(self.recent.items()),
            "summary": self.summary.to_dict(),
            "folding": [_message_row(m) for m in self.folding],
            "unfinished": [p.to_dict() for steps in self.unfinished.values() for p in steps],
            "forgotten": sorted(self.forgotten),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        """Rebuild state from :meth:`to_dict` output."""
        state = cls(
            incarnation=str(data.get("incarnation", "")),
            turn_count=int(data.get("turn_count", 0)),
            ledger_seq=int(data.get("ledger_seq", 0)),
        )
        # Version 2 snapshots hold [role, text, turn_id]; version 3 adds the turn index, version 4 the tool
        # calls and results.
        state.messages = [_message_from_row(m) for m in data.get("messages", [])]
        state.folding = [_message_from_row(m) for m in data.get("folding", [])]
        state.recent = {str(t): int(s) for t, s in data.get("recent", [])}
        state.summary = Summary.from_dict(data.get("summary"))
        state.forgotten = {str(t) for t in data.get("forgotten", [])}
        for raw in data.get("unfinished", []):
            state.note_progress(ProgressRecord.from_dict(raw))
        return state


def _same_turn(a: Message, b: Message) -> bool:
    return bool(a.turn_id) and a.turn_id == b.turn_id


def _message_row(m: Message) -> list[Any]:
    row: list[Any] = [m.role, m.text, m.turn_id, m.turn_index]
    if m.tool_calls or m.tool_results:
        row.append([[c.call_id, c.name, c.arguments_json] for c in m.tool_calls])
        row.append([[r.call_id, r.name, r.content, r.is_error] for r in m.tool_results])
    return row


def _message_from_row(row: Sequence[Any]) -> Message:
    calls = tuple(ToolCall(str(i), str(n), str(a)) for i, n, a in row[4]) if len(row) > 4 else ()
    results = tuple(ToolResult(str(i), str(n), str(c), bool(e)) for i, n, c, e in row[5]) if len(row) > 5 else ()
    turn_index = int(row[3]) if len(row) > 3 else 0
    return Message(row[0], row[1], row[2], turn_index, tool_calls=calls, tool_results=results)


def recorded_messages(record: TurnRecord) -> list[Message]:
    """A recorded turn as the messages later prompts see: the user's message, then each model round that called
    tools (its text and calls, then a tool message with their results, kept together), then the answer."""
    turn_id, index = record.turn_id, record.turn_index
    messages = [Message("user", record.user_text, turn_id, index)]
    reply, offset = record.reply_text, 0
    rounds = sorted({c.round for c in record.tool_calls})
    for position, number in enumerate(rounds):
        calls = [c for c in record.tool_calls if c.round == number]
        chars = record.round_chars[position] if position < len(record.round_chars) else 0
        text, offset = reply[offset : offset + chars], offset + chars
        messages.append(Message("assistant", text, turn_id, index, tool_calls=tuple(_call(c) for c in calls)))
        messages.append(Message("tool", "", turn_id, index, tool_results=tuple(_result(c) for c in calls)))
    if reply[offset:]:
        messages.append(Message("assistant", reply[offset:], turn_id, index))
    return messages


def _call(entry: ToolCallEntry) -> ToolCall:
    return ToolCall(entry.call_id, entry.tool, entry.arguments_json)


def _result(entry: ToolCallEntry) -> ToolResult:
    # A call the turn ended without (it should not happen: ending settles every call) reads as never run.
    content = entry.result if entry.answered else "The call did not run: the turn ended first."
    return ToolResult(entry.call_id, entry.tool, content, is_error=entry.is_error or not entry.answered)
