"""The ledger in memory, with the JetStream ledger's fencing rule: the reference :class:`~salon.storage.ledger.Journal`
for unit tests."""

from __future__ import annotations

import time
from collections.abc import Callable

from salon.storage.errors import Unavailable
from salon.storage.ledger import Fenced, LoadedSession, SessionLog, unfinished
from salon.storage.records import ProgressRecord, SnapshotRecord, TurnRecord

Entry = TurnRecord | ProgressRecord | None


class InMemoryJournal:
    """A :class:`~salon.storage.ledger.Journal` in memory. ``fail_appends`` makes appends fail as an unreachable ledger
    does."""

    def __init__(self, clock: Callable[[], int] = time.time_ns) -> None:
        self.turns: dict[tuple[str, str], list[Entry]] = {}
        """Per session, its subject's entries in order: turn and progress records, or None for activation
        markers."""
        self.snapshots: dict[tuple[str, str], list[SnapshotRecord]] = {}
        self._clock = clock
        self.fail_appends = False

    async def open(
        self, tenant_id: str, session_id: str, incarnation: str, holder: str
    ) -> tuple[LoadedSession, SessionLog]:
        loaded = await self.peek(tenant_id, session_id, incarnation)
        entries = self.turns.setdefault((tenant_id, session_id), [])
        entries.append(None)
        return loaded, _MemoryLog(self, (tenant_id, session_id), len(entries))

    async def peek(self, tenant_id: str, session_id: str, incarnation: str) -> LoadedSession:
        key = (tenant_id, session_id)
        snaps = [s for s in self.snapshots.get(key, []) if s.incarnation == incarnation]
        snapshot = max(snaps, key=lambda s: s.turn_index, default=None)
        after = snapshot.ledger_seq if snapshot else 0
        entries = [(i, e) for i, e in enumerate(self.turns.get(key, []), 1) if i > after]
        turns = [e for _, e in entries if isinstance(e, TurnRecord) and e.incarnation == incarnation]
        progress = [e for _, e in entries if isinstance(e, ProgressRecord) and e.incarnation == incarnation]
        return LoadedSession(snapshot, turns, unfinished(progress, turns))

    async def turns_after(self, tenant_id: str, session_id: str, incarnation: str, seq: int) -> list[TurnRecord]:
        entries = self.turns.get((tenant_id, session_id), [])
        return [
            e.with_seq(i)
            for i, e in enumerate(entries, 1)
            if isinstance(e, TurnRecord) and i > seq and e.incarnation == incarnation
        ]

    async def purge(self, tenant_id: str, session_id: str) -> None:
        self.turns.pop((tenant_id, session_id), None)
        self.snapshots.pop((tenant_id, session_id), None)


class _MemoryLog:
    def __init__(self, journal: InMemoryJournal, key: tuple[str, str], position: int) -> None:
        self._journal = journal
        self._key = key
        self._position = position

    async def append_turn(self, record: TurnRecord) -> TurnRecord:
        stored = record.with_seq(self._next())
        self._journal.turns[self._key].append(stored)
        self._position += 1
        return stored

    async def append_progress(self, record: ProgressRecord) -> ProgressRecord:
        stored = record.with_seq(self._next())
        self._journal.turns[self._key].append(stored)
        self._position += 1
        return stored

    def _next(self) -> int:
        """The sequence the next entry gets, after the fencing and reachability checks."""
        if self._journal.fail_appends:
            raise Unavailable("the ledger is not reachable", reason="LEDGER_UNAVAILABLE", retry_after_s=1.0)
        entries = self._journal.turns.setdefault(self._key, [])
        if len(entries) != self._position:
            raise Fenced("the session was activated elsewhere", reason="SESSION_FENCED")
        return len(entries) + 1

    async def save_snapshot(self, snapshot: SnapshotRecord) -> None:
        self._journal.snapshots.setdefault(self._key, []).append(snapshot)

    async def read_turn(self, seq: int) -> TurnRecord | None:
        entries = self._journal.turns.get(self._key, [])
        entry = entries[seq - 1] if 0 < seq <= len(entries) else None
        return entry if isinstance(entry, TurnRecord) else None
