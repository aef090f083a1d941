"""The ledger's contract: every session's turn outcomes, written before the turn is acknowledged.

Each activation of a session takes it over: later appends by an earlier activation are refused
(:class:`Fenced`), so a host presumed dead cannot write after its session moved. Snapshots (caches of the
records up to a turn) spare activation a replay from the first turn. The JetStream ledger is
:mod:`salon.storage.jetstream.ledger`; :mod:`salon.storage.inmemory` holds a reference for unit tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from salon.storage.errors import FailedPrecondition
from salon.storage.records import ProgressRecord, SnapshotRecord, TurnRecord


class Fenced(FailedPrecondition):
    """This activation of the session is stale: another host activated it since."""

    reason = "SESSION_FENCED"


@dataclass(slots=True)
class LoadedSession:
    """What activation found: the latest snapshot (if any), the turn records after it, and the progress records
    after it of turns that have no record yet (turns that were running or waiting when the session was last
    active)."""

    snapshot: SnapshotRecord | None
    turns: list[TurnRecord] = field(default_factory=list)
    progress: list[ProgressRecord] = field(default_factory=list)


def unfinished(progress: list[ProgressRecord], turns: list[TurnRecord]) -> list[ProgressRecord]:
    """The progress records of turns that have no turn record among ``turns``, in order."""
    ended = {t.turn_id for t in turns}
    return [p for p in progress if p.turn_id not in ended]


class SessionLog(Protocol):
    """One activation's handle on its session's ledger."""

    async def append_turn(self, record: TurnRecord) -> TurnRecord:
        """Append a turn record durably; returns it with its ledger sequence. :class:`Fenced` if stale."""
        ...

    async def append_progress(self, record: ProgressRecord) -> ProgressRecord:
        """Append a step of a running turn durably, fenced like a turn record; returns it with its ledger
        sequence. :class:`Fenced` if stale."""
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
