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
KIND_PROGRESS = "progress"
"""A step of a turn that is still running (a model round's tool calls, an approval, a result): fenced like turn
records, read back by the session's next activation, never stored in the tables (the turn's record holds it all
once the turn ends)."""

ToolSource = Literal["", "client", "mcp", "rejected", "timeout", "invalid_call", "cancelled"]
"""Where a tool call's result came from (empty while the call waits)."""


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
    call_id: str = ""
    """For a tool result (source ``tool``): the call it came from."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the ledger record; ``call_id`` only when set)."""
        data: dict[str, Any] = {
            "check": self.check,
            "action": self.action,
            "reason": self.reason,
            "source": self.source,
            "count": self.count,
            "score": self.score,
            "rules": list(self.rules),
            "passage": self.passage,
        }
        if self.call_id:
            data["call_id"] = self.call_id
        return data

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
            call_id=str(data.get("call_id", "")),
        )


@dataclass(frozen=True, slots=True)
class ToolApproval:
    """How a person decided about a tool call that required approval."""

    approved: bool
    reason: str = ""
    approver: str = ""
    """Who decided, as the application named them."""
    decided_by: str = ""
    """The credentials that sent the decision (a key id or certificate name; never a secret)."""
    decided_at_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolApproval:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            approved=bool(data.get("approved", False)),
            reason=str(data.get("reason", "")),
            approver=str(data.get("approver", "")),
            decided_by=str(data.get("decided_by", "")),
            decided_at_ns=int(data.get("decided_at_ns", 0)),
        )


@dataclass(frozen=True, slots=True)
class ToolCallEntry:
    """One tool call of a turn as it stands: the call, its approval, its result, and the sequence numbers of the
    events that told the client about each (0: not sent), so a replay sends them again in their places."""

    call_id: str
    tool: str
    arguments_json: str = "{}"
    server: str = ""
    """The MCP server that runs it; empty: the client."""
    round: int = 1
    """The model round that made the call (1 for the turn's first model request)."""
    requires_approval: bool = False
    wait_deadline_ns: int = 0
    """When the turn stops waiting for this call (0: it does not wait: an MCP call, or an invalid one)."""
    approval: ToolApproval | None = None
    result: str = ""
    """The result as the model sees it (empty while the call waits)."""
    is_error: bool = False
    source: ToolSource = ""
    called_at_ns: int = 0
    result_at_ns: int = 0
    call_tokens: int = 0
    """Estimated tokens of the call (name and arguments) in the next prompts."""
    result_tokens: int = 0
    guardrail: GuardrailDecision | None = None
    """The injection guardrail's decision about the result (source ``tool``), when it had one."""
    call_seq: int = 0
    approval_seq: int = 0
    decided_seq: int = 0
    guardrail_seq: int = 0
    result_seq: int = 0

    @property
    def answered(self) -> bool:
        """Whether the call has its result."""
        return bool(self.source)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["approval"] = self.approval.to_dict() if self.approval is not None else None
        data["guardrail"] = self.guardrail.to_dict() if self.guardrail is not None else None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ToolCallEntry:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        raw = {k: v for k, v in data.items() if k in known}
        approval, guardrail = raw.get("approval"), raw.get("guardrail")
        raw["approval"] = ToolApproval.from_dict(approval) if isinstance(approval, Mapping) else None
        raw["guardrail"] = GuardrailDecision.from_dict(guardrail) if isinstance(guardrail, Mapping) else None
        return cls(**raw)


