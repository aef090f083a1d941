"""Retrieval: the passages of the tenant's knowledge base and of the session's long-term memory that are
relevant to a turn: the contract, its records and the scoring every retriever shares.

Hybrid search: a vector search (cosine similarity of the query's embedding) and a full-text search (BM25)
run on each source with the same prefilter, and their candidates are fused by a convex combination:

    score = 0.7 * max(0, cosine) + 0.3 * bm25 / best_bm25

Rank fusion (RRF) was not used because its scores are ranks, not relevance: the best candidate of a search
that found nothing relevant still scores at the top, so a per-session ``min_score`` could not cut off
irrelevant passages. The cosine term is an absolute similarity; the lexical term (relative to the best
lexical match of the same search) lifts passages that share rare words with the query (names, codes) that
the small embedding model blurs.

The LanceDB retriever is :mod:`salon.storage.lance.retrieval`; :mod:`salon.storage.inmemory` holds a reference for unit
tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final, Protocol

from salon.storage.ids import require_id

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
    time_ns: int = 0
    """Memory only: when the turn completed (Unix ns; 0 when unknown)."""


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
    memory_user_id: str = ""
    """When set: the memories of every session of this user (in the tenant) instead of the session's own."""
    collections: frozenset[str] = frozenset()
    """When set: knowledge of documents ingested into these collections only."""


class Retriever(Protocol):
    """Finds the passages relevant to a query."""

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


def select(passages: Iterable[Passage], *, top_k: int, min_score: float) -> list[Passage]:
    """The best ``top_k`` of ``passages`` at or above ``min_score``, best first."""
    ranked = sorted(passages, key=lambda p: p.score, reverse=True)
    return [p for p in ranked if p.score >= min_score][: max(0, top_k)]


def check_query(query: RetrievalQuery) -> None:
    """Raise :class:`salon.storage.errors.InvalidArgument` if an id of ``query`` is not a valid id."""
    require_id(query.tenant_id, "tenant_id")
    require_id(query.session_id, "session_id")
    for turn_id in query.exclude_turn_ids:
        require_id(turn_id, "turn_id")
    if query.memory_user_id:
        require_id(query.memory_user_id, "user_id")
    for collection in query.collections:
        require_id(collection, "collection")
