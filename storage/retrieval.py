"""Retrieval: the passages of the tenant's knowledge base and of the session's long-term memory that are
relevant to a turn.

Hybrid search: a vector search (cosine similarity of the query's embedding) and a full-text search (BM25)
run on each source with the same prefilter, and their candidates are fused by a convex combination:

    score = 0.7 * max(0, cosine) + 0.3 * bm25 / best_bm25

Rank fusion (RRF) was not used because its scores are ranks, not relevance: the best candidate of a search
that found nothing relevant still scores at the top, so a per-session ``min_score`` could not cut off
irrelevant passages. The cosine term is an absolute similarity; the lexical term (relative to the best
lexical match of the same search) lifts passages that share rare words with the query (names, codes) that
the small embedding model blurs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Final, Literal, Protocol

from storage.embedding import Embedder, HashEmbedder
from storage.ids import require_id

SourceName = Literal["knowledge", "memory"]
KNOWLEDGE: Final = "knowledge"
MEMORY: Final = "memory"

VECTOR_WEIGHT: Final = 0.7
LEXICAL_WEIGHT: Final = 1.0 - VECTOR_WEIGHT


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved piece of text and where it came from."""

    source: str
    """``"knowledge"`` or ``"memory"``."""
    document_id: str
    """Knowledge: the document id; memory: the session id."""
    chunk_id: str
    """Knowledge: ``"<document_id>#<n>"``; memory: the turn id."""
    text: str
    score: float
    """Fused relevance in [0, 1], higher is better (see the module documentation)."""
    table_version: int
    """Version of the table the passage was read from (0 for the in-memory retriever)."""
    title: str = ""
    """Knowledge: the document's title and the chunk's markdown heading, if any."""
    turn_index: int = 0
    """Memory only: the turn's index in its session."""


@dataclass(frozen=True, slots=True)
class RetrievalQuery:
    """What to retrieve for one turn."""

    tenant_id: str
    session_id: str
    text: str
    top_k: int = 4
    min_score: float = 0.0
    exclude_turn_ids: frozenset[str] = frozenset()
    """Turns still in the window: their memories are never returned."""
    include_memory: bool = True
    include_knowledge: bool = True


class Retriever(Protocol):
    """Finds the passages relevant to a query; see :class:`LanceRetriever`."""

    async def retrieve(self, query: RetrievalQuery) -> list[Passage]:
        """At most ``top_k`` passages with ``score >= min_score``, best first, from the query's tenant only
        (memories from its session only, never of an excluded turn)."""
        ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """A row found by the vector search, the full-text search or both, before fusion."""

    passage: Passage
    cosine: float
    bm25: float = 0.0


def fuse(candidates: Iterable[Candidate]) -> list[Passage]:
    """The candidates' passages with their fused score, best first (ties: the order given)."""
    pool = list(candidates)
    best_bm25 = max((c.bm25 for c in pool), default=0.0)
    scored: list[Passage] = []
    for c in pool:
        lexical = c.bm25 / best_bm25 if best_bm25 > 0 else 0.0
        score = VECTOR_WEIGHT * max(0.0, min(1.0, c.cosine)) + LEXICAL_WEIGHT * max(0.0, min(1.0, lexical))
        scored.append(replace(c.passage, score=score))
    return sorted(scored, key=lambda p: p.score, reverse=True)


def select(passages: Iterable[Passage], query: RetrievalQuery) -> list[Passage]:
    """The best ``top_k`` of ``passages`` at or above ``min_score``."""
    ranked = sorted(passages, key=lambda p: p.score, reverse=True)
    return [p for p in ranked if p.score >= query.min_score][: max(0, query.top_k)]


def check_query(query: RetrievalQuery) -> None:
    """Raise :class:`storage.errors.InvalidArgument` if an id of ``query`` is not a valid id."""
    require_id(query.tenant_id, "tenant_id")
    require_id(query.session_id, "session_id")
    for turn_id in query.exclude_turn_ids:
        require_id(turn_id, "turn_id")


@dataclass(slots=True)
class _Stored:
    passage: Passage
    tenant_id: str
    session_id: str
    vector: list[float] = field(default_factory=list)


class InMemoryRetriever:
    """A :class:`Retriever` over passages held in memory, for unit tests of code that retrieves.

    Same contract as :class:`LanceRetriever`: tenant isolation, memories only from the query's session,
    excluded turns never returned, ``top_k`` and ``min_score``. Relevance uses the same fusion, with the
    :class:`HashEmbedder`'s bag-of-words vectors and a word-overlap count standing in for BM25. The score a
    passage is added with is ignored.
    """

    def __init__(self, embedder: HashEmbedder | None = None) -> None:
        self._embedder = embedder or HashEmbedder()
        self._stored: list[_Stored] = []

    def add(self, passage: Passage, tenant_id: str, session_id: str = "") -> None:
        """Store ``passage`` for ``tenant_id`` (memories: of ``session_id``; knowledge ignores it)."""
        vector = self._embedder.vector(passage.title + "\n" + passage.text)
        self._stored.append(_Stored(passage, tenant_id, session_id, vector))

    def clear(self) -> None:
        """Forget every passage."""
        self._stored.clear()

    async def retrieve(self, query: RetrievalQuery) -> list[Passage]:
        """See :meth:`Retriever.retrieve`."""
        check_query(query)
        await asyncio.sleep(0)  # a real retriever yields to the loop; so does this one, to show up races
        if query.top_k <= 0:
            return []
        wanted = self._embedder.vector(query.text)
        words = set(_words(query.text))
        per_source: dict[str, list[Candidate]] = {KNOWLEDGE: [], MEMORY: []}
        for item in self._stored:
            p = item.passage
            if item.tenant_id != query.tenant_id:
                continue
            if p.source == MEMORY:
                if not query.include_memory or item.session_id != query.session_id:
                    continue
                if p.chunk_id in query.exclude_turn_ids:
                    continue
            elif not query.include_knowledge:
                continue
            cosine = sum(a * b for a, b in zip(wanted, item.vector, strict=True))
            overlap = float(len(words & set(_words(p.title + " " + p.text))))
            per_source.setdefault(p.source, []).append(Candidate(p, cosine, overlap))
        fused = [p for candidates in per_source.values() for p in fuse(candidates)]
        return select(fused, query)


def _words(text: str) -> list[str]:
    return [w for w in "".join(ch.lower() if ch.isalnum() else " " for ch in text).split() if w]


class LanceRetriever:
    """The :class:`Retriever` over the LanceDB tables ``knowledge`` and ``memories``. Create with :meth:`open`."""

    def __init__(self) -> None:
        raise NotImplementedError("use LanceRetriever.open")

    @classmethod
    async def open(cls, uri: str, embedder: Embedder, *, read_consistency_s: float | None = 0.0) -> LanceRetriever:
        """Connect to the LanceDB at ``uri`` (creating the tables if missing)."""
        raise NotImplementedError

    async def retrieve(self, query: RetrievalQuery) -> list[Passage]:
        """See :meth:`Retriever.retrieve`."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release the tables and the connection. Idempotent."""
        raise NotImplementedError
