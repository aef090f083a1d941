"""The ledger: the in-memory journal honours the fencing contract of the JetStream one, records survive their
encoding, and a session's state is a pure function of its records (a snapshot is only a cache)."""

from __future__ import annotations

import json
import random

import pytest

from actors.session import RECENT_TURNS_KEPT, SessionState
from storage import (
    FailedPrecondition,
    Fenced,
    LoadedSession,
    SnapshotRecord,
    TurnRecord,
    Unavailable,
    turn_key,
)
from storage.inmemory import InMemoryJournal
from storage.records import TurnStatus

TENANT, SESSION, INCARNATION = "acme", "s1", "1700000000000000000"
WORDS = ["tea", "kettle", "spout", "lid", "steam", "cup", "saucer", "brew"]


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


def snapshot_of(state: SessionState, incarnation: str = INCARNATION) -> SnapshotRecord:
    return SnapshotRecord(
        tenant_id=TENANT,
        session_id=SESSION,
        incarnation=incarnation,
        turn_index=state.turn_count,
        ledger_seq=state.ledger_seq,
        state=state.to_dict(),
    )


async def test_a_new_session_loads_nothing_and_appends_are_read_back_by_their_sequence() -> None:
    journal = InMemoryJournal()
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


async def test_every_activation_appends_a_marker_and_fences_the_one_before() -> None:
    journal = InMemoryJournal()
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


async def test_peek_does_not_take_the_session_over() -> None:
    journal = InMemoryJournal()
    _, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    await log.append_turn(record(1))
    await journal.peek(TENANT, SESSION, INCARNATION)
    await log.append_turn(record(2))  # not fenced
    assert len((await journal.peek(TENANT, SESSION, INCARNATION)).turns) == 2


async def test_an_unreachable_ledger_refuses_appends_without_writing_or_fencing() -> None:
    journal = InMemoryJournal()
    _, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    journal.fail_appends = True
    with pytest.raises(Unavailable) as info:
        await log.append_turn(record(1))
    assert info.value.reason == "LEDGER_UNAVAILABLE"
    assert (await journal.peek(TENANT, SESSION, INCARNATION)).turns == []
    journal.fail_appends = False
    stored = await log.append_turn(record(1))  # the same activation carries on
    assert (await journal.peek(TENANT, SESSION, INCARNATION)).turns == [stored]


async def test_loading_starts_after_the_latest_snapshot_of_the_incarnation() -> None:
    journal = InMemoryJournal()
    _, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    state = SessionState(incarnation=INCARNATION)
    stored = []
    for i in range(1, 5):
        stored.append(await log.append_turn(record(i)))
        state.apply(stored[-1], 40)
        if i == 1:
            after_one = snapshot_of(state)
        if i == 2:
            after_two = snapshot_of(state)
    await log.save_snapshot(after_two)
    await log.save_snapshot(after_one)  # saved later, but older
    await log.save_snapshot(SnapshotRecord(TENANT, SESSION, "another-incarnation", 9, stored[-1].ledger_seq))
    loaded = await journal.peek(TENANT, SESSION, INCARNATION)
    assert loaded.snapshot == after_two
    assert loaded.turns == stored[2:]
    assert SessionState.restore(loaded, INCARNATION, 40) == state


async def test_other_incarnations_and_sessions_are_not_loaded() -> None:
    journal = InMemoryJournal()
    _, log = await journal.open(TENANT, SESSION, "old", holder="host-a")
    await log.append_turn(record(1, "old", turn_id="old-t1"))
    loaded, log = await journal.open(TENANT, SESSION, "new", holder="host-a")
    assert loaded.turns == []  # the deleted session's records are not the new one's memory
    mine = await log.append_turn(record(1, "new"))
    _, other = await journal.open(TENANT, "s2", "new", holder="host-a")
    await other.append_turn(record(1, "new", session_id="s2"))
    assert (await journal.peek(TENANT, SESSION, "new")).turns == [mine]
    assert [r.turn_id for r in (await journal.peek(TENANT, SESSION, "old")).turns] == ["old-t1"]
    assert [r.session_id for r in (await journal.peek(TENANT, "s2", "new")).turns] == ["s2"]


async def test_turns_after_a_sequence() -> None:
    journal = InMemoryJournal()
    _, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    stored = [await log.append_turn(record(i)) for i in range(1, 4)]
    assert await journal.turns_after(TENANT, SESSION, INCARNATION, 0) == stored
    assert await journal.turns_after(TENANT, SESSION, INCARNATION, stored[0].ledger_seq) == stored[1:]
    assert await journal.turns_after(TENANT, SESSION, INCARNATION, stored[-1].ledger_seq) == []
    assert await journal.turns_after(TENANT, SESSION, "other", 0) == []


async def test_purge_drops_the_session_only() -> None:
    journal = InMemoryJournal()
    _, log = await journal.open(TENANT, SESSION, INCARNATION, holder="host-a")
    await log.append_turn(record(1))
    await log.save_snapshot(SnapshotRecord(TENANT, SESSION, INCARNATION, 1, 2))
    _, other = await journal.open(TENANT, "s2", INCARNATION, holder="host-a")
    kept = await other.append_turn(record(1, session_id="s2"))
    await journal.purge(TENANT, SESSION)
    assert await journal.peek(TENANT, SESSION, INCARNATION) == LoadedSession(None, [])
    assert (await journal.peek(TENANT, "s2", INCARNATION)).turns == [kept]
    await journal.purge(TENANT, SESSION)  # no error when absent


