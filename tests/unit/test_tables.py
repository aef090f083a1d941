"""The transcript store on a real LanceDB directory: schemas, idempotent writes, queries and tenant scoping."""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest

from salon.storage.errors import FailedPrecondition, InvalidArgument, Unavailable
from salon.storage.lance.schemas import (
    CONVERSION_ERRORS,
    SNAPSHOT_KEY,
    SNAPSHOTS_SCHEMA,
    TRANSCRIPTS_SCHEMA,
    TURN_KEY,
    batch_to_snapshots,
    batch_to_turns,
    record_fits,
    snapshots_to_batch,
    turns_to_batch,
)
from salon.storage.records import GuardrailDecision, SnapshotRecord, ToolApproval, ToolCallEntry, TurnRecord
from salon.storage.tables import SNAPSHOTS, TRANSCRIPTS, TranscriptStore

INCARNATION = "1700000000000000000"
UNICODE = "héllo wörld — 你好 🎉 e\u0301 \u200b\n\ttab \"quotes\" 'single' \\ back"


def turn(index: int, tenant: str = "acme", session: str = "s1", **fields: object) -> TurnRecord:
    """A completed turn ``t<index>`` whose texts name its tenant, session and index."""
    base = TurnRecord(
        tenant_id=tenant,
        session_id=session,
        turn_id=f"t{index}",
        incarnation=INCARNATION,
        turn_index=index,
        status="completed",
        user_text=f"question {index} of {tenant}/{session}",
        reply_text=f"answer {index}",
        deltas=(f"answer {index}",),
        ledger_seq=1000 + index,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def snapshot(turn_index: int, tenant: str = "acme", session: str = "s1", **fields: object) -> SnapshotRecord:
    """A snapshot after ``turn_index`` whose state names it."""
    base = SnapshotRecord(
        tenant_id=tenant,
        session_id=session,
        incarnation=INCARNATION,
        turn_index=turn_index,
        ledger_seq=1000 + turn_index,
        state={"turn_count": turn_index, "owner": tenant},
        created_at_ns=turn_index,
    )
    return dataclasses.replace(base, **fields)  # type: ignore[arg-type]


def full_turn() -> TurnRecord:
    """A turn with every field set to a value other than its default."""
    return TurnRecord(
        tenant_id="tenant-1",
        session_id="session_1",
        turn_id="turn-1",
        incarnation=INCARNATION,
        turn_index=7,
        status="partial",
        user_text=UNICODE,
        reply_text="réponse " + UNICODE,
        deltas=("ré", "ponse ", "🎉", ""),
        stop_reason="max_tokens",
        error_reason="PROVIDER_TIMEOUT",
        error_message="the model provider did not answer in time",
        retryable=True,
        retry_after_s=2.5,
        input_tokens=2**40,
        output_tokens=12,
        cache_read_input_tokens=3,
        cache_creation_input_tokens=4,
        provider="anthropic",
        model="claude-x",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        enqueued_at_ns=1_700_000_000_000_000_001,
        started_at_ns=1_700_000_000_000_000_002,
        first_token_at_ns=1_700_000_000_000_000_003,
        completed_at_ns=1_700_000_000_000_000_004,
        context_turn_ids=("turn-0", "turn--1"),
        ledger_seq=2**53 + 1,
        model_rounds=3,
        tool_calls=(
            ToolCallEntry(
                "toolu_1",
                "refund",
                '{"amount": 12}',
                server="crm",
                round=2,
                requires_approval=True,
                wait_deadline_ns=5,
                approval=ToolApproval(True, "ok " + UNICODE, "ann", "key:abc", 6),
                result="done " + UNICODE,
                is_error=True,
                source="mcp",
                called_at_ns=7,
                result_at_ns=8,
                call_tokens=9,
                result_tokens=10,
                guardrail=GuardrailDecision("injection", "flag", "PROMPT_INJECTION", "tool", call_id="toolu_1"),
                call_seq=11,
                approval_seq=12,
                decided_seq=13,
                guardrail_seq=14,
                result_seq=15,
            ),
        ),
        round_chars=(3, 6),
    )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[TranscriptStore]:
    opened = await TranscriptStore.open(str(tmp_path / "lance"))
    yield opened
    await opened.close()


# Schemas


def test_transcripts_schema_has_every_turn_field_and_the_key() -> None:
    fields = [f.name for f in dataclasses.fields(TurnRecord) if f.name not in ("tool_calls", "round_chars")]
    assert TRANSCRIPTS_SCHEMA.names == [TURN_KEY, *fields, "tools_json"]
    assert TRANSCRIPTS_SCHEMA.field("deltas").type == pa.list_(pa.string())
    assert TRANSCRIPTS_SCHEMA.field("context_turn_ids").type == pa.list_(pa.string())
    assert TRANSCRIPTS_SCHEMA.field("turn_index").type == pa.int64()
    assert SNAPSHOTS_SCHEMA.names[0] == SNAPSHOT_KEY


@pytest.mark.parametrize(
    "record",
    [full_turn(), turn(1, deltas=(), context_turn_ids=(), user_text="", reply_text=""), turn(2, status="cancelled")],
    ids=["every-field", "empty", "cancelled"],
)
def test_turn_round_trip(record: TurnRecord) -> None:
    batch = turns_to_batch([record, turn(99)])
    assert batch.schema == TRANSCRIPTS_SCHEMA
    assert batch.column(TURN_KEY).to_pylist() == [record.key, turn(99).key]
    assert batch_to_turns(batch) == [record, turn(99)]
    # A table as LanceDB returns it, columns in another order, converts the same way.
    table = pa.Table.from_batches([batch]).select(list(reversed(TRANSCRIPTS_SCHEMA.names)))
    assert batch_to_turns(table) == [record, turn(99)]


def test_snapshot_round_trip() -> None:
    records = [
        snapshot(3, state={"text": UNICODE, "nested": {"list": [1, 2.5, None, True]}, "n": 2**60}),
        snapshot(4, state={}),
    ]
    batch = snapshots_to_batch(records)
    assert batch.schema == SNAPSHOTS_SCHEMA
    assert batch.column(SNAPSHOT_KEY).to_pylist() == [r.key for r in records]
    assert batch_to_snapshots(batch) == records
    assert batch_to_snapshots(pa.Table.from_batches([batch])) == records


UNFIT = [
    {"turn_index": None},
    {"turn_index": "three"},
    {"input_tokens": 2**70},
    {"user_text": 5},
    {"deltas": ("a", None)},
    {"retryable": "yes"},
]


@pytest.mark.parametrize("bad", UNFIT, ids=lambda bad: next(iter(bad)))
def test_records_that_do_not_fit_are_refused(bad: dict[str, object]) -> None:
    record = turn(1, **bad)
    assert not record_fits(record)
    with pytest.raises(CONVERSION_ERRORS):
        turns_to_batch([turn(2), record])
    assert record_fits(turn(1))
    assert record_fits(snapshot(1))
    assert not record_fits(snapshot(1, ledger_seq=None))


def test_empty_batches() -> None:
    assert turns_to_batch([]).num_rows == 0
    assert batch_to_turns(turns_to_batch([])) == []
    assert batch_to_snapshots(snapshots_to_batch([])) == []


# Writes


async def test_stored_records_read_back_exactly(store: TranscriptStore) -> None:
    record = full_turn()
    await store.write([record], [snapshot(7, tenant="tenant-1", session="session_1", state={"t": UNICODE})])
    assert await store.history("tenant-1", "session_1") == [record]
    latest = await store.latest_snapshot("tenant-1", "session_1")
    assert latest is not None
    assert latest.state == {"t": UNICODE}


async def test_writing_the_same_records_twice_keeps_one_row_each(store: TranscriptStore) -> None:
    turns = [turn(i) for i in range(1, 6)]
    snapshots = [snapshot(2), snapshot(5)]
    await store.write(turns, snapshots)
    await store.write(turns, snapshots)
    await store.write(turns[1:3], [])
    assert await store.count(TRANSCRIPTS) == 5
    assert await store.count(SNAPSHOTS) == 2
    assert await store.history("acme", "s1") == turns


async def test_duplicates_within_one_batch_keep_the_first(store: TranscriptStore) -> None:
    first, again = turn(1), turn(1, reply_text="a different reply")
    await store.write([first, turn(2), again, first], [snapshot(1), snapshot(1, state={"other": 1})])
    assert await store.count(TRANSCRIPTS) == 2
    assert await store.count(SNAPSHOTS) == 1
    assert (await store.history("acme", "s1"))[0] == first
    assert await store.latest_snapshot("acme", "s1") == snapshot(1)


async def test_a_write_with_a_record_that_does_not_fit_writes_nothing(store: TranscriptStore) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await store.write([turn(1), turn(2, turn_index=None)], [snapshot(1)])
    assert caught.value.reason == "RECORD_DOES_NOT_FIT"
    assert await store.count(TRANSCRIPTS) == 0
    assert await store.count(SNAPSHOTS) == 0


async def test_a_stored_record_is_not_replaced(store: TranscriptStore) -> None:
    await store.write([turn(1)], [])
    await store.write([turn(1, reply_text="rewritten")], [])
    assert await store.history("acme", "s1") == [turn(1)]


async def test_scalar_indexes_are_created_after_the_first_write(store: TranscriptStore, tmp_path: Path) -> None:
    async def indexed_columns(table: str) -> dict[str, str]:
        db = await lancedb.connect_async(str(tmp_path / "lance"))
        indexes = await (await db.open_table(table)).list_indices()
        return {index.columns[0]: index.index_type for index in indexes}

    assert await indexed_columns(TRANSCRIPTS) == {}
    await store.write([turn(1)], [snapshot(1)])
    assert await indexed_columns(TRANSCRIPTS) == {"tenant_id": "Bitmap", "session_id": "BTree", TURN_KEY: "BTree"}
    assert await indexed_columns(SNAPSHOTS) == {"tenant_id": "Bitmap", "session_id": "BTree", SNAPSHOT_KEY: "BTree"}
    await store.write([turn(2)], [])  # indexes already there: nothing to create
    await store.optimize()
    assert [t.turn_index for t in await store.history("acme", "s1")] == [1, 2]


async def test_rows_persist_across_reopen(tmp_path: Path) -> None:
    uri = str(tmp_path / "lance")
    first = await TranscriptStore.open(uri)
    await first.write([turn(1), turn(2)], [snapshot(2)])
    await first.close()
    await first.close()  # idempotent
    second = await TranscriptStore.open(uri)
    try:
        assert await second.history("acme", "s1") == [turn(1), turn(2)]
        await second.write([turn(2), turn(3)], [])
        assert await second.count(TRANSCRIPTS) == 3
    finally:
        await second.close()


async def test_a_table_with_another_schema_is_refused_at_open(tmp_path: Path) -> None:
    uri = str(tmp_path / "lance")
    db = await lancedb.connect_async(uri)
    older = pa.schema([f for f in TRANSCRIPTS_SCHEMA if f.name != "error_message"])
    await db.create_table(TRANSCRIPTS, schema=older)
    with pytest.raises(FailedPrecondition) as caught:
        await TranscriptStore.open(uri)
    assert caught.value.reason == "STORE_SCHEMA_MISMATCH"


async def test_a_closed_store_refuses_calls(tmp_path: Path) -> None:
    closed = await TranscriptStore.open(str(tmp_path / "lance"))
    await closed.close()
    with pytest.raises(Unavailable):
        await closed.write([turn(1)], [])
    with pytest.raises(Unavailable):
        await closed.history("acme", "s1")


# Queries


async def test_history_is_ordered_and_pages(store: TranscriptStore) -> None:
    # Several writes in scrambled order: rows land in several fragments, not in turn order.
    for chunk in ([7, 2, 9], [1, 10, 4], [3, 8, 6, 5]):
        await store.write([turn(i) for i in chunk], [])
    assert [t.turn_index for t in await store.history("acme", "s1")] == list(range(1, 11))
    pages: list[list[int]] = []
    after = 0
    while page := await store.history("acme", "s1", after_turn_index=after, limit=3):
        pages.append([t.turn_index for t in page])
        after = page[-1].turn_index
    assert pages == [[1, 2, 3], [4, 5, 6], [7, 8, 9], [10]]
    assert [t.turn_index for t in await store.history("acme", "s1", after_turn_index=8)] == [9, 10]
    assert await store.history("acme", "s1", limit=0) == []
    assert await store.history("acme", "nobody") == []


async def test_turns_by_ids(store: TranscriptStore) -> None:
    await store.write([turn(i) for i in range(1, 6)] + [turn(3, session="s2")], [])
    found = await store.turns_by_ids("acme", "s1", ["t4", "t2", "unknown", "t4"])
    assert found == [turn(2), turn(4)]
    assert await store.turns_by_ids("acme", "s1", []) == []
    assert await store.turns_by_ids("acme", "s2", ["t3", "t4"]) == [turn(3, session="s2")]


async def test_latest_snapshot_has_the_highest_turn_index(store: TranscriptStore) -> None:
    assert await store.latest_snapshot("acme", "s1") is None
    await store.write([], [snapshot(4)])
    await store.write([], [snapshot(9), snapshot(2)])
    await store.write([], [snapshot(6), snapshot(12, incarnation="42"), snapshot(20, session="s2")])
    latest = await store.latest_snapshot("acme", "s1", INCARNATION)
    assert latest == snapshot(9)
    assert await store.latest_snapshot("acme", "s1") == snapshot(12, incarnation="42")
    assert await store.latest_snapshot("acme", "s1", "43") is None


async def test_tenants_are_isolated(store: TranscriptStore) -> None:
    # Two tenants use the same session and turn ids.
    await store.write([turn(i, tenant="alpha") for i in (1, 2, 3)], [snapshot(3, tenant="alpha")])
    await store.write([turn(1, tenant="beta")], [])
    assert [t.tenant_id for t in await store.history("beta", "s1")] == ["beta"]
    assert await store.turns_by_ids("beta", "s1", ["t2", "t3"]) == []
    assert await store.latest_snapshot("beta", "s1") is None

    await store.delete_session("beta", "s1")
    assert await store.history("beta", "s1") == []
    assert await store.history("alpha", "s1") == [turn(i, tenant="alpha") for i in (1, 2, 3)]
    assert await store.latest_snapshot("alpha", "s1") == snapshot(3, tenant="alpha")


async def test_delete_session_removes_only_that_session_in_every_table(store: TranscriptStore) -> None:
    await store.write(
        [turn(1), turn(2), turn(1, session="s2"), turn(1, session="s10")],
        [snapshot(2), snapshot(1, session="s2")],
    )
    await store.delete_session("acme", "s1")
    assert await store.count(TRANSCRIPTS, "session_id = 's1'") == 0
    assert await store.count(SNAPSHOTS, "session_id = 's1'") == 0
    assert await store.count(TRANSCRIPTS) == 2
    assert await store.history("acme", "s2") == [turn(1, session="s2")]
    assert await store.latest_snapshot("acme", "s2") == snapshot(1, session="s2")
    await store.delete_session("acme", "s1")  # already gone: nothing to do
    # The session can be written again after a delete (a re-created session).
    await store.write([turn(1, incarnation="99")], [])
    assert await store.history("acme", "s1") == [turn(1, incarnation="99")]


INJECTIONS = ["x' OR '1'='1", "", "a" * 65, "acme.s1", "s1; DROP", "é", "a b"]


@pytest.mark.parametrize("bad", INJECTIONS)
async def test_invalid_ids_are_refused_before_any_filter(store: TranscriptStore, bad: str) -> None:
    await store.write([turn(1)], [snapshot(1)])
    with pytest.raises(InvalidArgument):
        await store.history(bad, "s1")
    with pytest.raises(InvalidArgument):
        await store.history("acme", bad)
    with pytest.raises(InvalidArgument):
        await store.turns_by_ids("acme", "s1", ["t1", bad])
    with pytest.raises(InvalidArgument):
        await store.latest_snapshot(bad, "s1")
    with pytest.raises(InvalidArgument):
        await store.delete_session("acme", bad)
    if bad:  # an empty incarnation is legitimate (records written before incarnations)
        with pytest.raises(InvalidArgument):
            await store.latest_snapshot("acme", "s1", bad)
    assert await store.count(TRANSCRIPTS) == 1
    assert await store.count(SNAPSHOTS) == 1


async def test_count_of_an_unknown_table_is_refused(store: TranscriptStore) -> None:
    with pytest.raises(InvalidArgument):
        await store.count("sessions")


# An unwritable store


def _root_ignores_permissions(directory: Path) -> bool:
    """Whether file permissions fail to stop this process (root): probe by writing in a read-only dir."""
    probe_dir = directory / "probe"
    probe_dir.mkdir()
    probe_dir.chmod(0o500)
    try:
        (probe_dir / "file").touch()
    except PermissionError:
        return False
    else:
        return True
    finally:
        probe_dir.chmod(0o700)
        shutil.rmtree(probe_dir)


def _chmod_tree(root: Path, mode: int) -> None:
    for directory, _, _ in os.walk(root):
        Path(directory).chmod(mode)


async def test_a_read_only_directory_makes_writes_unavailable(store: TranscriptStore, tmp_path: Path) -> None:
    if _root_ignores_permissions(tmp_path):
        pytest.skip("running as root: a read-only mode does not stop writes")
    await store.write([turn(1)], [])
    _chmod_tree(tmp_path / "lance", 0o500)
    try:
        with pytest.raises(Unavailable) as caught:
            await store.write([turn(2)], [])
    finally:
        _chmod_tree(tmp_path / "lance", 0o700)
    assert caught.value.reason == "STORE_UNWRITABLE"
    assert caught.value.retry_after_s == 1.0
    assert "question" not in caught.value.message


async def test_a_vanished_directory_makes_writes_unavailable(store: TranscriptStore, tmp_path: Path) -> None:
    # Works as root too: the store's directory is replaced by a plain file, so no file can be created in it.
    await store.write([turn(1)], [])
    shutil.rmtree(tmp_path / "lance")
    (tmp_path / "lance").write_text("not a directory")
    with pytest.raises(Unavailable) as caught:
        await store.write([turn(2)], [snapshot(2)])
    assert caught.value.reason == "STORE_UNWRITABLE"
    assert caught.value.retry_after_s == 1.0
    assert "question" not in caught.value.message
    with pytest.raises(Unavailable):
        await store.delete_session("acme", "s1")
