"""The knowledge base as the API offers it: ingestion with per-document outcomes and progress, deletion and
search, for one tenant at a time (the caller's). The gRPC servicer (``engine.knowledge_servicer``) is a thin
adapter over :class:`Knowledge`; chunking, embedding and storage are ``storage.lance.knowledge.KnowledgeBase``'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from salon.engine.validation import check_text
from salon.storage import Document, InvalidArgument, Passage, Unavailable, is_valid_id, require_id
from salon.storage.lance.knowledge import KnowledgeBase
from salon.storage.lance.memory_search import MemorySearch
from salon.storage.reasons import Reason
from salon.v1 import knowledge_service_pb2 as ks_pb2
from salon.v1 import turn_pb2

MAX_SEARCH_TOP_K = 50
DEFAULT_SEARCH_TOP_K = 4
MAX_DELETE_IDS = 1000
MAX_COLLECTIONS = 16

_OK = grpc.StatusCode.OK.value[0]
_INVALID = grpc.StatusCode.INVALID_ARGUMENT.value[0]


def citation_of(passage: Passage) -> turn_pb2.Citation:
    """A passage's citation (what names it, without its text)."""
    return turn_pb2.Citation(
        source=passage.source,
        document_id=passage.document_id,
        chunk_id=passage.chunk_id,
        score=passage.score,
        table_version=passage.table_version,
        title=passage.title,
    )


@dataclass(slots=True)
class _Progress:
    documents: int = 0
    failed: int = 0
    chunks: int = 0
    failures: list[ks_pb2.DocumentResult] = field(default_factory=list)


SessionLookup = Callable[[str, str], Awaitable[object]]
"""``(tenant_id, session_id)`` -> the session's definition; raises :class:`NotFound` for one the tenant lacks."""


def check_ids(values: Sequence[str], *, limit: int, what: str, too_many: Reason, invalid: Reason) -> list[str]:
    """``values`` if there are at most ``limit`` and each is a valid id (INVALID_ARGUMENT otherwise, never
    repeating them)."""
    if len(values) > limit:
        raise InvalidArgument(f"at most {limit} {what} per request", reason=too_many)
    if not all(is_valid_id(v) for v in values):
        raise InvalidArgument(f"{what} must be 1 to 64 characters of letters, digits, '_' or '-'", reason=invalid)
    return list(values)


def check_collections(values: Sequence[str]) -> list[str]:
    """Collection names (at most :data:`MAX_COLLECTIONS`, each a valid id)."""
    return check_ids(
        values,
        limit=MAX_COLLECTIONS,
        what="collections",
        too_many=Reason.TOO_MANY_COLLECTIONS,
        invalid=Reason.INVALID_COLLECTION,
    )


