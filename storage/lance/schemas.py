"""Arrow schemas of the LanceDB tables, and the exact conversions between records and Arrow rows.

One row per turn in ``transcripts``, one per snapshot in ``snapshots``, one per remembered turn in
``memories`` and one per document chunk in ``knowledge``. Each table carries its record's
key as a column (``turn_key``, ``snapshot_key``): the merge key that makes writes idempotent. Every column
is non-nullable: a record always has a value for every field (empty strings, zeros and empty lists
included), so a null in a row can only mean a bug, and Arrow rejects it at the batch.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import pyarrow as pa

from salon.storage.records import GuardrailDecision, SnapshotRecord, TurnRecord, entries_from_json, entries_to_json

TURN_KEY: Final = "turn_key"
"""Merge key column of ``transcripts`` (:attr:`TurnRecord.key`)."""
SNAPSHOT_KEY: Final = "snapshot_key"
"""Merge key column of ``snapshots`` (:attr:`SnapshotRecord.key`)."""

TOOLS_JSON: Final = "tools_json"
"""Column of a turn's tool calls and round lengths (:func:`salon.storage.records.entries_to_json`; "" without tools)."""
_TOOL_FIELDS: Final = frozenset({"tool_calls", "round_chars"})
_STRINGS = pa.list_(pa.string())
_LIST_FIELDS: Final = frozenset({"deltas", "context_turn_ids"})
_GUARDRAIL_DECISION = pa.struct(
    [
        pa.field("check", pa.string(), nullable=False),
        pa.field("action", pa.string(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("count", pa.int64(), nullable=False),
        pa.field("score", pa.float64(), nullable=False),
        pa.field("rules", _STRINGS, nullable=False),
        pa.field("passage", pa.int64(), nullable=False),
    ]
)


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


TRANSCRIPTS_SCHEMA: Final = pa.schema(
    [
        _required(TURN_KEY, pa.string()),
        _required("tenant_id", pa.string()),
        _required("session_id", pa.string()),
        _required("turn_id", pa.string()),
        _required("incarnation", pa.string()),
        _required("turn_index", pa.int64()),
        _required("status", pa.string()),
        _required("user_text", pa.string()),
        _required("reply_text", pa.string()),
        _required("deltas", _STRINGS),
        _required("stop_reason", pa.string()),
        _required("error_reason", pa.string()),
        _required("error_message", pa.string()),
        _required("retryable", pa.bool_()),
        _required("retry_after_s", pa.float64()),
        _required("input_tokens", pa.int64()),
        _required("output_tokens", pa.int64()),
        _required("cache_read_input_tokens", pa.int64()),
        _required("cache_creation_input_tokens", pa.int64()),
        _required("provider", pa.string()),
        _required("model", pa.string()),
        _required("estimated_cost_usd", pa.float64()),
        _required("trace_id", pa.string()),
        _required("enqueued_at_ns", pa.int64()),
        _required("started_at_ns", pa.int64()),
        _required("first_token_at_ns", pa.int64()),
        _required("completed_at_ns", pa.int64()),
        _required("context_turn_ids", _STRINGS),
        _required("context_json", pa.string()),
        _required("ledger_seq", pa.int64()),
        _required("guardrails", pa.list_(_GUARDRAIL_DECISION)),
        _required("model_rounds", pa.int64()),
        _required("user_id", pa.string()),
        _required("do_not_remember", pa.bool_()),
        _required(TOOLS_JSON, pa.string()),
    ]
)
"""One row per turn: every :class:`TurnRecord` field plus ``turn_key``; the tool calls and the length of each
round's text go together in ``tools_json`` (a string column, so tables made before tools existed take it as an
added column)."""

SNAPSHOTS_SCHEMA: Final = pa.schema(
    [
        _required(SNAPSHOT_KEY, pa.string()),
        _required("tenant_id", pa.string()),
        _required("session_id", pa.string()),
        _required("incarnation", pa.string()),
        _required("turn_index", pa.int64()),
        _required("ledger_seq", pa.int64()),
        _required("state_json", pa.string()),
        _required("created_at_ns", pa.int64()),
    ]
)
"""One row per snapshot; ``state_json`` is ``json.dumps`` of :attr:`SnapshotRecord.state`."""

MEMORY_KEY: Final = "memory_key"
"""Merge key column of ``memories``: the turn key of the remembered turn."""
CHUNK_KEY: Final = "chunk_key"
"""Merge key column of ``knowledge``: ``<tenant_id>.<chunk_id>``."""
VECTOR: Final = "vector"
TEXT: Final = "text"


def vector_type(dim: int) -> pa.DataType:
    """The vector column's type: ``dim`` float32 values (what LanceDB's vector search expects)."""
    return pa.list_(pa.float32(), dim)


def memories_schema(dim: int) -> pa.Schema:
    """One row per remembered turn (completed turns only): its user text and reply, embedded; ``user_id`` (the
    session's user, "" for none or rows made before users existed) and ``completed_at_ns`` (when the turn
    completed; 0 in rows made before) were added later."""
    return pa.schema(
        [
            _required(MEMORY_KEY, pa.string()),
            _required("tenant_id", pa.string()),
            _required("session_id", pa.string()),
            _required("turn_id", pa.string()),
            _required("turn_index", pa.int64()),
            _required(TEXT, pa.string()),
            _required(VECTOR, vector_type(dim)),
            _required("model_id", pa.string()),
            _required("created_at_ns", pa.int64()),
            _required("user_id", pa.string()),
            _required("completed_at_ns", pa.int64()),
        ]
    )


def knowledge_schema(dim: int) -> pa.Schema:
    """One row per chunk of a document of a tenant's knowledge base; ``collection`` ("" for none, and in rows
    made before collections existed) was added later."""
    return pa.schema(
        [
            _required(CHUNK_KEY, pa.string()),
            _required("tenant_id", pa.string()),
            _required("document_id", pa.string()),
            _required("chunk_id", pa.string()),
            _required("chunk_index", pa.int64()),
            _required("title", pa.string()),
            _required("media_type", pa.string()),
            _required(TEXT, pa.string()),
            _required(VECTOR, vector_type(dim)),
            _required("model_id", pa.string()),
            _required("ingested_at_ns", pa.int64()),
            _required("collection", pa.string()),
        ]
    )


def rows_to_batch(schema: pa.Schema, columns: Mapping[str, Sequence[Any]]) -> pa.RecordBatch:
    """A batch of ``schema`` from column values (vectors as sequences of floats); nulls refused."""
    return _without_nulls(pa.RecordBatch.from_pydict(dict(columns), schema=schema))


_TURN_FIELDS: Final = tuple(f.name for f in dataclasses.fields(TurnRecord) if f.name not in _TOOL_FIELDS)

CONVERSION_ERRORS: Final = (pa.ArrowException, TypeError, ValueError, OverflowError)
"""What the ``*_to_batch`` functions raise for a record that does not fit its schema (a value of the wrong
type, an integer beyond int64, a None)."""


def turns_to_batch(records: Sequence[TurnRecord]) -> pa.RecordBatch:
    """The rows of ``records``, in order, as a batch of :data:`TRANSCRIPTS_SCHEMA`."""
    columns: dict[str, list[Any]] = {TURN_KEY: [r.key for r in records]}
    for name in _TURN_FIELDS:
        values = [getattr(r, name) for r in records]
        # Arrow builds list columns from lists; the records hold tuples so they stay hashable.
        if name == "guardrails":
            columns[name] = [[d.to_dict() for d in v] for v in values]
        else:
            columns[name] = [list(v) for v in values] if name in _LIST_FIELDS else values
    columns[TOOLS_JSON] = [entries_to_json(r.tool_calls, r.round_chars) for r in records]
    return _without_nulls(pa.RecordBatch.from_pydict(columns, schema=TRANSCRIPTS_SCHEMA))


def batch_to_turns(data: pa.Table | pa.RecordBatch) -> list[TurnRecord]:
    """The records in the rows of ``data`` (any column order; extra columns are ignored), in row order."""
    return [_turn_from_row(row) for row in data.select([*_TURN_FIELDS, TOOLS_JSON]).to_pylist()]


def _turn_from_row(row: Mapping[str, Any]) -> TurnRecord:
    fields: dict[str, Any] = {name: tuple(row[name]) if name in _LIST_FIELDS else row[name] for name in _TURN_FIELDS}
    fields["guardrails"] = tuple(GuardrailDecision.from_dict(d) for d in row["guardrails"])
    fields["tool_calls"], fields["round_chars"] = entries_from_json(row[TOOLS_JSON])
    return TurnRecord(**fields)


def snapshots_to_batch(records: Sequence[SnapshotRecord]) -> pa.RecordBatch:
    """The rows of ``records``, in order, as a batch of :data:`SNAPSHOTS_SCHEMA`."""
    columns: dict[str, list[Any]] = {
        SNAPSHOT_KEY: [r.key for r in records],
        "tenant_id": [r.tenant_id for r in records],
        "session_id": [r.session_id for r in records],
        "incarnation": [r.incarnation for r in records],
        "turn_index": [r.turn_index for r in records],
        "ledger_seq": [r.ledger_seq for r in records],
        "state_json": [_dump_state(r.state) for r in records],
        "created_at_ns": [r.created_at_ns for r in records],
    }
    return _without_nulls(pa.RecordBatch.from_pydict(columns, schema=SNAPSHOTS_SCHEMA))


def batch_to_snapshots(data: pa.Table | pa.RecordBatch) -> list[SnapshotRecord]:
    """The records in the rows of ``data`` (any column order; extra columns are ignored), in row order."""
    return [_snapshot_from_row(row) for row in data.to_pylist()]


def _snapshot_from_row(row: Mapping[str, Any]) -> SnapshotRecord:
    return SnapshotRecord(
        tenant_id=row["tenant_id"],
        session_id=row["session_id"],
        incarnation=row["incarnation"],
        turn_index=row["turn_index"],
        ledger_seq=row["ledger_seq"],
        state=json.loads(row["state_json"]),
        created_at_ns=row["created_at_ns"],
    )


def record_fits(record: TurnRecord | SnapshotRecord) -> bool:
    """Whether ``record`` converts to a row of its table; one that does not can never be stored."""
    try:
        if isinstance(record, TurnRecord):
            turns_to_batch([record])
        else:
            snapshots_to_batch([record])
    except CONVERSION_ERRORS:
        return False
    return True


def _without_nulls(batch: pa.RecordBatch) -> pa.RecordBatch:
    # from_pydict lets None into a non-nullable column; LanceDB would then refuse the whole batch at write
    # time, and a refusal there looks like an outage. Refuse it here, where it is clearly the record's fault.
    for name, column in zip(batch.schema.names, batch.columns, strict=True):
        if column.null_count or (pa.types.is_list(column.type) and column.flatten().null_count):
            raise ValueError(f"column {name} has a null value")
    return batch


def _dump_state(state: Mapping[str, Any]) -> str:
    # Compact and unescaped: the ledger payload uses the same separators, and UTF-8 is cheaper than \u escapes.
    return json.dumps(state, separators=(",", ":"), ensure_ascii=False)
