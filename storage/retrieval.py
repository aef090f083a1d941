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

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Final, Protocol

from salon.storage.ids import require_id
from salon.storage.periods import Period

KNOWLEDGE: Final = "knowledge"
MEMORY: Final = "memory"

VECTOR_WEIGHT: Final = 0.85
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
    now_ns: int = 0
    """When the query is asked (Unix ns; 0: now): what a relative date in it ("last May") counts from."""
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


def fuse(candidates: Iterable[Candidate], *, query_text: str = "", period: Period | None = None) -> list[Passage]:
    """The candidates' passages with their fused score, best first (ties: the order given).

    With ``query_text``, the lexical term is BM25 computed over the candidates themselves (term rarity
    among them, not in the whole table), for every candidate: a word that most of a session's rows share
    (the speaker's name written into each of their turns) then weighs little, and a row that only the vector
    search found is scored like the others instead of as 0. Without it, the full-text search's own scores.
    With ``period``, memories dated inside it (see :func:`memory_date`) are lifted by :data:`DATE_WEIGHT`.
    """
    pool = list(candidates)
    if query_text:
        lexical_scores = pool_bm25(query_text, [_lexical_text(c.passage) for c in pool])
    else:
        lexical_scores = [c.bm25 for c in pool]
    best_lexical = max(lexical_scores, default=0.0)
    scored: list[Passage] = []
    for c, raw in zip(pool, lexical_scores, strict=True):
        lexical = raw / best_lexical if best_lexical > 0 else 0.0
        score = VECTOR_WEIGHT * max(0.0, min(1.0, c.cosine)) + LEXICAL_WEIGHT * max(0.0, min(1.0, lexical))
        if period is not None:
            day = memory_date(c.passage)
            score = (1.0 - DATE_WEIGHT) * score + (DATE_WEIGHT if day is not None and period.contains(day) else 0.0)
        scored.append(replace(c.passage, score=score))
    return sorted(scored, key=lambda p: p.score, reverse=True)


DATE_WEIGHT: Final = 0.3
"""How much a memory dated inside the period a query names is lifted (its fused score is mixed with 1 at
this weight, others' with 0): enough to put the period's turns first, as the question asks about them."""

BM25_K1: Final = 1.2
BM25_B: Final = 0.75
_TOKEN: Final = re.compile(r"\w+")
STOP_WORDS: Final = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "did",
        "do",
        "does",
        "for",
        "from",
        "had",
        "has",
        "have",
        "he",
        "her",
        "his",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "she",
        "so",
        "that",
        "the",
        "their",
        "them",
        "they",
        "this",
        "to",
        "us",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "about",
        "tell",
        "told",
    ]
)


def tokens(text: str) -> list[str]:
    """The words of ``text`` that count for lexical matching: lower-cased, stop words left out."""
    return [t for t in _TOKEN.findall(text.lower()) if t not in STOP_WORDS]


def pool_bm25(query: str, texts: Sequence[str]) -> list[float]:
    """The BM25 score of each of ``texts`` for ``query``, with document frequencies and lengths taken over
    ``texts`` themselves."""
    wanted = set(tokens(query))
    if not wanted or not texts:
        return [0.0] * len(texts)
    docs = [tokens(t) for t in texts]
    n = len(docs)
    average = max(1.0, sum(len(d) for d in docs) / n)
    frequency = {w: sum(1 for d in docs if w in d) for w in wanted}
    idf = {w: math.log(1.0 + (n - f + 0.5) / (f + 0.5)) for w, f in frequency.items() if f}
    scores: list[float] = []
    for doc in docs:
        norm = BM25_K1 * (1.0 - BM25_B + BM25_B * len(doc) / average)
        score = 0.0
        for w, weight in idf.items():
            tf = doc.count(w)
            if tf:
                score += weight * tf * (BM25_K1 + 1.0) / (tf + norm)
        scores.append(score)
    return scores


def _lexical_text(passage: Passage) -> str:
    return f"{passage.title} {passage.text}" if passage.title else passage.text


_DATE_PREFIX: Final = re.compile(r"\[(\d{4})-(\d{2})-(\d{2})\]")


def memory_date(passage: Passage) -> date | None:
    """The date a memory was said on (its text starts with it), None for knowledge or an undated memory."""
    if passage.source != MEMORY or not (match := _DATE_PREFIX.match(passage.text)):
        return None
    try:
        return date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
    except ValueError:
        return None


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
