"""Retrieval from LanceDB: the hybrid search (vector and full-text, each prefiltered to a tenant or a
session) over the tables ``knowledge`` and ``memories``, fused as :mod:`salon.storage.retrieval` describes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import pyarrow as pa
from lancedb.db import AsyncConnection
from lancedb.table import AsyncTable

from salon.storage.embedding import Embedder
from salon.storage.errors import Unavailable
from salon.storage.ids import require_id
from salon.storage.lance.connection import connect
from salon.storage.lance.reembed import check_model
from salon.storage.lance.schemas import TEXT, VECTOR
from salon.storage.lance.vector_index import SearchPlanner, tune
from salon.storage.periods import Period, find_period
from salon.storage.retrieval import KNOWLEDGE, MEMORY, Candidate, Passage, RetrievalQuery, check_query, fuse, select
from salon.storage.tables import UNREADABLE, knowledge_spec, memories_spec, open_table, store_errors


class LanceRetriever:
    """The :class:`~salon.storage.retrieval.Retriever` over the LanceDB tables ``knowledge`` and ``memories``.
    Create with :meth:`open`.

    Per query: one embedding of the query text, then on each source a vector search and a full-text
    search, all four concurrently, each prefiltered by the scalar indexes (knowledge: the tenant; memories:
    the tenant and the session, minus the excluded turns). Rows written since the last index update are
    searched too (LanceDB scans unindexed rows), so a new memory or document is found at once.
    """

    def __init__(self, db: AsyncConnection, knowledge: AsyncTable, memories: AsyncTable, embedder: Embedder) -> None:
        self._db = db
        self._knowledge = knowledge
        self._memories = memories
        self._embedder = embedder
        self._closed = False
        self._plans = {KNOWLEDGE: SearchPlanner(knowledge), MEMORY: SearchPlanner(memories)}
        self._knowledge_seen: dict[str, tuple[float, bool]] = {}
        """Tenant -> (when checked, whether it has any document): see :meth:`_has_knowledge`."""

    @classmethod
    async def open(
        cls,
        uri: str,
        embedder: Embedder,
        *,
        read_consistency_s: float | None = 0.0,
        storage_options: Mapping[str, str] | None = None,
    ) -> LanceRetriever:
        """Connect to the LanceDB at ``uri`` (with ``storage_options`` for an object store), creating the two
        tables if missing (empty, for vectors of ``embedder.dim``). ``read_consistency_s``: how stale a read may
        be with respect to writes by other processes (the batch writer, ingestion); ``0`` looks for new versions
        on every query."""
        with store_errors("cannot open the retrieval tables", UNREADABLE):
            db = await connect(uri, storage_options=storage_options, read_consistency_s=read_consistency_s)
        try:
            with store_errors("cannot open the retrieval tables", UNREADABLE):
                knowledge = await open_table(db, knowledge_spec(embedder.dim))
                memories = await open_table(db, memories_spec(embedder.dim))
            await check_model(knowledge, "knowledge", embedder)
            await check_model(memories, "memories", embedder)
        except BaseException:
            db.close()  # type: ignore[no-untyped-call]  # lancedb leaves close() unannotated
            raise
        return cls(db, knowledge, memories, embedder)

    async def retrieve(self, query: RetrievalQuery) -> list[Passage]:
        """See :meth:`salon.storage.retrieval.Retriever.retrieve`. Raises :class:`salon.storage.errors.Unavailable` if
        LanceDB fails."""
        check_query(query)
        if self._closed:
            raise Unavailable("the retriever is closed", reason="STORE_CLOSED")
        if query.top_k <= 0 or not (query.include_memory or query.include_knowledge):
            return []
        now = datetime.fromtimestamp(query.now_ns / 1e9, UTC) if query.now_ns > 0 else datetime.now(UTC)
        period = find_period(query.text, now) if query.include_memory else None
        targets: list[SearchTarget] = []
        with store_errors("cannot read the retrieval tables", UNREADABLE):
            if query.include_knowledge and await self._has_knowledge(query.tenant_id):
                where = knowledge_filter(query.tenant_id, collections=query.collections)
                exact = await self._plans[KNOWLEDGE].exact(where)
                targets.append(SearchTarget(self._knowledge, KNOWLEDGE, where, exact))
            if query.include_memory:
                # Planned on the whole scope (the window's turns are few): one row count per scope, remembered.
                scope = memory_filter(query.tenant_id, query.session_id, user_id=query.memory_user_id)
                exact = await self._plans[MEMORY].exact(scope)
                where = memory_filter(query.tenant_id, query.session_id, query.exclude_turn_ids, query.memory_user_id)
                targets.append(SearchTarget(self._memories, MEMORY, where, exact))
                if period is not None:
                    # The question names a period: its turns are searched on their own too, so they are among
                    # the candidates even when the rest of the session outscores them.
                    dated = f"{where} AND {period_filter(period)}"
                    targets.append(SearchTarget(self._memories, MEMORY, dated, exact))
        if not targets:
            return []  # nothing to search: no query embedding either, so such a turn pays nothing
        found = await hybrid_search(
            targets, query.text, self._embedder.embed([query.text]), limit=candidate_limit(query.top_k)
        )
        by_source: dict[str, dict[str, Candidate]] = {}
        for target, candidates in zip(targets, found, strict=True):
            pool = by_source.setdefault(target.source, {})
            for candidate in candidates:
                pool.setdefault(candidate.passage.chunk_id, candidate)
        fused = [
            p
            for source, pool in by_source.items()
            for p in fuse(
                pool.values(), query_text=_lexical_query(query.text, period, source), period=_period(period, source)
            )
        ]
        return select(fused, top_k=query.top_k, min_score=query.min_score)

    @property
    def count_tokens(self) -> Callable[[str], int] | None:
        """The embedding model's count of word pieces, once the model is loaded (None before, or for a model
        without a tokenizer): what a prompt's passage budget is counted in."""
        counter = getattr(self._embedder, "count_tokens", None)
        return counter if callable(counter) else None

    async def _has_knowledge(self, tenant_id: str) -> bool:
        """Whether the tenant has any document, from a count remembered for a while: a tenant with documents
        for :data:`KNOWLEDGE_SEEN_S`, one without for :data:`NO_KNOWLEDGE_SEEN_S` (so a first ingestion is
        searched within that long)."""
        now = time.monotonic()
        seen = self._knowledge_seen.get(tenant_id)
        if seen is not None and now - seen[0] < (KNOWLEDGE_SEEN_S if seen[1] else NO_KNOWLEDGE_SEEN_S):
            return seen[1]
        with store_errors("cannot read the retrieval tables", UNREADABLE):
            present = await self._knowledge.count_rows(knowledge_filter(tenant_id)) > 0
        self._knowledge_seen[tenant_id] = (now, present)
        return present

    async def close(self) -> None:
        """Release the tables and the connection; later calls raise :class:`Unavailable`. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._knowledge.close()  # type: ignore[no-untyped-call]  # lancedb leaves close() unannotated
        self._memories.close()  # type: ignore[no-untyped-call]
        self._db.close()  # type: ignore[no-untyped-call]


def _period(period: Period | None, source: str) -> Period | None:
    return period if source == MEMORY else None


def _lexical_query(text: str, period: Period | None, source: str) -> str:
    """What of the query is matched word for word: for memories, without the words naming a period (matched on
    the memories' dates instead)."""
    return period.strip(text) if period is not None and source == MEMORY else text


KNOWLEDGE_SEEN_S: Final = 30.0
"""How long a tenant known to have documents is searched without counting them again."""
NO_KNOWLEDGE_SEEN_S: Final = 1.0
"""How long a tenant known to have none skips the knowledge searches (the query embedding too, when no
memory is searched either): a tenant's first documents are found at most this long after ingestion."""


def candidate_limit(top_k: int) -> int:
    """How many rows each of the two searches returns for fusion: more than ``top_k``, so a passage ranked
    low by one search but high by the other can still make the cut."""
    return max(2 * top_k, 8)


def period_filter(period: Period) -> str:
    """The prefilter of the memories said during ``period``: their text starts with a date inside it (the
    prefixes are digits and dashes, made by :meth:`Period.prefixes`)."""
    return "(" + " OR ".join(f"{TEXT} LIKE '[{prefix}%'" for prefix in period.prefixes()) + ")"


def knowledge_filter(tenant_id: str, *, collections: Iterable[str] = (), document_ids: Iterable[str] = ()) -> str:
    """The prefilter of a tenant's knowledge (only of ``collections`` and ``document_ids`` when given), from
    validated ids."""
    where = f"tenant_id = '{require_id(tenant_id, 'tenant_id')}'"
    where += _in_filter("collection", collections, "collection")
    return where + _in_filter("document_id", document_ids, "document_id")


def _in_filter(column: str, values: Iterable[str], what: str) -> str:
    wanted = sorted({require_id(v, what) for v in values})
    return f" AND {column} IN ({', '.join(repr_id(v) for v in wanted)})" if wanted else ""


def repr_id(value: str) -> str:
    """A validated id as an SQL string literal (ids never hold a quote)."""
    return f"'{value}'"


def memory_filter(tenant_id: str, session_id: str, exclude_turn_ids: Iterable[str] = (), user_id: str = "") -> str:
    """The prefilter of a session's memories (of one tenant), or with ``user_id`` of every session of that user,
    minus ``exclude_turn_ids``; ids validated."""
    if user_id:
        where = f"{knowledge_filter(tenant_id)} AND user_id = '{require_id(user_id, 'user_id')}'"
    else:
        where = f"{knowledge_filter(tenant_id)} AND session_id = '{require_id(session_id, 'session_id')}'"
    excluded = sorted({require_id(t, "turn_id") for t in exclude_turn_ids})
    if excluded:
        where += " AND turn_id NOT IN (" + ", ".join(f"'{t}'" for t in excluded) + ")"
    return where


_COLUMNS: Final = {
    KNOWLEDGE: ["chunk_key", "document_id", "chunk_id", "title", TEXT],
    MEMORY: ["memory_key", "session_id", "turn_id", "turn_index", TEXT, "completed_at_ns", "created_at_ns"],
}


@dataclass(frozen=True, slots=True)
class SearchTarget:
    """A table to search, what kind of rows it holds, and the prefilter (built from validated ids)."""

    table: AsyncTable
    source: str
    where: str
    exact: bool = True
    """Bypass the table's ANN index (see :class:`~salon.storage.lance.vector_index.SearchPlanner`)."""


async def hybrid_search(
    targets: Sequence[SearchTarget], text: str, embedding: Awaitable[list[list[float]]], *, limit: int
) -> list[list[Candidate]]:
    """The candidates of a vector search and a full-text search on each target, both prefiltered, merged
    by row (a row found by both carries both scores); one list per target, in order.

    ``embedding`` (the query's, one vector) is awaited after the full-text searches have started: they do
    not need it, so they run while the model computes it.
    """
    by_text = [asyncio.ensure_future(_text_search(t.table, t.where, text, _COLUMNS[t.source], limit)) for t in targets]
    try:
        (vector,) = await embedding
        with store_errors("cannot read the retrieval tables", UNREADABLE):
            vector_searches = (
                _vector_search(t.table, t.where, vector, _COLUMNS[t.source], limit, exact=t.exact) for t in targets
            )
            by_vector = await asyncio.gather(*vector_searches)
            versions = [await t.table.version() for t in targets]  # cheap: the dataset is already loaded
            texts = await asyncio.gather(*by_text)
    finally:
        # On success they are done; on a failure they are stopped and reaped, so none outlives the call.
        for task in by_text:
            task.cancel()
        await asyncio.gather(*by_text, return_exceptions=True)
    query = np.asarray(vector, dtype=np.float32)
    return [
        _merge(t.source, version, vector_rows, text_rows, query)
        for t, version, vector_rows, text_rows in zip(targets, versions, by_vector, texts, strict=True)
    ]


async def search_table(
    table: AsyncTable, source: str, *, where: str, text: str, vector: Sequence[float], limit: int, exact: bool = True
) -> list[Candidate]:
    """:func:`hybrid_search` of one table with a query vector already computed."""

    async def ready() -> list[list[float]]:
        return [list(vector)]

    (found,) = await hybrid_search([SearchTarget(table, source, where, exact)], text, ready(), limit=limit)
    return found


def _merge(source: str, version: int, by_vector: pa.Table, by_text: pa.Table | None, query: Any) -> list[Candidate]:
    key = _COLUMNS[source][0]
    found: dict[str, Candidate] = {}
    distances = by_vector.column("_distance").to_pylist()
    for row, distance in zip(by_vector.drop_columns(["_distance"]).to_pylist(), distances, strict=True):
        found[row[key]] = Candidate(_passage(source, row, version), 1.0 - float(distance))
    if by_text is None or by_text.num_rows == 0:
        return list(found.values())
    # Cosine similarities of the full-text hits in one product, from the Arrow buffer (no Python floats).
    vectors = by_text.column(VECTOR).combine_chunks()
    dim = vectors.type.list_size
    cosines = vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim) @ query
    scores = by_text.column("_score").to_pylist()
    rows = by_text.drop_columns([VECTOR, "_score"]).to_pylist()
    for row, cosine, score in zip(rows, cosines.tolist(), scores, strict=True):
        k = row[key]
        found[k] = Candidate(_passage(source, row, version), found[k].cosine if k in found else cosine, float(score))
    return list(found.values())


