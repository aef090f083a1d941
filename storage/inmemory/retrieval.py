"""Passages held in memory: the reference :class:`~salon.storage.retrieval.Retriever` for unit tests of code that
retrieves."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from salon.storage.embedding import HashEmbedder
from salon.storage.retrieval import KNOWLEDGE, MEMORY, Candidate, Passage, RetrievalQuery, check_query, fuse, select


@dataclass(slots=True)
class _Stored:
    passage: Passage
    tenant_id: str
    session_id: str
    vector: list[float] = field(default_factory=list)


class InMemoryRetriever:
    """A :class:`~salon.storage.retrieval.Retriever` over passages held in memory.

    Same contract as :class:`~salon.storage.lance.retrieval.LanceRetriever`: tenant isolation, memories only from
    the query's session, excluded turns never returned, ``top_k`` and ``min_score``. Relevance uses the same
    fusion, with the :class:`HashEmbedder`'s bag-of-words vectors and a word-overlap count standing in for
    BM25. The score a passage is added with is ignored.
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
        """See :meth:`salon.storage.retrieval.Retriever.retrieve`."""
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
        return select(fused, top_k=query.top_k, min_score=query.min_score)


def _words(text: str) -> list[str]:
    return [w for w in "".join(ch.lower() if ch.isalnum() else " " for ch in text).split() if w]
