"""The ledger's records survive their encoding, a session's state is a pure function of its records (a
snapshot is only a cache), and the in-memory journal fails appends as an unreachable ledger does. (The
journal contract itself, on both journals: tests/contract/test_journal.py.)"""

from __future__ import annotations

import dataclasses
import json
import random

import pytest

from salon.actors.session import RECENT_TURNS_KEPT, SessionState
from salon.storage import (
    LoadedSession,
    SnapshotRecord,
    TurnRecord,
    Unavailable,
    turn_key,
)
from salon.storage.inmemory import InMemoryJournal
from salon.storage.records import GuardrailDecision, ToolApproval, ToolCallEntry, TurnStatus

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


def test_turn_record_bytes_are_those_of_the_full_dataclass_encoding() -> None:
    """Stored records were written as ``json.dumps(dataclasses.asdict(record))``: the leaner encoding must give the
    same bytes, nested guardrail decisions and tool calls (with an approval, a guardrail, none) included."""
    guard = GuardrailDecision(check="injection", action="flag", reason="r", source="tool", score=0.5, rules=("x",))
    call = ToolCallEntry(call_id="c1", tool="lookup", approval=ToolApproval(approved=True, approver="ann"))
    for original in (
        record(1),
        dataclasses.replace(
            record(2),
            user_text="héllo “quoted”\n",
            guardrails=(guard,),
            tool_calls=(call, dataclasses.replace(call, call_id="c2", approval=None, guardrail=guard)),
            round_chars=(3, 4),
            context_turn_ids=("t0", "t1"),
            estimated_cost_usd=0.25,
            do_not_remember=True,
        ),
    ):
        assert original.to_json() == json.dumps(dataclasses.asdict(original), separators=(",", ":")).encode()
        assert TurnRecord.from_json(original.to_json()) == original


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