def _timestamp(ns: int) -> Timestamp:
    return Timestamp(seconds=ns // 1_000_000_000, nanos=ns % 1_000_000_000)


class Knowledge:
    """Ingest, delete and search one tenant's documents; search its sessions' and users' memory."""

    def __init__(
        self,
        base: KnowledgeBase,
        *,
        max_text_bytes: int,
        memory: MemorySearch | None = None,
        session_of: SessionLookup | None = None,
    ) -> None:
        self._base = base
        self._max_text_bytes = max_text_bytes
        self._memory = memory
        self._session_of = session_of

    async def ingest(
        self, tenant_id: str, requests: AsyncIterable[ks_pb2.IngestDocumentsRequest]
    ) -> AsyncIterator[ks_pb2.IngestDocumentsResponse]:
        """One result per document, in the order sent, as each is stored; then the summary.

        A bad document gets its own status (INVALID_ARGUMENT and a reason) and the others go on; a problem
        with the whole request (the tenant) raises instead."""
        progress = _Progress()

        async def documents() -> AsyncIterator[Document]:
            async for request in requests:
                for doc in request.documents:
                    yield Document(
                        document_id=doc.document_id,
                        text=doc.text,
                        title=doc.title,
                        media_type=doc.media_type or "text/plain",
                        collection=doc.collection,
                        content=doc.content,
                    )

        async for result in self._base.ingest(tenant_id, documents()):
            index = progress.documents
            progress.documents += 1
            ok = not result.error_reason
            if ok:
                progress.chunks += result.chunks
            else:
                progress.failed += 1
            outcome = ks_pb2.DocumentResult(
                index=index,
                # An invalid id is input that failed validation: it is not echoed.
                document_id=result.document_id if is_valid_id(result.document_id) else "",
                code=_OK if ok else _INVALID,
                reason=result.error_reason,
                message=result.error_message,
                chunks=result.chunks if ok else 0,
                documents_done=progress.documents,
                documents_failed=progress.failed,
                chunks_done=progress.chunks,
            )
            if not ok:
                progress.failures.append(outcome)
            yield ks_pb2.IngestDocumentsResponse(result=outcome)
        yield ks_pb2.IngestDocumentsResponse(
            summary=ks_pb2.IngestSummary(
                documents=progress.documents,
                succeeded=progress.documents - progress.failed,
                failed=progress.failed,
                chunks=progress.chunks,
                failures=progress.failures,
            )
        )

    async def delete(self, tenant_id: str, request: ks_pb2.DeleteDocumentsRequest) -> int:
        """Delete the tenant's documents named in ``request``; how many existed."""
        ids = list(request.document_ids)
        if not ids:
            raise InvalidArgument("document_ids must not be empty", reason=Reason.NO_DOCUMENT_IDS)
        if len(ids) > MAX_DELETE_IDS:
            raise InvalidArgument(
                f"at most {MAX_DELETE_IDS} document_ids per request", reason=Reason.TOO_MANY_DOCUMENT_IDS
            )
        if not all(is_valid_id(i) for i in ids):
            raise InvalidArgument(
                "document_ids must be 1 to 64 characters of letters, digits, '_' or '-'",
                reason=Reason.INVALID_DOCUMENT_ID,
            )
        return await self._base.delete(tenant_id, ids)

    async def search(self, tenant_id: str, request: ks_pb2.SearchRequest) -> list[ks_pb2.SearchHit]:
        """The tenant's passages most relevant to the request's text."""
        check_text(request.text, self._max_text_bytes)
        if request.top_k > MAX_SEARCH_TOP_K:
            raise InvalidArgument(f"top_k must be at most {MAX_SEARCH_TOP_K}", reason=Reason.TOP_K_TOO_LARGE)
        if not request.min_score >= 0:
            raise InvalidArgument("min_score must not be negative", reason=Reason.BAD_MIN_SCORE)
        document_ids = check_ids(
            request.document_ids,
            limit=MAX_DELETE_IDS,
            what="document_ids",
            too_many=Reason.TOO_MANY_DOCUMENT_IDS,
            invalid=Reason.INVALID_DOCUMENT_ID,
        )
        passages = await self._base.search(
            tenant_id,
            request.text,
            top_k=request.top_k or DEFAULT_SEARCH_TOP_K,
            min_score=request.min_score,
            collections=check_collections(request.collections),
            document_ids=document_ids,
        )
        return [ks_pb2.SearchHit(citation=citation_of(p), text=p.text) for p in passages]

    async def search_memory(self, tenant_id: str, request: ks_pb2.SearchMemoryRequest) -> list[ks_pb2.MemoryHit]:
        """The remembered turns of one of the tenant's sessions, or of one of its users, most relevant to the
        request's text. Writes nothing."""
        if self._memory is None or self._session_of is None:
            raise Unavailable("memory search is not available here", reason=Reason.UNAVAILABLE)
        check_text(request.text, self._max_text_bytes)
        if bool(request.session_id) == bool(request.user_id):
            raise InvalidArgument("give exactly one of session_id and user_id", reason=Reason.BAD_MEMORY_SCOPE)
        if request.top_k > MAX_SEARCH_TOP_K:
            raise InvalidArgument(f"top_k must be at most {MAX_SEARCH_TOP_K}", reason=Reason.TOP_K_TOO_LARGE)
        if not request.min_score >= 0:
            raise InvalidArgument("min_score must not be negative", reason=Reason.BAD_MIN_SCORE)
        if request.session_id:
            # The same answer for a session of another tenant as for none at all.
            await self._session_of(tenant_id, require_id(request.session_id, "session_id"))
        else:
            require_id(request.user_id, "user_id")
        passages = await self._memory.search(
            tenant_id,
            request.text,
            session_id=request.session_id,
            user_id=request.user_id,
            top_k=request.top_k or DEFAULT_SEARCH_TOP_K,
            min_score=request.min_score,
        )
        return [
            ks_pb2.MemoryHit(
                citation=citation_of(p),
                text=p.text,
                session_id=p.document_id,
                turn_id=p.chunk_id,
                turn_index=p.turn_index,
                turn_time=_timestamp(p.time_ns) if p.time_ns else None,
            )
            for p in passages
        ]
