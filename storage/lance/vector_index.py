"""The approximate (ANN) vector index of a large ``knowledge`` or ``memories`` table.

Up to :data:`VECTOR_INDEX_MIN_ROWS` rows a table has no vector index: every search is exact (a scan of the
prefiltered rows), which is fast at that size. Past it, the writer of the table (ingestion for ``knowledge``,
the memory indexer for ``memories``) builds an IVF_PQ index in the background (:class:`VectorIndexer`);
:meth:`~salon.storage.tables.TranscriptStore.optimize` and later ingestions fold new rows into it. Searches
then probe :data:`NPROBES` partitions and re-rank :data:`REFINE_FACTOR` times the rows asked for with the
full vectors (:func:`tune`). A prefilter that leaves few rows (one session's memories, a small tenant's
knowledge) is searched exactly even when the table has the index (:class:`SearchPlanner`). How these were
chosen (recall against exact search, latency, build time at 100k and 1M rows): ``python -m
bench.bench_retrieval --ann``, bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Final

from lancedb.index import IvfPq
from lancedb.table import AsyncTable

from salon.storage.lance.schemas import VECTOR

log = logging.getLogger(__name__)

VECTOR_INDEX_MIN_ROWS: Final = 50_000
"""Rows past which a table gets its vector index (the engine's ``vector_index_min_rows`` setting). Measured on
the loaded 2-core machine, an exact search of a whole tenant took 21 ms at 20k rows, 113-272 ms at 100k and
2.3 s at 1M; through the index 21 ms at 100k and 37 ms at 1M. Past about 50k rows the exact search is
slower than the index by several times."""
NPROBES: Final = 50
"""IVF partitions a search probes (LanceDB's default is 20)."""
REFINE_FACTOR: Final = 30
"""A search reads this many times the rows asked for from the index and re-ranks them with the full vectors:
product quantisation alone ranks too coarsely (recall@50 against exact search at 1M rows: 0.18 without,
0.61 with 10, 0.82 with 30; probing 100 partitions instead of 50 added nothing)."""
RETRY_AFTER_S: Final = 60.0
"""A build that failed is tried again at the first check at least this long after."""
MIN_TRAINING_ROWS: Final = 256
"""Fewer rows than this cannot train the product quantiser's 256 codes: no index is built below it."""


ROWS_PER_PARTITION: Final = 4096
"""IVF partitions are made of about this many rows. LanceDB's older rule, sqrt(rows) partitions, took 308 s to
build at 100k rows on the loaded 2-core machine (k-means cost grows with partitions x sampled rows); fewer,
larger partitions build in a fraction of that and keep recall (bench/RESULTS.md)."""


def index_config(rows: int) -> IvfPq:
    """The IVF_PQ index for a table of ``rows`` rows: cosine distance (the vectors are unit length), a
    partition per :data:`ROWS_PER_PARTITION` rows."""
    return IvfPq(distance_type="cosine", num_partitions=max(1, rows // ROWS_PER_PARTITION))


EXACT_MAX_ROWS: Final = 10_000
"""A prefilter that leaves fewer rows than this is searched exactly even when the table has its index:
measured, 100 prefiltered rows of a 100k-row table took 4 ms exactly against 8-10 ms through the index, and
at 1M rows the index found only part of them (its probed partitions hold only some)."""
SCOPE_SEEN_S: Final = 30.0
"""How long a prefilter's row count (and whether the table has its index) is taken as known."""
SCOPES_KEPT: Final = 10_000
"""Row counts remembered before the memo starts over."""


def tune(search: Any, *, exact: bool = False) -> Any:
    """``search`` (a vector query) exact (the index bypassed) or with the index's search settings (which
    LanceDB ignores while there is no index)."""
    if exact:
        return search.bypass_vector_index()
    return search.nprobes(NPROBES).refine_factor(REFINE_FACTOR)


class SearchPlanner:
    """Decides, per prefilter, whether a vector search of ``table`` goes through its ANN index or is exact.

    A table without the index costs nothing to plan (whether it has one is looked up every
    :data:`SCOPE_SEEN_S`); with it, a prefilter's rows are counted (remembered as long) and fewer than
    ``max_exact_rows`` are searched exactly."""

    def __init__(self, table: AsyncTable, *, max_exact_rows: int = EXACT_MAX_ROWS) -> None:
        self._table = table
        self._max_exact_rows = max_exact_rows
        self._indexed = (-SCOPE_SEEN_S, False)
        self._rows: dict[str, tuple[float, int]] = {}

    async def exact(self, where: str) -> bool:
        """Whether the search prefiltered by ``where`` should bypass the index (True also when there is none)."""
        now = time.monotonic()
        if now - self._indexed[0] >= SCOPE_SEEN_S:
            self._indexed = (now, await has_vector_index(self._table))
        if not self._indexed[1]:
            return True
        seen = self._rows.get(where)
        if seen is None or now - seen[0] >= SCOPE_SEEN_S:
            if len(self._rows) >= SCOPES_KEPT:
                self._rows.clear()
            seen = (now, await self._table.count_rows(where))
            self._rows[where] = seen
        return seen[1] < self._max_exact_rows


async def has_vector_index(table: AsyncTable) -> bool:
    """Whether ``table`` has an index on its vector column."""
    return any(VECTOR in index.columns for index in await table.list_indices())


class VectorIndexer:
    """Builds one table's vector index in the background once it holds ``min_rows`` rows.

    :meth:`check` (after each write, cheap and synchronous) starts the build when none runs or is done; the
    task is this object's: :meth:`close` cancels and awaits it (idempotent). A failed build is logged and
    tried again after :data:`RETRY_AFTER_S`: searches are correct without the index, only slower.
    ``min_rows`` 0 never builds one.
    """

    def __init__(self, table: AsyncTable, name: str, *, min_rows: int) -> None:
        self._table = table
        self._name = name
        self._min_rows = max(min_rows, MIN_TRAINING_ROWS) if min_rows > 0 else 0
        self._task: asyncio.Task[None] | None = None
        self._done = False
        self._next_try = 0.0
        self._closed = False

    @property
    def indexed(self) -> bool:
        """Whether the table is known to have its vector index."""
        return self._done

    def check(self) -> None:
        """Start building the index in the background if the table may need it now."""
        if self._closed or self._done or self._min_rows == 0 or time.monotonic() < self._next_try:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._build(), name=f"salon-vector-index-{self._name}")

    async def wait(self) -> None:
        """Wait for a build in progress (for tests and benchmarks)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _build(self) -> None:
        try:
            if await has_vector_index(self._table):
                self._done = True
                return
            rows = await self._table.count_rows()
            if rows < self._min_rows:
                return
            started = time.perf_counter()
            await self._table.create_index(VECTOR, config=index_config(rows), replace=False)
            self._done = True
            elapsed = time.perf_counter() - started
            log.info("built the vector index of %s (%d rows) in %.1f s", self._name, rows, elapsed)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any LanceDB failure: searches stay correct, retry later
            self._next_try = time.monotonic() + RETRY_AFTER_S
            log.warning("building the vector index of %s failed (%s); will retry", self._name, type(exc).__name__)

    async def close(self) -> None:
        """Stop a build in progress. Idempotent."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