def entries_to_json(entries: tuple[ToolCallEntry, ...], round_chars: tuple[int, ...]) -> str:
    """A turn's tool calls and the length of each model round's text, as the JSON of the transcripts table's
    ``tools_json`` column ("" for a turn without tools)."""
    if not entries and not round_chars:
        return ""
    data = {"calls": [e.to_dict() for e in entries], "round_chars": list(round_chars)}
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def entries_from_json(text: str) -> tuple[tuple[ToolCallEntry, ...], tuple[int, ...]]:
    """The inverse of :func:`entries_to_json`."""
    if not text:
        return (), ()
    data = json.loads(text)
    calls = tuple(ToolCallEntry.from_dict(c) for c in data.get("calls", ()))
    return calls, tuple(int(n) for n in data.get("round_chars", ()))


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
    and ``deltas`` are already redacted. Decisions about tool results are with their calls (``tool_calls``)."""
    model_rounds: int = 0
    """Model requests the turn made (0 in records written before tools existed: read it as 1 if it reached the
    model)."""
    tool_calls: tuple[ToolCallEntry, ...] = ()
    """The tool calls the model made, in order, each with its approval and result."""
    round_chars: tuple[int, ...] = ()
    """Characters of ``reply_text`` each model round produced (empty without tool calls: one round), so memory
    can give each round's text back its place before the round's calls."""
    user_id: str = ""
    """The session's user (``Session.user_id``; empty: none): memory rows carry it, and erasing the user
    deletes the rows that do."""
    do_not_remember: bool = False
    """Sent with ``do_not_remember``: answered and recorded, never written into long-term memory."""

    @property
    def key(self) -> str:
        """The turn key."""
        return turn_key(self.tenant_id, self.session_id, self.turn_id)

    def to_json(self) -> bytes:
        """Encode for the ledger: exactly the bytes of ``dataclasses.asdict`` in JSON (what stored records hold and
        readers decode), without its deep copy of every field on each turn's end: tuples of strings and numbers
        encode as lists directly, and only guardrail decisions and tool calls, when a turn has any, go through
        ``asdict``."""
        data = {name: getattr(self, name) for name in _TURN_FIELDS}
        if self.guardrails:
            data["guardrails"] = [dataclasses.asdict(g) for g in self.guardrails]
        if self.tool_calls:
            data["tool_calls"] = [dataclasses.asdict(c) for c in self.tool_calls]
        return _COMPACT.encode(data).encode()

    @classmethod
    def from_json(cls, data: bytes, ledger_seq: int = 0) -> TurnRecord:
        """Decode a ledger entry; ``ledger_seq`` is taken from the message, not the payload."""
        raw: dict[str, Any] = json.loads(data)
        raw["deltas"] = tuple(raw.get("deltas", ()))
        raw["context_turn_ids"] = tuple(raw.get("context_turn_ids", ()))
        raw["guardrails"] = tuple(GuardrailDecision.from_dict(d) for d in raw.get("guardrails", ()))
        raw["tool_calls"] = tuple(ToolCallEntry.from_dict(c) for c in raw.get("tool_calls", ()))
        raw["round_chars"] = tuple(int(n) for n in raw.get("round_chars", ()))
        raw["ledger_seq"] = ledger_seq or raw.get("ledger_seq", 0)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def with_seq(self, ledger_seq: int) -> TurnRecord:
        """A copy carrying its ledger sequence."""
        return dataclasses.replace(self, ledger_seq=ledger_seq)

    def all_guardrails(self) -> tuple[GuardrailDecision, ...]:
        """Every guardrail decision of the turn: the turn's own, then those about its tool results."""
        return (*self.guardrails, *(c.guardrail for c in self.tool_calls if c.guardrail is not None))


_TURN_FIELDS = tuple(f.name for f in dataclasses.fields(TurnRecord))
_COMPACT = json.JSONEncoder(separators=(",", ":"))
"""``json.dumps(..., separators=(",", ":"))`` without building an encoder per call."""

ProgressKind = Literal["round", "update"]


@dataclass(frozen=True, slots=True)
class ProgressRecord:
    """One step of a turn still running, appended to the ledger as it happens (before its events are sent):
    a model round that called tools (``round``: the round's text, usage and calls) or a change to some of its
    calls (``update``: an approval decided, a result in). A session's next activation rebuilds a turn that was
    waiting from these, sends none of their events twice and never asks the model again for a round recorded
    here."""

    tenant_id: str
    session_id: str
    turn_id: str
    incarnation: str
    index: int
    """1, 2, … within the turn: with the turn key, the entry's deduplication id."""
    kind: ProgressKind
    seq: int
    """Sequence number of the turn's last event before this step's events (which are numbered after it, as the
    calls' ``*_seq`` fields say)."""
    calls: tuple[ToolCallEntry, ...] = ()
    """The calls this step made or changed, as they stand after it."""
    round: int = 0
    """For ``round``: the round's number."""
    deltas: tuple[str, ...] = ()
    """For ``round``: the text the round streamed before its calls."""
    usage: Mapping[str, Any] = field(default_factory=dict)
    """For ``round``: what the round's model request consumed (``ModelResult`` fields)."""
    recorded_at_ns: int = 0
    ledger_seq: int = 0

    @property
    def key(self) -> str:
        """Identity of the entry (its ``Nats-Msg-Id``)."""
        return f"{turn_key(self.tenant_id, self.session_id, self.turn_id)}.p{self.index}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["calls"] = [c.to_dict() for c in self.calls]
        data["deltas"] = list(self.deltas)
        data["usage"] = dict(self.usage)
        return data

    def to_json(self) -> bytes:
        """Encode for the ledger."""
        return json.dumps(self.to_dict(), separators=(",", ":")).encode()

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], ledger_seq: int = 0) -> ProgressRecord:
        """Rebuild from :meth:`to_dict` output (unknown keys ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in raw.items() if k in known}
        data["calls"] = tuple(ToolCallEntry.from_dict(c) for c in raw.get("calls", ()))
        data["deltas"] = tuple(str(d) for d in raw.get("deltas", ()))
        data["usage"] = dict(raw.get("usage") or {})
        data["ledger_seq"] = ledger_seq or int(raw.get("ledger_seq", 0))
        return cls(**data)

    @classmethod
    def from_json(cls, data: bytes, ledger_seq: int = 0) -> ProgressRecord:
        """Decode a ledger entry; ``ledger_seq`` is taken from the message."""
        return cls.from_dict(json.loads(data), ledger_seq)

    def with_seq(self, ledger_seq: int) -> ProgressRecord:
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