def test_turn_record_encoding() -> None:
    original = TurnRecord(
        tenant_id=TENANT,
        session_id=SESSION,
        turn_id="t1",
        incarnation=INCARNATION,
        turn_index=3,
        status="partial",
        user_text="héllo “quoted”",
        reply_text="a b ",
        deltas=("a ", "b "),
        error_reason="MODEL_UNAVAILABLE",
        retry_after_s=1.5,
        context_turn_ids=("t0",),
        ledger_seq=11,
    )
    decoded = TurnRecord.from_json(original.to_json())
    assert decoded == original
    assert TurnRecord.from_json(original.to_json(), ledger_seq=42) == original.with_seq(42)  # the message's wins
    newer = json.loads(original.to_json())
    newer["field_from_a_later_version"] = 1
    assert TurnRecord.from_json(json.dumps(newer).encode()) == original
    assert original.key == turn_key(TENANT, SESSION, "t1") == "acme.s1.t1"


def test_snapshot_record_encoding() -> None:
    state = SessionState(incarnation=INCARNATION)
    state.apply(record(1).with_seq(2), 40)
    snapshot = snapshot_of(state)
    decoded = SnapshotRecord.from_json(snapshot.to_json())
    assert (decoded.turn_index, decoded.ledger_seq, decoded.incarnation) == (1, 2, INCARNATION)
    assert SessionState.from_dict(decoded.state) == state
    assert snapshot.key == f"acme.s1.{INCARNATION}.1"


def history(size: int, seed: int) -> list[TurnRecord]:
    """``size`` recorded turns of varied outcomes, with gaps in their sequences (activation markers)."""
    rng = random.Random(seed)
    records: list[TurnRecord] = []
    seq = 0
    for index in range(1, size + 1):
        seq += rng.randint(1, 3)
        status: TurnStatus = rng.choice(["completed", "completed", "failed", "partial", "cancelled"])
        deltas = () if status == "failed" else tuple(f"{rng.choice(WORDS)} " for _ in range(rng.randint(1, 4)))
        records.append(
            TurnRecord(
                tenant_id=TENANT,
                session_id=SESSION,
                turn_id=f"turn-{index}-{rng.randrange(10**6)}",
                incarnation=INCARNATION,
                turn_index=index,
                status=status,
                user_text=" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 5))),
                reply_text="".join(deltas),
                deltas=deltas,
                ledger_seq=seq,
            )
        )
    return records


def applied(records: list[TurnRecord], keep: int) -> SessionState:
    state = SessionState(incarnation=INCARNATION)
    for r in records:
        state.apply(r, keep)
    return state


@pytest.mark.parametrize("keep", [3, 40])
@pytest.mark.parametrize("size", [0, 1, 2, 7, 25, RECENT_TURNS_KEPT + 36])
def test_restore_from_any_snapshot_equals_applying_every_record(size: int, keep: int) -> None:
    records = history(size, seed=size * 100 + keep)
    full = applied(records, keep)
    cuts = range(size + 1) if size <= 25 else [0, 1, size // 2, RECENT_TURNS_KEPT, size - 1, size]
    for cut in cuts:
        cached = applied(records[:cut], keep)
        encoded = SnapshotRecord.from_json(snapshot_of(cached).to_json()) if cut else None
        assert SessionState.restore(LoadedSession(encoded, records[cut:]), INCARNATION, keep) == full, cut
        # Records the snapshot already holds are not applied twice.
        overlap = records[max(cut - 3, 0) :]
        assert SessionState.restore(LoadedSession(encoded, overlap), INCARNATION, keep) == full, cut
    assert SessionState.from_dict(json.loads(json.dumps(full.to_dict()))) == full
    assert full.turn_count == size
    assert full.ledger_seq == (records[-1].ledger_seq if records else 0)
    assert len(full.messages) <= keep
    assert list(full.recent) == [r.turn_id for r in records][-RECENT_TURNS_KEPT:]
    assert all(full.recent[r.turn_id] == r.ledger_seq for r in records[-RECENT_TURNS_KEPT:])


def test_a_failed_turn_leaves_only_the_user_message() -> None:
    [failed] = [r for r in history(30, seed=7) if r.status == "failed"][:1]
    state = applied([failed], 40)
    assert [(m.role, m.text, m.turn_id) for m in state.messages] == [("user", failed.user_text, failed.turn_id)]


def test_restore_takes_the_current_incarnation() -> None:
    assert SessionState.restore(LoadedSession(None, []), INCARNATION, 40) == SessionState(incarnation=INCARNATION)
    cached = applied(history(3, seed=1), 40)
    cached.incarnation = "written-under-another-name"
    restored = SessionState.restore(LoadedSession(snapshot_of(cached), []), INCARNATION, 40)
    assert restored.incarnation == INCARNATION
    assert restored.messages == cached.messages
