"""The ledger's contract: every session's turn outcomes, written before the turn is acknowledged.

Each activation of a session takes it over: later appends by an earlier activation are refused
(:class:`Fenced`), so a host presumed dead cannot write after its session moved. Snapshots (caches of the
records up to a turn) spare activation a replay from the first turn. The JetStream ledger is
:mod:`storage.jetstream.ledger`; :mod:`storage.inmemory` holds a reference for unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from storage.errors import FailedPrecondition
from storage.records import SnapshotRecord, TurnRecord


class Fenced(FailedPrecondition):
    """This activation of the session is stale: another host activated it since."""

    reason = "SESSION_FENCED"


@dataclass(slots=True)
class LoadedSession:
    """What activation found: the latest snapshot (if any) and the turn records after it."""

    snapshot: SnapshotRecord | None
    turns: list[TurnRecord] = field(default_factory=list)


class SessionLog(Protocol):
    """One activation's handle on its session's ledger."""

    async def append_turn(self, record: TurnRecord) -> TurnRecord:
        """Append a turn record durably; returns it with its ledger sequence. :class:`Fenced` if stale."""
        ...

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        """Append a snapshot (a cache: losing one costs replay time, never data)."""
        ...

    async def read_turn(self, seq: int) -> TurnRecord | None:
        """A recorded turn of this session by ledger sequence (to replay it), None if gone."""
        ...


class Journal(Protocol):
    """Opens sessions' ledgers for activation and removes them on deletion."""

    async def open(
        self, tenant_id: str, session_id: str, incarnation: str, holder: str
    ) -> tuple[LoadedSession, SessionLog]:
        """Load the session and take it over (fencing any earlier activation)."""
        ...

    async def purge(self, tenant_id: str, session_id: str) -> None:
        """Drop every ledger entry of the session."""
        ...

    async def peek(self, tenant_id: str, session_id: str, incarnation: str) -> LoadedSession:
        """The session as activation would load it, without taking it over."""
        ...

    async def turns_after(self, tenant_id: str, session_id: str, incarnation: str, seq: int) -> list[TurnRecord]:
        """The session's turn records after ledger sequence ``seq``, in order."""
        ...