async def _vector_search(
    table: AsyncTable, where: str, vector: Sequence[float], columns: list[str], limit: int, *, exact: bool
) -> pa.Table:
    search = tune(table.query().nearest_to(list(vector)).column(VECTOR).distance_type("cosine"), exact=exact)
    return await search.where(where).select([*columns, "_distance"]).limit(limit).to_arrow()


async def _text_search(table: AsyncTable, where: str, text: str, columns: list[str], limit: int) -> pa.Table | None:
    if not text.strip():
        return None
    # A plain string is a match query: no query syntax, so the user's text cannot make it fail or widen it.
    search = table.query().nearest_to_text(text, columns=TEXT).where(where)
    try:
        return await search.select([*columns, VECTOR, "_score"]).limit(limit).to_arrow()
    except ValueError as exc:
        # No full-text index yet (nothing written to the table yet): the vector search still answers.
        if "INVERTED index" in str(exc):
            return None
        raise


def _passage(source: str, row: dict[str, Any], version: int) -> Passage:
    if source == KNOWLEDGE:
        return Passage(KNOWLEDGE, row["document_id"], row["chunk_id"], row[TEXT], 0.0, version, row["title"])
    return Passage(
        MEMORY,
        row["session_id"],
        row["turn_id"],
        row[TEXT],
        0.0,
        version,
        turn_index=row["turn_index"],
        # Rows indexed before turn times were kept: the time they were indexed, shortly after the turn.
        time_ns=row["completed_at_ns"] or row["created_at_ns"],
    )
