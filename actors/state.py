"""A session's state between turns: its memory (messages, rolling summary) and its place in the ledger.

It is a pure function of the session's ledger records, so a snapshot of it is only a cache.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from actors.context import TurnContext
from actors.guardrails import BLOCK_REASONS
from actors.model import Message
from actors.summary import Summary
from storage import LoadedSession, TurnRecord

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
    recent: OrderedDict[str, int] = field(default_factory=OrderedDict)
    """Recently finished turns: turn id to ledger sequence."""
    summary: Summary = field(default_factory=Summary)
    """The rolling summary of the messages that left the window."""
    folding: list[Message] = field(default_factory=list)
    """Messages that left :attr:`messages` and are not in the summary yet."""

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
            self.messages.append(Message("user", record.user_text, record.turn_id, record.turn_index))
            if record.reply_text:
                self.messages.append(Message("assistant", record.reply_text, record.turn_id, record.turn_index))
        self.trim(keep_messages)
        self.recent[record.turn_id] = record.ledger_seq
        while len(self.recent) > RECENT_TURNS_KEPT:
            self.recent.popitem(last=False)

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
        if overflow > 0:
            self.folding += self.messages[:overflow]
            del self.messages[:overflow]
        through = self.summary.through_turn_index
        if self.folding and self.folding[0].turn_index <= through:
            self.folding = [m for m in self.folding if m.turn_index > through]
        cap = keep_messages * 2 + 8
        if len(self.folding) > cap:
            del self.folding[: len(self.folding) - cap]

    def unsummarized(self, window: Sequence[Message]) -> list[Message]:
        """Messages that left ``window`` and are not in the summary yet, oldest first."""
        in_window = {id(m) for m in window}
        first = next((i for i, m in enumerate(self.messages) if id(m) in in_window), len(self.messages))
        through = self.summary.through_turn_index
        return [m for m in (*self.folding, *self.messages[:first]) if m.turn_index > through]

    @classmethod
    def restore(cls, loaded: LoadedSession, incarnation: str, keep_messages: int) -> SessionState:
        """The state after the loaded snapshot and the records that follow it."""
        state = cls.from_dict(loaded.snapshot.state) if loaded.snapshot else cls(incarnation=incarnation)
        state.incarnation = incarnation
        for record in loaded.turns:
            if record.turn_index > state.turn_count:
                state.apply(record, keep_messages)
        return state

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready snapshot."""
        return {
            "version": 3,
            "incarnation": self.incarnation,
            "turn_count": self.turn_count,
            "ledger_seq": self.ledger_seq,
            "messages": [[m.role, m.text, m.turn_id, m.turn_index] for m in self.messages],
            "recent": list(self.recent.items()),
            "summary": self.summary.to_dict(),
            "folding": [[m.role, m.text, m.turn_id, m.turn_index] for m in self.folding],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionState:
        """Rebuild state from :meth:`to_dict` output."""
        state = cls(
            incarnation=str(data.get("incarnation", "")),
            turn_count=int(data.get("turn_count", 0)),
            ledger_seq=int(data.get("ledger_seq", 0)),
        )
        # Version 2 snapshots hold [role, text, turn_id]; version 3 adds the turn index.
        state.messages = [
            Message(role=m[0], text=m[1], turn_id=m[2], turn_index=int(m[3]) if len(m) > 3 else 0)
            for m in data.get("messages", [])
        ]
        state.folding = [
            Message(role=r, text=t, turn_id=i, turn_index=int(n)) for r, t, i, n in data.get("folding", [])
        ]
        state.recent = OrderedDict((str(t), int(s)) for t, s in data.get("recent", []))
        state.summary = Summary.from_dict(data.get("summary"))
        return state
