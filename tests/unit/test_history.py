"""A session's transcript merged from the tables and the ledger above the writer's ack floor (storage.history),
on a real LanceDB directory and the in-memory ledger."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from salon.storage.history import TranscriptReader, merge_turns
from salon.storage.inmemory import InMemoryJournal
from salon.storage.records import TurnRecord
from salon.storage.tables import TranscriptStore

TENANT, SESSION, INCARNATION = "acme", "s1", "1700000000000000000"


def turn(index: int, **fields: object) -> TurnRecord:
    base = TurnRecord(
        tenant_id=TENANT,
        session_id=SESSION,
        turn_id=f"t{index}",
        incarnation=INCARNATION,
        turn_index=index,
        status="completed",
        user_text=f"question {index}",
        reply_text=f"answer {index}",
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


class Ledger:
    """The in-memory journal holding records in order; its sequence numbers are positions, from 1."""

    def __init__(self, *records: TurnRecord) -> None:
        self.journal = InMemoryJournal()
        self.journal.turns[(TENANT, SESSION)] = list(records)

    def seq(self, turn_id: str) -> int:
        entries = self.journal.turns[(TENANT, SESSION)]
        return next(i for i, e in enumerate(entries, 1) if e is not None and e.turn_id == turn_id)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TranscriptStore]:
    store = await TranscriptStore.open(str(tmp_path / "db"))
    yield store
    await store.close()


async def pages(reader: TranscriptReader, page_size: int) -> list[list[str]]:
    out: list[list[str]] = []
    after = 0
    while True:
        page, after = await reader.page(TENANT, SESSION, INCARNATION, after_turn_index=after, page_size=page_size)
        out.append([r.turn_id for r in page])
        if not after:
            return out


async def test_an_earlier_turn_not_stored_yet_shows_beside_later_stored_ones(store: TranscriptStore) -> None:
    ledger = Ledger(*(turn(i) for i in range(1, 6)))
    # The writer took turn 3 and died; turns 4 and 5 were stored by its successor: the floor is turn 2.
    await store.write([turn(i).with_seq(ledger.seq(f"t{i}")) for i in (1, 2, 4, 5)], [])
    reader = TranscriptReader(store, ledger.journal, floor=lambda: _const(ledger.seq("t2")))

    assert await pages(reader, 50) == [["t1", "t2", "t3", "t4", "t5"]]
    assert await pages(reader, 2) == [["t1", "t2"], ["t3", "t4"], ["t5"]]
    assert await pages(reader, 1) == [["t1"], ["t2"], ["t3"], ["t4"], ["t5"]]


async def test_records_at_or_below_the_floor_come_from_the_table_only(store: TranscriptStore) -> None:
    # Turn 2 was acknowledged without a row (its session incarnation was deleted meanwhile, say): under the
    # floor the ledger is not read at all, so it does not show.
    ledger = Ledger(turn(1), turn(2), turn(3))
    await store.write([turn(1).with_seq(1)], [])
    reader = TranscriptReader(store, ledger.journal, floor=lambda: _const(2))
    assert await pages(reader, 50) == [["t1", "t3"]]


async def test_without_a_floor_the_whole_ledger_is_merged(store: TranscriptStore) -> None:
    ledger = Ledger(turn(1), turn(2), turn(3))
    await store.write([turn(2).with_seq(2)], [])
    assert await pages(TranscriptReader(store, ledger.journal), 2) == [["t1", "t2"], ["t3"]]


async def test_rolled_back_turns_and_other_incarnations_are_left_out(store: TranscriptStore) -> None:
    old = turn(1, turn_id="old", incarnation="1600000000000000000")
    ledger = Ledger(turn(1), turn(2, status="rolled_back"), turn(3))
    await store.write([old, turn(1).with_seq(1)], [])
    assert await pages(TranscriptReader(store, ledger.journal), 50) == [["t1", "t3"]]


def test_merge_keeps_the_stored_row_then_the_first_ledger_record_of_a_turn() -> None:
    stored = [turn(2, reply_text="stored")]
    recorded = [turn(2, reply_text="ledger"), turn(3, reply_text="first"), turn(3, reply_text="redelivered")]
    merged = merge_turns(stored, recorded)
    assert [(r.turn_id, r.reply_text) for r in merged] == [("t2", "stored"), ("t3", "first")]


async def _const(value: int) -> int:
    return value
