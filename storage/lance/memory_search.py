"""Searching long-term memory without a turn: the read-only side of the ``memories`` table that
``SearchMemory`` offers (one session's remembered turns, or one user's across their sessions), with the same
hybrid search and fusion as a turn's retrieval."""

from __future__ import annotations

from collections.abc import Mapping

from lancedb.db import AsyncConnection
from lancedb.table import AsyncTable

from salon.storage.embedding import Embedder
from salon.storage.errors import Unavailable
from salon.storage.lance.connection import connect
from salon.storage.lance.reembed import check_model
from salon.storage.lance.retrieval import SearchTarget, candidate_limit, hybrid_search, memory_filter
from salon.storage.lance.vector_index import SearchPlanner
from salon.storage.reasons import Reason
from salon.storage.retrieval import MEMORY, Passage, fuse, select
from salon.storage.tables import UNREADABLE, memories_spec, open_table, store_errors


class MemorySearch:
    """Searches the ``memories`` table, always prefiltered to one tenant and one session or one user. Create
    with :meth:`open`."""

    def __init__(self, db: AsyncConnection, table: AsyncTable, embedder: Embedder) -> None:
        self._db = db
        self._table = table
        self._embedder = embedder
        self._plan = SearchPlanner(table)
        self._closed = False

    @classmethod
    async def open(
        cls,
        uri: str,
        embedder: Embedder,
        *,
        read_consistency_s: float | None = 0.0,
        storage_options: Mapping[str, str] | None = None,
    ) -> MemorySearch:
        """Connect to the LanceDB at ``uri`` (with ``storage_options`` for an object store); the ``memories``
        table is created if missing (and given the columns added since it was made). Refuses a table embedded
        by another model (``EMBEDDING_MODEL_MISMATCH``)."""
        with store_errors("cannot open the memories table", UNREADABLE):
            db = await connect(uri, storage_options=storage_options, read_consistency_s=read_consistency_s)
        try:
            with store_errors("cannot open the memories table", UNREADABLE):
                table = await open_table(db, memories_spec(embedder.dim))
            await check_model(table, "memories", embedder)
        except BaseException:
            db.close()  # type: ignore[no-untyped-call]  # lancedb leaves close() unannotated
            raise
        return cls(db, table, embedder)

    async def search(
        self,
        tenant_id: str,
        text: str,
        *,
        session_id: str = "",
        user_id: str = "",
        top_k: int = 4,
        min_score: float = 0.0,
    ) -> list[Passage]:
        """The remembered turns of the session (or, with ``user_id``, of every session of the user) most
        relevant to ``text``, best first; at most ``top_k``, none below ``min_score``. Ids are validated
        (:class:`~salon.storage.errors.InvalidArgument`)."""
        if self._closed:
            raise Unavailable("the memory search is closed", reason=Reason.STORE_CLOSED)
        where = memory_filter(tenant_id, session_id, user_id=user_id)
        if top_k <= 0:
            return []
        with store_errors("cannot read the memories table", UNREADABLE):
            exact = await self._plan.exact(where)
        target = SearchTarget(self._table, MEMORY, where, exact)
        (found,) = await hybrid_search([target], text, self._embedder.embed([text]), limit=candidate_limit(top_k))
        return select(fuse(found), top_k=top_k, min_score=min_score)

    async def close(self) -> None:
        """Release the table and the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._table.close()  # type: ignore[no-untyped-call]  # lancedb leaves close() unannotated
        self._db.close()  # type: ignore[no-untyped-call]
