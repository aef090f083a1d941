"""The ledger contract (:class:`salon.storage.ledger.Journal`), on the in-memory journal and on JetStream: appends read
back by their sequence, fencing of stale activations, loading from the latest snapshot, incarnations and
sessions kept apart, purge."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client as NatsClient

from salon.storage import FailedPrecondition, Fenced, Journal, LoadedSession, Names, SnapshotRecord, TurnRecord
from salon.storage.inmemory import InMemoryJournal
from salon.storage.jetstream.ledger import LedgerSettings, NatsJournal, ensure_ledger
from salon.storage.records import ProgressRecord, ToolCallEntry

TENANT, SESSION, INCARNATION = "acme", "s1", "1700000000000000000"


@pytest.fixture
async def journal(nats: NatsClient | None, names: Names) -> AsyncIterator[Journal]:
    if nats is None:
        yield InMemoryJournal()
        return
    js = nats.jetstream()
    await ensure_ledger(js, names, LedgerSettings())
    yield NatsJournal(js, names)
    await js.delete_stream(names.ledger_stream)


def record(index: int, incarnation: str = INCARNATION, *, turn_id: str = "", session_id: str = SESSION) -> TurnRecord:
    """A completed turn record, as an actor appends it (no ledger sequence yet)."""
    return TurnRecord(
        tenant_id=TENANT,
        session_id=session_id,
        turn_id=turn_id or f"t{index}",
        incarnation=incarnation,
        turn_index=index,
        status="completed",
        user_text=f"question {index}",
        reply_text=f"answer {index} ",
        deltas=(f"answer {index} ",),
    )


def snapshot_after(turns: list[TurnRecord], incarnation: str = INCARNATION) -> SnapshotRecord:
    """A snapshot of the session after the last of ``turns``."""
    last = turns[-1]
    return SnapshotRecord(
        TENANT, SESSION, incarnation, last.turn_index, last.ledger_seq, {"turn_ids": [t.turn_id for t in turns]}
    )


async def test_a_new_session_loads_nothing_and_appends_are_read_back_by_their_sequence(journal: Journal) -> None:
    loaded, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    assert (loaded.snapshot, loaded.turns) == (None, [])
    first = await log.append_turn(record(1))
    second = await log.append_turn(record(2))
    assert 0 < first.ledger_seq < second.ledger_seq
    assert first == record(1).with_seq(first.ledger_seq)  # nothing but the sequence is changed
    again = await journal.peek(TENANT, SESSION, INCARNATION)
    assert again.snapshot is None
    assert again.turns == [first, second]  # with their ledger sequences
    assert await log.read_turn(second.ledger_seq) == second
    assert await log.read_turn(first.ledger_seq) == first
    assert await log.read_turn(0) is None
    assert await log.read_turn(second.ledger_seq + 1) is None


async def test_every_activation_appends_a_marker_and_fences_the_one_before(journal: Journal) -> None:
    _, old = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    kept = await old.append_turn(record(1))
    loaded, new = await journal.open(TENANT, SESSION, INCARNATION, holder="host-b")
    assert loaded.turns == [kept]
    with pytest.raises(Fenced) as info:
        await old.append_turn(record(2))
    assert isinstance(info.value, FailedPrecondition)
    assert info.value.reason == "SESSION_FENCED"
    assert (await journal.peek(TENANT, SESSION, INCARNATION)).turns == [kept]  # the refused one is not there
    # The marker sits between the two activations' records.
    taken = await new.append_turn(record(2))
    assert taken.ledger_seq > kept.ledger_seq + 1
    assert await new.read_turn(kept.ledger_seq + 1) is None  # a marker is not a turn
    with pytest.raises(Fenced):
        await old.append_turn(record(3))  # still stale after the new owner wrote
    _, third = await journal.open(TENANT, SESSION, INCARNATION, holder="host-c")
    with pytest.raises(Fenced):
        await new.append_turn(record(3))
    await third.append_turn(record(3))
    assert [r.turn_id for r in (await journal.peek(TENANT, SESSION, INCARNATION)).turns] == ["t1", "t2", "t3"]


async def test_peek_does_not_take_the_session_over(journal: Journal) -> None:
    _, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    await log.append_turn(record(1))
    await journal.peek(TENANT, SESSION, INCARNATION)
    await log.append_turn(record(2))  # not fenced
    assert len((await journal.peek(TENANT, SESSION, INCARNATION)).turns) == 2


async def test_loading_starts_after_the_latest_snapshot(journal: Journal) -> None:
    _, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    stored = [await log.append_turn(record(i)) for i in range(1, 5)]
    await log.save_snapshot(snapshot_after(stored[:1]))
    await log.save_snapshot(snapshot_after(stored[:2]))
    loaded = await journal.peek(TENANT, SESSION, INCARNATION)
    assert loaded == LoadedSession(snapshot_after(stored[:2]), stored[2:])
    reopened, _ = await journal.open(TENANT, SESSION, INCARNATION, holder="host-b")
    assert reopened == loaded


async def test_a_snapshot_of_another_incarnation_is_never_loaded(journal: Journal) -> None:
    _, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    stored = [await log.append_turn(record(i)) for i in range(1, 4)]
    await log.save_snapshot(snapshot_after(stored[:2]))
    await log.save_snapshot(SnapshotRecord(TENANT, SESSION, "another-incarnation", 9, stored[-1].ledger_seq))
    loaded = await journal.peek(TENANT, SESSION, INCARNATION)
    # A snapshot is a cache: which one is used may differ, but what is loaded always covers every turn.
    if loaded.snapshot is None:
        assert loaded.turns == stored
    else:
        assert loaded.snapshot == snapshot_after(stored[:2])
        assert loaded.turns == stored[2:]


async def test_other_incarnations_and_sessions_are_not_loaded(journal: Journal) -> None:
    _, log = await journal.open(TENANT, SESSION, "old", holder="host-a")
    await log.append_turn(record(1, "old", turn_id="old-t1"))
    loaded, log = await journal.open(TENANT, SESSION, "new", holder="host-a")
    assert loaded.turns == []  # the deleted session's records are not the new one's memory
    mine = await log.append_turn(record(1, "new"))
    _, other = await journal.open(TENANT, "s2", "new", holder="host-a")
    theirs = await other.append_turn(record(1, "new", session_id="s2"))
    assert (await journal.peek(TENANT, SESSION, "new")).turns == [mine]
    assert [r.turn_id for r in (await journal.peek(TENANT, SESSION, "old")).turns] == ["old-t1"]
    assert [r.session_id for r in (await journal.peek(TENANT, "s2", "new")).turns] == ["s2"]
    found = await log.read_turn(theirs.ledger_seq)
    assert found is None or found.session_id == SESSION  # never another session's record


async def test_turns_after_a_sequence(journal: Journal) -> None:
    _, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    stored = [await log.append_turn(record(i)) for i in range(1, 4)]
    assert await journal.turns_after(TENANT, SESSION, INCARNATION, 0) == stored
    assert await journal.turns_after(TENANT, SESSION, INCARNATION, stored[0].ledger_seq) == stored[1:]
    assert await journal.turns_after(TENANT, SESSION, INCARNATION, stored[-1].ledger_seq) == []
    assert await journal.turns_after(TENANT, SESSION, "other", 0) == []


async def test_purge_drops_the_session_only(journal: Journal) -> None:
    _, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    first = await log.append_turn(record(1))
    await log.save_snapshot(snapshot_after([first]))
    _, other = await journal.open(TENANT, "s2", INCARNATION, holder="host-a")
    kept = await other.append_turn(record(1, session_id="s2"))
    await journal.purge(TENANT, SESSION)
    assert await journal.peek(TENANT, SESSION, INCARNATION) == LoadedSession(None, [])
    assert (await journal.peek(TENANT, "s2", INCARNATION)).turns == [kept]
    await journal.purge(TENANT, SESSION)  # no error when absent


def progress(turn_id: str, index: int, incarnation: str = INCARNATION) -> ProgressRecord:
    """A step of a running turn: a round that called a tool."""
    call = ToolCallEntry(f"call_{index}", "lookup", '{"id": 1}', round=index, call_seq=3 + index)
    return ProgressRecord(TENANT, SESSION, turn_id, incarnation, index, "round", 2 + index, calls=(call,), round=index)


async def test_progress_of_a_running_turn_is_fenced_and_loaded_until_the_turn_is_recorded(journal: Journal) -> None:
    _, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    done = await log.append_turn(record(1))
    first = await log.append_progress(progress("t2", 1))
    second = await log.append_progress(progress("t2", 2))
    assert done.ledger_seq < first.ledger_seq < second.ledger_seq
    assert first == progress("t2", 1).with_seq(first.ledger_seq)
    await log.append_progress(progress("t9", 1, incarnation="other"))  # another incarnation's: never loaded
    loaded, new = await journal.open(TENANT, SESSION, INCARNATION, holder="host-b")
    assert loaded.turns == [done]
    assert loaded.progress == [first, second]  # the waiting turn, for the new activation to take up
    assert await journal.turns_after(TENANT, SESSION, INCARNATION, 0) == [done]  # history sees turns only
    assert await new.read_turn(first.ledger_seq) is None  # not a turn record
    with pytest.raises(Fenced):
        await log.append_progress(progress("t2", 3))
    finished = await new.append_turn(record(2, turn_id="t2"))
    assert (await journal.peek(TENANT, SESSION, INCARNATION)).progress == []  # recorded: nothing left to resume
    assert (await journal.peek(TENANT, SESSION, INCARNATION)).turns == [done, finished]
