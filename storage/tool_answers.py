"""The tool answer contract: tool results and approval decisions the gateway took for turns whose host was away.

A turn waiting for its tools survives its host (its message is redelivered and the next host takes it up from
the ledger); an answer given meanwhile must survive too. The gateway keeps it here, keyed by tenant, session,
turn, call and kind (a call may need a decision and then a result), and the host reads a turn's stored answers
when the turn waits. The first answer stored for a key holds: storing another returns the one held. Entries
expire after a time-to-live the writer gives (past the call's wait deadline, when the answer can no longer be
used).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal, Protocol

AnswerKind = Literal["result", "decision"]


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """One tool result (``kind="result"``) or approval decision (``kind="decision"``) for one call of a turn."""

    tenant_id: str
    session_id: str
    turn_id: str
    call_id: str
    kind: AnswerKind
    content: str = ""
    """A result's text (or its error's)."""
    is_error: bool = False
    approve: bool = False
    reason: str = ""
    approver: str = ""
    decided_by: str = ""
    stored_at_ns: int = 0
    """When the store took it (set by the store)."""

    def same_as(self, other: StoredAnswer) -> bool:
        """Whether ``other`` says the same thing about the same call (when it was stored aside)."""
        return replace(self, stored_at_ns=0) == replace(other, stored_at_ns=0)

    def to_bytes(self) -> bytes:
        """The stored form (JSON)."""
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> StoredAnswer:
        """Read the stored form; raises ``ValueError`` when it is not one."""
        raw: Any = json.loads(data)
        if not isinstance(raw, dict) or raw.get("kind") not in ("result", "decision"):
            raise ValueError("not a stored tool answer")
        return cls(
            tenant_id=str(raw["tenant_id"]),
            session_id=str(raw["session_id"]),
            turn_id=str(raw["turn_id"]),
            call_id=str(raw["call_id"]),
            kind=raw["kind"],
            content=str(raw.get("content", "")),
            is_error=bool(raw.get("is_error", False)),
            approve=bool(raw.get("approve", False)),
            reason=str(raw.get("reason", "")),
            approver=str(raw.get("approver", "")),
            decided_by=str(raw.get("decided_by", "")),
            stored_at_ns=int(raw.get("stored_at_ns", 0)),
        )


class AnswerStore(Protocol):
    """Stored tool answers. Every method raises :class:`~salon.storage.errors.Unavailable` when the store cannot
    be reached."""

    async def put(self, answer: StoredAnswer, ttl_s: float) -> tuple[StoredAnswer, bool]:
        """Store ``answer`` for ``ttl_s`` seconds unless an answer of its kind is stored for its call already;
        the answer that holds (``answer`` with its ``stored_at_ns``, or the earlier one) and whether it is this
        one."""
        ...

    async def get(
        self, tenant_id: str, session_id: str, turn_id: str, call_id: str, kind: AnswerKind
    ) -> StoredAnswer | None:
        """The answer of ``kind`` stored for the call, if any (and not expired)."""
        ...

    async def of_turn(self, tenant_id: str, session_id: str, turn_id: str) -> list[StoredAnswer]:
        """Every answer stored for the turn's calls, in the order they were stored."""
        ...

    def watch(self) -> AsyncIterator[StoredAnswer]:
        """Every answer kept now, then each one stored from now on, as it is stored (until the caller stops;
        raises :class:`~salon.storage.errors.Unavailable` when the store is lost)."""
        ...
