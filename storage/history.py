"""A session's transcript as a client must see it: the stored rows, and the ledger's records the tables may
not hold yet.

The batch writer acknowledges a ledger entry only after it is stored, so every entry at or below its
consumer's ack floor is in the tables; entries above it may or may not be, in any order (after a writer
restart, later turns are stored while an earlier one waits for redelivery). The transcript is therefore the
table's rows plus the session's ledger records above the floor, one per turn id. In the normal case the
floor is a flush behind the ledger's end, so the ledger part is a handful of records.

The floor must be read before the table: an entry acknowledged in between is then either under the floor
(stored before the table was read) or above it (read from the ledger). A stale floor only costs a longer
ledger read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from salon.storage.records import TurnRecord

StoredFloor = Callable[[], Awaitable[int]]
"""The ledger sequence at or below which every entry is stored in the tables (0: none known to be)."""


async def no_floor() -> int:
    """A floor that knows nothing: the whole ledger of the session is read (correct, only slower)."""
    return 0


class TurnRows(Protocol):
    """The stored side: :meth:`salon.storage.tables.TranscriptStore.history`."""

    async def history(
        self, tenant_id: str, session_id: str, *, after_turn_index: int = 0, limit: int = 50
    ) -> list[TurnRecord]:
        """Up to ``limit`` stored turns with ``turn_index > after_turn_index``, by turn index."""
        ...


class TurnLedger(Protocol):
    """The ledger side: :meth:`salon.storage.ledger.Journal.turns_after`."""

    async def turns_after(self, tenant_id: str, session_id: str, incarnation: str, seq: int) -> list[TurnRecord]:
        """The session's turn records after ledger sequence ``seq``, in order."""
        ...


def merge_turns(stored: Iterable[TurnRecord], recorded: Iterable[TurnRecord]) -> list[TurnRecord]:
    """One record per turn id, by turn index then ledger sequence: a stored row wins over its ledger record,
    and of several ledger records of one turn (a redelivered turn) the first, as the table keeps the first."""
    merged: dict[str, TurnRecord] = {}
    for record in stored:
        merged.setdefault(record.turn_id, record)
    for record in recorded:
        merged.setdefault(record.turn_id, record)
    return sorted(merged.values(), key=lambda r: (r.turn_index, r.ledger_seq))


class TranscriptReader:
    """Pages of a session's transcript from the tables and the ledger above the writer's floor."""

    def __init__(self, rows: TurnRows, ledger: TurnLedger, floor: StoredFloor = no_floor) -> None:
        self._rows = rows
        self._ledger = ledger
        self._floor = floor

    async def page(
        self, tenant_id: str, session_id: str, incarnation: str, *, after_turn_index: int, page_size: int
    ) -> tuple[list[TurnRecord], int]:
        """Up to ``page_size`` turns of the incarnation with ``turn_index > after_turn_index``, oldest first,
        and the turn index to continue after (0: no more). Rolled-back turns are left out of the page (their
        records only answer retries of the same turn)."""
        floor = await self._floor()  # first: see the module documentation
        stored = await self._rows.history(tenant_id, session_id, after_turn_index=after_turn_index, limit=page_size + 1)
        recorded = await self._ledger.turns_after(tenant_id, session_id, incarnation, floor)
        turns = merge_turns(
            (r for r in stored if r.incarnation == incarnation),
            (r for r in recorded if r.turn_index > after_turn_index),
        )
        page = turns[:page_size]
        cursor = page[-1].turn_index if len(turns) > page_size and page else 0
        return [r for r in page if r.status != "rolled_back"], cursor
