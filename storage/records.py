"""What the ledger carries and the tables hold: one record per finished turn, and session snapshots.

Records are plain dataclasses encoded as JSON on the ledger (readable with any NATS tool) and turned into
Arrow rows by ``storage.lance.schemas``. The turn key (tenant, session, turn id) is the identity of a turn
everywhere: JetStream message id, ledger entry, transcript row.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

TurnStatus = Literal["completed", "failed", "partial", "cancelled", "rolled_back"]
"""``rolled_back``: cancelled by a newer turn under the rollback policy, and erased from memory and history
(the record stays in the ledger so a retry of the same turn id is answered, not run again)."""

RECORD_HEADER = "Salon-Record"
"""Ledger message header naming what the entry holds: one of the kinds below."""
KIND_TURN = "turn"
KIND_SNAPSHOT = "snapshot"
KIND_ACTIVATION = "activation"
"""A fencing marker: appended by each activation of a session, never stored in the tables."""


def turn_key(tenant_id: str, session_id: str, turn_id: str) -> str:
    """The identity of a turn across the bus, the ledger and the tables."""
    return f"{tenant_id}.{session_id}.{turn_id}"


@dataclass(frozen=True, slots=True)
class GuardrailDecision:
    """What one guardrail decided about a turn. Never carries the text that triggered it."""

    check: str
    """``injection``, ``redaction``, ``canary`` or ``input``."""
    action: str
    """``flag`` (recorded, the turn goes on), ``block`` (the turn ends) or ``redact`` (text replaced)."""
    reason: str
    """Stable UPPER_SNAKE_CASE reason, e.g. ``PROMPT_INJECTION``, ``SECRET``, ``CARD_NUMBER``."""
    source: str = ""
    """Where the text came from: ``user``, ``passage`` or ``output``."""
    count: int = 1
    """How many matches (redactions) or passages the decision covers."""
    score: float = 0.0
    """Injection score, when the check scores."""
    rules: tuple[str, ...] = ()
    """Names of the rules that matched (not the matched text)."""
    passage: int = -1
    """For a retrieved passage: its index in the list checked."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ledger record)."""
        return {
            "check": self.check,
            "action": self.action,
            "reason": self.reason,
            "source": self.source,
            "count": self.count,
            "score": self.score,
            "rules": list(self.rules),
            "passage": self.passage,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GuardrailDecision:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            check=str(data.get("check", "")),
            action=str(data.get("action", "")),
            reason=str(data.get("reason", "")),
            source=str(data.get("source", "")),
            count=int(data.get("count", 1)),
            score=float(data.get("score", 0.0)),
            rules=tuple(str(r) for r in data.get("rules", ())),
            passage=int(data.get("passage", -1)),
        )


@dataclass(frozen=True, slots=True)
class TurnRecord:
    """The outcome of one turn, written to the ledger before the turn is acknowledged."""

    tenant_id: str
    session_id: str
    turn_id: str
    incarnation: str
    turn_index: int
    """1 for the session's first turn, then 2, 3 …"""
    status: TurnStatus
    user_text: str
    reply_text: str
    deltas: tuple[str, ...] = ()
    """The answer as streamed, so a replay sends the same events with the same sequence numbers."""
    stop_reason: str = ""
    error_reason: str = ""
    error_message: str = ""
    """Why the turn failed, for people (never conversation content)."""
    retryable: bool = False
    retry_after_s: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    provider: str = ""
    model: str = ""
    estimated_cost_usd: float = 0.0
    trace_id: str = ""
    enqueued_at_ns: int = 0
    started_at_ns: int = 0
    first_token_at_ns: int = 0
    completed_at_ns: int = 0
    context_turn_ids: tuple[str, ...] = ()
    """Turns whose messages entered this turn's prompt (the window)."""
    context_json: str = ""
    """Explainable context, as a JSON object: exactly which window messages, summary (version and text),
    retrieved memories and knowledge chunks (ids, scores) entered the prompt, with token counts. Written by
    the session actor (``actors.context``); empty for turns recorded before it existed. The summary text in
    it is also how a session recovers its rolling summary from the ledger after a crash."""
    ledger_seq: int = 0
    """Stream sequence of the ledger entry (0 until appended)."""
    guardrails: tuple[GuardrailDecision, ...] = ()
    """What the guardrails decided (injection flags or blocks, redactions, a canary leak); ``reply_text``
    and ``deltas`` are already redacted."""

    @property
    def key(self) -> str:
        """The turn key."""
        return turn_key(self.tenant_id, self.session_id, self.turn_id)

    def to_json(self) -> bytes:
        """Encode for the ledger."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes, ledger_seq: int = 0) -> TurnRecord:
        """Decode a ledger entry; ``ledger_seq`` is taken from the message, not the payload."""
        raw: dict[str, Any] = json.loads(data)
        raw["deltas"] = tuple(raw.get("deltas", ()))
        raw["context_turn_ids"] = tuple(raw.get("context_turn_ids", ()))
        raw["guardrails"] = tuple(GuardrailDecision.from_dict(d) for d in raw.get("guardrails", ()))
        raw["ledger_seq"] = ledger_seq or raw.get("ledger_seq", 0)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def with_seq(self, ledger_seq: int) -> TurnRecord:
        """A copy carrying its ledger sequence."""
        return dataclasses.replace(self, ledger_seq=ledger_seq)


@dataclass(frozen=True, slots=True)
class SnapshotRecord:
    """A session's state after its turn ``turn_index``: a cache of the ledger, saved on passivation and
    every few turns so activation replays only the entries after it."""

    tenant_id: str
    session_id: str
    incarnation: str
    turn_index: int
    ledger_seq: int
    """Ledger sequence of the last turn this snapshot includes (0 if none)."""
    state: dict[str, Any] = field(default_factory=dict)
    created_at_ns: int = 0

    @property
    def key(self) -> str:
        """Identity of this snapshot row (one per session and turn index)."""
        return f"{self.tenant_id}.{self.session_id}.{self.incarnation}.{self.turn_index}"

    def to_json(self) -> bytes:
        """Encode for the ledger."""
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> SnapshotRecord:
        """Decode a ledger entry."""
        raw: dict[str, Any] = json.loads(data)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})
