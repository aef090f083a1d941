"""The transcript store: turns and snapshots in two LanceDB tables (embedded, a directory or object-store URI),
and the sessions' long-term memory (``memories``: the completed turns, embedded) when given an embedder.
Also the table specifications and opening helpers the knowledge base and the retriever share.

Writes are idempotent (``merge_insert`` on the record key, insert-if-absent), so the ledger may redeliver
an entry any number of times without a second row. Every query is scoped to one tenant: the tenant id is
part of every filter this module builds, and ids are checked against the id alphabet before they are put
in a filter, so a filter can never be widened or injected.

Uses LanceDB's async API only: the work runs on LanceDB's own runtime, never blocking the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import Final, TypeVar, cast

import pyarrow as pa
from lancedb.db import AsyncConnection
from lancedb.index import FTS, Bitmap, BTree
from lancedb.query import ColumnOrdering
from lancedb.table import AsyncTable

from salon.storage.embedding import Embedder
from salon.storage.errors import FailedPrecondition, InvalidArgument, Unavailable
from salon.storage.ids import is_valid_id, require_id
from salon.storage.lance.connection import connect, retry_conflicts
from salon.storage.lance.memories import MEMORIES, memories_to_batch, memory_text, memory_words, remembers
from salon.storage.lance.schemas import (
    CHUNK_KEY,
    CONVERSION_ERRORS,
    MEMORY_KEY,
    SNAPSHOT_KEY,
    SNAPSHOTS_SCHEMA,
    TEXT,
    TRANSCRIPTS_SCHEMA,
    TURN_KEY,
    batch_to_snapshots,
    batch_to_turns,
    knowledge_schema,
    memories_schema,
    snapshots_to_batch,
    turns_to_batch,
)
from salon.storage.lance.vector_index import VectorIndexer
from salon.storage.records import SnapshotRecord, TurnRecord, turn_key

log = logging.getLogger(__name__)

TRANSCRIPTS: Final = "transcripts"
KNOWLEDGE_TABLE: Final = "knowledge"
SNAPSHOTS: Final = "snapshots"

UNWRITABLE: Final = "STORE_UNWRITABLE"
UNREADABLE: Final = "STORE_UNREADABLE"
CLOSED: Final = "STORE_CLOSED"
DOES_NOT_FIT: Final = "RECORD_DOES_NOT_FIT"
RETRY_AFTER_S: Final = 1.0

# Errors the LanceDB binding raises for I/O and storage failures: the Rust core reports "lance error: …"
# as RuntimeError (a directory replaced by a file gives "LanceError(IO): Not a directory"); local file
# access can also surface as OSError. Anything else (TypeError, a pyarrow schema error) is a bug, not an
# outage, and is left to propagate.
_STORE_ERRORS: Final = (RuntimeError, OSError)

_R = TypeVar("_R")

IndexConfig = BTree | Bitmap | FTS


@dataclass(frozen=True, slots=True)
class TableSpec:
    """A table: its schema, merge key and the indexes it gets once it has rows."""

    name: str
    schema: pa.Schema
    key: str
    indexes: tuple[tuple[str, IndexConfig], ...]
    added_columns: tuple[str, ...] = ()
    """Columns added to the schema after tables were made with it: :func:`open_table` adds them to an
    older table (empty string or 0 in its rows). Any other difference is refused."""


# Bitmap for tenant_id: few distinct values with many rows each, the case a bitmap per value is built for.
# BTree for session_id and the keys: high cardinality (LanceDB advises Bitmap only below a few thousand
# distinct values; one bitmap per session or per turn would be mostly empty).
_SPECS: Final = (
    TableSpec(
        TRANSCRIPTS,
        TRANSCRIPTS_SCHEMA,
        TURN_KEY,
        (("tenant_id", Bitmap()), ("session_id", BTree()), (TURN_KEY, BTree())),
        added_columns=("context_json", "model_rounds", "tools_json", "user_id", "do_not_remember"),
    ),
    TableSpec(
        SNAPSHOTS,
        SNAPSHOTS_SCHEMA,
        SNAPSHOT_KEY,
        (("tenant_id", Bitmap()), ("session_id", BTree()), (SNAPSHOT_KEY, BTree())),
    ),
)


def memories_spec(dim: int) -> TableSpec:
    """The ``memories`` table for vectors of ``dim`` floats.

    The vector (ANN) index is not among these: the store that embeds memories builds it once the table is
    large (:mod:`salon.storage.lance.vector_index`), and a search prefiltered to one session's few hundred or
    thousand rows stays exact even then (faster, and the index with a narrow prefilter returns fewer rows).
    """
    return TableSpec(
        MEMORIES,
        memories_schema(dim),
        MEMORY_KEY,
        (
            ("tenant_id", Bitmap()),
            ("session_id", BTree()),
            (MEMORY_KEY, BTree()),
            (TEXT, FTS()),
            ("user_id", BTree()),
        ),
        added_columns=("user_id", "completed_at_ns"),
    )


def knowledge_spec(dim: int) -> TableSpec:
    """The ``knowledge`` table for vectors of ``dim`` floats.

    The vector (ANN) index is not among these: the knowledge base builds it once the table is large
    (:mod:`salon.storage.lance.vector_index`); a small tenant's search stays exact even then.
    """
    return TableSpec(
        KNOWLEDGE_TABLE,
        knowledge_schema(dim),
        CHUNK_KEY,
        (
            ("tenant_id", Bitmap()),
            ("document_id", BTree()),
            (CHUNK_KEY, BTree()),
            (TEXT, FTS()),
            ("collection", Bitmap()),
        ),
        added_columns=("collection",),
    )


class TranscriptStore:
    """Turns and snapshots of every tenant's sessions, in LanceDB. Create with :meth:`open`."""

    def __init__(
        self,
        db: AsyncConnection,
        tables: dict[str, AsyncTable],
        *,
        keep_versions_s: float,
        embedder: Embedder | None = None,
        vector_index_min_rows: int = 0,
    ) -> None:
        self._db = db
        self._embedder = embedder
        self._tables = tables
        self._specs = {s.name: s for s in _SPECS}
        if embedder is not None:
            self._specs[MEMORIES] = memories_spec(embedder.dim)
        self._keep_versions = timedelta(seconds=keep_versions_s)
        self._indexed: set[str] = set()
        self._index_lock = asyncio.Lock()
        # Only the store that embeds memories builds their ANN index (one builder per table).
        self._vector_index = (
            VectorIndexer(tables[MEMORIES], MEMORIES, min_rows=vector_index_min_rows)
            if embedder is not None and MEMORIES in tables
            else None
        )
        self._closed = False

    @classmethod
    async def open(
        cls,
        uri: str,
        *,
        read_consistency_s: float | None = 0.0,
        keep_versions_s: float = 3600.0,
        embedder: Embedder | None = None,
        storage_options: Mapping[str, str] | None = None,
        vector_index_min_rows: int = 0,
    ) -> TranscriptStore:
        """Connect to the LanceDB at ``uri`` (a directory or an object store, with its ``storage_options``: see
        :mod:`salon.storage.lance.connection`), creating the two tables if they are missing.

        ``read_consistency_s``: how stale a read may be with respect to writes made through another
        connection (another process). LanceDB's default (``None``) never looks for them: a reader would
        not see turns a writer in another process appended after it opened. ``0`` checks on every read.
        ``keep_versions_s``: how long :meth:`optimize` keeps old table versions for readers still on them.
        ``embedder``: when given, :meth:`write` also embeds each newly stored completed turn (user text and
        reply, one batch per call) into the ``memories`` table, the session's long-term memory (created if
        missing). Without it, an existing ``memories`` table is still opened, so :meth:`delete_session`
        removes a session's memories whichever process deletes it. ``vector_index_min_rows`` (with
        ``embedder``): rows past which ``memories`` gets its ANN index, built in the background after an
        :meth:`optimize` (0: never; see :mod:`salon.storage.lance.vector_index`).
        """
        with store_errors("cannot open the transcript store", UNWRITABLE):
            db = await connect(uri, storage_options=storage_options, read_consistency_s=read_consistency_s)
        try:
            with store_errors("cannot open the transcript store", UNWRITABLE):
                tables = {s.name: await open_table(db, s) for s in _SPECS}
                if embedder is not None:
                    tables[MEMORIES] = await open_table(db, memories_spec(embedder.dim))
                elif (memories := await open_existing(db, MEMORIES)) is not None:
                    tables[MEMORIES] = memories
            store = cls(
                db,
                tables,
                keep_versions_s=keep_versions_s,
                embedder=embedder,
                vector_index_min_rows=vector_index_min_rows,
            )
            await store._note_existing_indexes()
        except BaseException:
            db.close()  # type: ignore[no-untyped-call]  # lancedb leaves close() unannotated
            raise
        return store

    async def write(self, turns: Sequence[TurnRecord], snapshots: Sequence[SnapshotRecord]) -> None:
        """Insert the records whose key is not stored yet; a record already stored is left as it is.

        Within one call, a key given twice keeps its first record (``merge_insert`` would insert both). The
        tables are separate transactions: if a later one fails, calling again completes the write.
        With an embedder, the completed turns that have no memory row yet are embedded in one batch and
        inserted into ``memories`` (a redelivered turn is neither embedded nor stored again).
        Raises :class:`Unavailable` (``STORE_UNWRITABLE``) if the store cannot be written, and
        :class:`InvalidArgument` (``RECORD_DOES_NOT_FIT``, nothing written) if a record does not fit its
        table's schema (see :func:`salon.storage.lance.schemas.record_fits`).
        """
        self._check_open()
        unique_turns = _first_per_key(turns, lambda r: r.key)
        unique_snapshots = _first_per_key(snapshots, lambda r: r.key)
        try:
            turn_rows = turns_to_batch(unique_turns)
            snapshot_rows = snapshots_to_batch(unique_snapshots)
        except CONVERSION_ERRORS as exc:
            # Not an outage: the same records will never fit, so the caller must not simply retry them.
            raise InvalidArgument("a record does not fit the table schema", reason=DOES_NOT_FIT) from exc
        with store_errors("cannot write to the transcript store", UNWRITABLE):
            if turn_rows.num_rows:
                await self._insert_absent(TRANSCRIPTS, turn_rows)
            if snapshot_rows.num_rows:
                await self._insert_absent(SNAPSHOTS, snapshot_rows)
        await self._remember([t for t in unique_turns if remembers(t)])
        await self._ensure_indexes((TRANSCRIPTS, SNAPSHOTS, MEMORIES))

    async def remember(self, turns: Sequence[TurnRecord]) -> None:
        """Embed the completed ``turns`` that have no memory row yet into ``memories`` (one embedding batch),
        without touching the transcripts: the long-term memory indexer's write (see :class:`MemoryIndexer`).
        Needs a store opened with an embedder. Raises like :meth:`write`."""
        self._check_open()
        if self._embedder is None:
            raise RuntimeError("remember() needs a store opened with an embedder")
        await self._remember([t for t in _first_per_key(turns, lambda r: r.key) if remembers(t)])
        await self._ensure_indexes((MEMORIES,))

    async def _remember(self, turns: list[TurnRecord]) -> None:
        """Embed and store the memories of ``turns`` not stored yet (one embedding batch)."""
        embedder = self._embedder
        if embedder is None or not turns:
            return
        table = self._tables[MEMORIES]
        keys = ", ".join(f"'{_key_literal(t.key)}'" for t in turns)
        with store_errors("cannot read the transcript store", UNREADABLE):
            stored = await table.query().where(f"{MEMORY_KEY} IN ({keys})").select([MEMORY_KEY]).to_arrow()
        present = set(stored.column(MEMORY_KEY).to_pylist())
        new = [t for t in turns if t.key not in present]
        if not new:
            return
        texts = [memory_text(t) for t in new]
        vectors = await embedder.embed([memory_words(t) for t in new])
        rows = memories_to_batch(new, vectors, dim=embedder.dim, model_id=embedder.model_id, texts=texts)
        with store_errors("cannot write to the transcript store", UNWRITABLE):
            await self._insert_absent(MEMORIES, rows)

    async def history(
        self, tenant_id: str, session_id: str, *, after_turn_index: int = 0, limit: int = 50
    ) -> list[TurnRecord]:
        """Up to ``limit`` turns of the session with ``turn_index > after_turn_index``, by turn index."""
        if limit <= 0:
            return []
        where = f"{_session_filter(tenant_id, session_id)} AND turn_index > {int(after_turn_index)}"
        rows = await self._query(TRANSCRIPTS, where, order=[("turn_index", True)], limit=limit)
        return batch_to_turns(_sort(rows, "turn_index", "ledger_seq"))

    async def turns_by_ids(self, tenant_id: str, session_id: str, turn_ids: Iterable[str]) -> list[TurnRecord]:
        """The stored turns of the session among ``turn_ids``, by turn index; unknown ids are left out."""
        scope = _session_filter(tenant_id, session_id)
        keys = sorted({f"'{turn_key(tenant_id, session_id, require_id(t, 'turn_id'))}'" for t in turn_ids})
        if not keys:
            return []
        # The key column has the BTree index; the tenant and session terms keep the scope explicit.
        where = f"{scope} AND {TURN_KEY} IN ({', '.join(keys)})"
        rows = await self._query(TRANSCRIPTS, where)
        return batch_to_turns(_sort(rows, "turn_index", "ledger_seq"))

    async def latest_snapshot(
        self, tenant_id: str, session_id: str, incarnation: str | None = None
    ) -> SnapshotRecord | None:
        """The session's snapshot with the highest turn index (of ``incarnation`` if given), or None."""
        where = _session_filter(tenant_id, session_id)
        if incarnation is not None:
            where += f" AND incarnation = '{_incarnation(incarnation)}'"
        newest_first = [("turn_index", False), ("created_at_ns", False)]
        rows = await self._query(SNAPSHOTS, where, order=newest_first, limit=1)
        return max(batch_to_snapshots(rows), key=lambda s: (s.turn_index, s.created_at_ns), default=None)

    async def delete_session(self, tenant_id: str, session_id: str) -> None:
        """Delete every row of the session, in every table. Deleting an absent session does nothing."""
        self._check_open()
        where = _session_filter(tenant_id, session_id)
        with store_errors("cannot delete from the transcript store", UNWRITABLE):
            if MEMORIES not in self._tables and (memories := await open_existing(self._db, MEMORIES)) is not None:
                # Made by another process (the writer) after this store opened.
                self._tables[MEMORIES] = memories
            for name, table in self._tables.items():
                await retry_conflicts(partial(table.delete, where), what=f"deleting from {name}")

    async def erase_user(self, tenant_id: str, user_id: str) -> int:
        """Delete every row carrying the user's id (memories and transcripts) in the tenant; how many memory
        rows there were. The sessions of the user are deleted by :meth:`delete_session`; this catches the rows
        those leave (a memory indexed after its session was deleted, say)."""
        self._check_open()
        where = f"tenant_id = '{require_id(tenant_id, 'tenant_id')}' AND user_id = '{require_id(user_id, 'user_id')}'"
        erased = 0
        with store_errors("cannot delete from the transcript store", UNWRITABLE):
            if MEMORIES not in self._tables and (memories := await open_existing(self._db, MEMORIES)) is not None:
                self._tables[MEMORIES] = memories
            for name, table in self._tables.items():
                if name == SNAPSHOTS or "user_id" not in (await table.schema()).names:
                    continue  # no user column: a snapshot goes with its session; an unmigrated table has none
                if name == MEMORIES:
                    erased = await table.count_rows(where)
                await table.delete(where)
        return erased

    async def count(self, table: str, where: str | None = None) -> int:
        """Rows of ``table`` (``transcripts``, ``snapshots`` or ``memories``) matching ``where``, across tenants.

        For operators and tests: ``where`` is SQL passed as is, so it must never be built from request input.
        """
        target = self._table(table)
        with store_errors("cannot read the transcript store", UNREADABLE):
            return await target.count_rows(where)

    async def optimize(self, tables: Collection[str] | None = None) -> None:
        """Compact small fragments (one per write), bring the indexes up to date with new rows and remove
        versions older than ``keep_versions_s``; only the named ``tables`` if given."""
        self._check_open()
        with store_errors("cannot optimize the transcript store", UNWRITABLE):
            for name, table in self._tables.items():
                if tables is None or name in tables:
                    compact = partial(table.optimize, cleanup_older_than=self._keep_versions)
                    await retry_conflicts(compact, what=f"optimizing {name}")
        if self._vector_index is not None and (tables is None or MEMORIES in tables):
            self._vector_index.check()

    @property
    def vector_index(self) -> VectorIndexer | None:
        """The builder of the ``memories`` ANN index (a store that embeds memories only)."""
        return self._vector_index

    async def close(self) -> None:
        """Release the tables and the connection; later calls raise :class:`Unavailable`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._vector_index is not None:
            await self._vector_index.close()
        for table in self._tables.values():
            table.close()  # type: ignore[no-untyped-call]  # lancedb leaves close() unannotated
        self._db.close()  # type: ignore[no-untyped-call]

    async def _insert_absent(self, name: str, batch: pa.RecordBatch) -> None:
        spec = self._specs[name]
        table = self._tables[name]

        def insert() -> Awaitable[object]:
            builder = table.merge_insert(spec.key).when_not_matched_insert_all()
            # On an AsyncTable, execute() returns a coroutine, though it is annotated as returning the result.
            return cast(Awaitable[object], builder.execute(batch))

        await retry_conflicts(insert, what=f"writing to {name}")

    async def _query(
        self, name: str, where: str, *, order: list[tuple[str, bool]] | None = None, limit: int | None = None
    ) -> pa.Table:
        """Rows of ``name`` matching ``where``, sorted by ``order`` ((column, ascending) pairs) if given."""
        self._check_open()
        query = self._tables[name].query().where(where)
        if order:
            # Without an ordering, LanceDB applies the limit to rows in storage order: an arbitrary subset.
            query = query.order_by([ColumnOrdering(column_name=c, ascending=up) for c, up in order])
        if limit is not None:
            query = query.limit(limit)
        with store_errors("cannot read the transcript store", UNREADABLE):
            return await query.to_arrow()

    async def _note_existing_indexes(self) -> None:
        for spec in self._specs.values():
            if await has_indexes(self._tables[spec.name], spec):
                self._indexed.add(spec.name)

    async def _ensure_indexes(self, written: tuple[str, ...]) -> None:
        """Create the indexes of each table among ``written`` that has rows and lacks them (once per table).

        Only the tables this store writes: a store that only remembers (the memory indexer's) indexing the
        transcripts too would race the transcript writer's store making the same index, and lose."""
        pending = [self._specs[name] for name in written if name in self._specs and name not in self._indexed]
        if not pending:
            return
        async with self._index_lock:
            for spec in pending:
                if spec.name not in self._indexed:
                    await self._index_table(spec)

    async def _index_table(self, spec: TableSpec) -> None:
        if await create_missing_indexes(self._tables[spec.name], spec):
            self._indexed.add(spec.name)

    def _table(self, name: str) -> AsyncTable:
        self._check_open()
        if name not in self._tables:
            raise InvalidArgument(f"no such table; expected one of {sorted(self._tables)}", reason="INVALID_TABLE")
        return self._tables[name]

    def _check_open(self) -> None:
        if self._closed:
            raise Unavailable("the transcript store is closed", reason=CLOSED)


@contextlib.contextmanager
def store_errors(message: str, reason: str) -> Iterator[None]:
    """Turn LanceDB and OS failures into :class:`Unavailable`; the message never carries row content."""
    try:
        yield
    except _STORE_ERRORS as exc:
        log.warning("%s: %s", message, type(exc).__name__)
        raise Unavailable(message, reason=reason, retry_after_s=RETRY_AFTER_S) from exc


async def open_table(db: AsyncConnection, spec: TableSpec) -> AsyncTable:
    """The table of ``spec``, created if missing; refused if it exists with another schema.

    A table made before one of ``spec.added_columns`` existed gets it (empty string or 0 in the old rows),
    at the end of its columns; column order does not matter to the reads and writes (they go by name).
    """
    failure: Exception | None = None
    for _ in range(_OPEN_ATTEMPTS):
        try:
            return await db.create_table(spec.name, schema=spec.schema, exist_ok=True)
        except (ValueError, RuntimeError) as exc:
            # ValueError: "Schema Error: Provided schema does not match existing table schema".
            # RuntimeError: "Retryable commit conflict": another process created the table at the same
            # moment (the gateway, each host and the writer all open the tables at start).
            failure = exc
        table = await open_existing(db, spec.name)
        if table is None:
            continue
        try:
            existing = await table.schema()
            if _same_fields(existing, spec.schema) or await _add_missing_columns(table, spec):
                return table
        except BaseException:
            table.close()  # type: ignore[no-untyped-call]  # lancedb leaves close() unannotated
            raise
        table.close()  # type: ignore[no-untyped-call]
        # Writing would fail on every batch, so stop at open: the table needs a migration.
        raise _schema_mismatch(spec) from failure
    assert failure is not None
    raise failure


_OPEN_ATTEMPTS: Final = 3


async def create_missing_indexes(table: AsyncTable, spec: TableSpec) -> bool:
    """Create the indexes of ``spec`` that ``table`` lacks, once it has rows; True when all exist.

    Indexes are made after the first write: an index of an empty table is of no use to the queries, and
    older LanceDB versions refuse to train one. Rows written after an index is made are still searched
    (unindexed, by a scan) until ``optimize()`` folds them in. A failure is logged and reported as False:
    queries are correct without indexes, only slower, so the caller tries again later.
    """
    try:
        if await table.count_rows() == 0:
            return False
        present = {column for index in await table.list_indices() for column in index.columns}
        for column, config in spec.indexes:
            if column not in present:
                await table.create_index(column, config=config)
    except _STORE_ERRORS as exc:
        log.warning("creating the indexes of %s failed (%s); will retry", spec.name, type(exc).__name__)
        return False
    log.debug("created the indexes of %s", spec.name)
    return True


async def has_indexes(table: AsyncTable, spec: TableSpec) -> bool:
    """Whether ``table`` has every index of ``spec``."""
    with store_errors("cannot read the store", UNREADABLE):
        present = {column for index in await table.list_indices() for column in index.columns}
    return all(column in present for column, _ in spec.indexes)


def _schema_mismatch(spec: TableSpec) -> FailedPrecondition:
    return FailedPrecondition(
        f"table {spec.name} exists with a different schema; migrate it first", reason="STORE_SCHEMA_MISMATCH"
    )


_COLUMN_DEFAULTS: Final = {pa.string(): "''", pa.int64(): "CAST(0 AS BIGINT)", pa.bool_(): "false"}


async def _add_missing_columns(table: AsyncTable, spec: TableSpec) -> bool:
    """Add the columns of ``spec`` the table lacks, if that is all that differs; True if done."""
    existing = await table.schema()
    missing = [f for f in spec.schema if f.name not in existing.names]
    kept = pa.schema([f for f in spec.schema if f.name in existing.names])
    if not missing:
        # Another process added them since the caller looked.
        return _same_fields(existing, spec.schema)
    addable = all(f.name in spec.added_columns and f.type in _COLUMN_DEFAULTS for f in missing)
    if not addable or not _same_fields(existing, kept):
        return False
    for _ in range(_OPEN_ATTEMPTS):
        try:
            await table.add_columns({f.name: _COLUMN_DEFAULTS[f.type] for f in missing})
        except (ValueError, RuntimeError):
            # A commit conflict: another process (the gateway, a host, the writer: all open the tables at start)
            # changed the table first, most likely adding the same columns. Look again at the latest version.
            await table.checkout_latest()  # type: ignore[no-untyped-call]  # lancedb leaves it unannotated
            if _same_fields(await table.schema(), spec.schema):
                return True
            continue
        log.info("added the columns %s to %s", [f.name for f in missing], spec.name)
        return True
    return False


def _same_fields(a: pa.Schema, b: pa.Schema) -> bool:
    """Whether two schemas have the same fields (name, type, nullability), in any order."""
    return len(a) == len(b) and all(b.get_field_index(f.name) >= 0 and b.field(f.name) == f for f in a)


async def open_existing(db: AsyncConnection, name: str) -> AsyncTable | None:
    """The table ``name`` if it exists, else None."""
    try:
        return await db.open_table(name)
    except ValueError:  # LanceDB: "Table '…' was not found"
        return None


def _key_literal(key: str) -> str:
    # Turn keys are made of validated ids and dots; check anyway, as this goes into a filter.
    if not all(is_valid_id(part) for part in key.split(".")):
        raise InvalidArgument("a record key is not made of valid ids", reason=DOES_NOT_FIT)
    return key


def _session_filter(tenant_id: str, session_id: str) -> str:
    """The filter of one session of one tenant; every query starts from it."""
    tenant = require_id(tenant_id, "tenant_id")
    session = require_id(session_id, "session_id")
    return f"tenant_id = '{tenant}' AND session_id = '{session}'"


def _incarnation(value: str) -> str:
    # An incarnation is a creation time in nanoseconds, or empty for records written before incarnations.
    return value if value == "" else require_id(value, "incarnation")


def _first_per_key(records: Iterable[_R], key: Callable[[_R], str]) -> list[_R]:
    """``records`` without repeated keys, keeping each key's first record, in order."""
    seen: set[str] = set()
    kept: list[_R] = []
    for record in records:
        k = key(record)
        if k not in seen:
            seen.add(k)
            kept.append(record)
    return kept


def _sort(rows: pa.Table, *columns: str) -> pa.Table:
    # The query's order_by already orders the rows; sorting again costs little and does not rely on it.
    return rows.sort_by([(c, "ascending") for c in columns])


MEMORY_OPTIMIZE_MIN_INTERVAL_S: Final = 3.0
"""Shortest time between two optimizations of the memories table by the indexer: under load (a flush a
second), about three unindexed fragments at most for the retrievals to scan, at the cost of a small optimize
every few seconds while the table is small (measured in bench/RESULTS.md)."""
MEMORY_OPTIMIZE_MAX_SHARE: Final = 0.05
"""The largest share of the indexer's time that optimizing the memories table may take."""


class MemoryIndexer:
    """The long-term memory side of the ledger, as a :class:`~salon.storage.writer.BatchWriter` store.

    Embedding is much slower than writing rows (bench/RESULTS.md: tens to hundreds of texts per second on two
    cores against thousands of rows), so memories are built by a second batch writer on its own durable
    consumer of the ledger: transcripts, and the store health that gates new turns, never wait for the
    embedding model; memories lag behind under load and catch up. Snapshots are ignored.

    :meth:`optimize` is paced by time rather than by flushes (give the batch writer ``optimize_every=1``):
    every flush leaves a fragment the indexes do not cover yet, and every turn's retrieval pays for each one
    (about 0.35 ms of CPU per query per fragment, bench/RESULTS.md), while an optimize costs more as the
    table grows (compaction rewrites the small fragments). So the table is optimized at most every
    ``min_interval_s``, and after an optimize that took ``t`` seconds not again for ``t / max_share``: at
    most that share of the indexer's time goes to optimizing, whatever the table's size."""

    def __init__(
        self,
        store: TranscriptStore,
        *,
        min_interval_s: float = MEMORY_OPTIMIZE_MIN_INTERVAL_S,
        max_share: float = MEMORY_OPTIMIZE_MAX_SHARE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_interval_s < 0 or not 0 < max_share <= 1:
            raise ValueError("min_interval_s >= 0 and 0 < max_share <= 1")
        self._store = store
        self._min_interval_s = min_interval_s
        self._max_share = max_share
        self._clock = clock
        self._next_optimize = clock() + min_interval_s
        self.optimizations = 0
        """Optimizations run (for tests and benchmarks)."""

    async def write(self, turns: Sequence[TurnRecord], snapshots: Sequence[SnapshotRecord]) -> None:
        """Remember the completed ``turns`` (idempotent under redelivery)."""
        await self._store.remember(turns)

    async def optimize(self) -> None:
        """Compact the memories table and fold new rows into its indexes, unless it was done too recently
        (see the class documentation)."""
        started = self._clock()
        if started < self._next_optimize:
            return
        # Set first: a failing optimize is tried again only after the interval, not at every flush.
        self._next_optimize = started + self._min_interval_s
        await self._store.optimize((MEMORIES,))
        self.optimizations += 1
        took = self._clock() - started
        self._next_optimize = started + max(self._min_interval_s, took / self._max_share)
