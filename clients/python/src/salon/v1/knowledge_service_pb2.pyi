import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from salon.v1 import turn_pb2 as _turn_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Document(_message.Message):
    __slots__ = ("document_id", "title", "media_type", "text", "collection", "content")
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    MEDIA_TYPE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    document_id: str
    title: str
    media_type: str
    text: str
    collection: str
    content: bytes
    def __init__(self, document_id: _Optional[str] = ..., title: _Optional[str] = ..., media_type: _Optional[str] = ..., text: _Optional[str] = ..., collection: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class IngestDocumentsRequest(_message.Message):
    __slots__ = ("documents",)
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    documents: _containers.RepeatedCompositeFieldContainer[Document]
    def __init__(self, documents: _Optional[_Iterable[_Union[Document, _Mapping]]] = ...) -> None: ...

class IngestDocumentsResponse(_message.Message):
    __slots__ = ("result", "summary")
    RESULT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    result: DocumentResult
    summary: IngestSummary
    def __init__(self, result: _Optional[_Union[DocumentResult, _Mapping]] = ..., summary: _Optional[_Union[IngestSummary, _Mapping]] = ...) -> None: ...

class DocumentResult(_message.Message):
    __slots__ = ("index", "document_id", "code", "reason", "message", "chunks", "documents_done", "documents_failed", "chunks_done")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_DONE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FAILED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_DONE_FIELD_NUMBER: _ClassVar[int]
    index: int
    document_id: str
    code: int
    reason: str
    message: str
    chunks: int
    documents_done: int
    documents_failed: int
    chunks_done: int
    def __init__(self, index: _Optional[int] = ..., document_id: _Optional[str] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., chunks: _Optional[int] = ..., documents_done: _Optional[int] = ..., documents_failed: _Optional[int] = ..., chunks_done: _Optional[int] = ...) -> None: ...

class IngestSummary(_message.Message):
    __slots__ = ("documents", "succeeded", "failed", "chunks", "failures")
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    SUCCEEDED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    FAILURES_FIELD_NUMBER: _ClassVar[int]
    documents: int
    succeeded: int
    failed: int
    chunks: int
    failures: _containers.RepeatedCompositeFieldContainer[DocumentResult]
    def __init__(self, documents: _Optional[int] = ..., succeeded: _Optional[int] = ..., failed: _Optional[int] = ..., chunks: _Optional[int] = ..., failures: _Optional[_Iterable[_Union[DocumentResult, _Mapping]]] = ...) -> None: ...

class DeleteDocumentsRequest(_message.Message):
    __slots__ = ("document_ids",)
    DOCUMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    document_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, document_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteDocumentsResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("text", "top_k", "min_score", "document_ids", "collections")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_IDS_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    text: str
    top_k: int
    min_score: float
    document_ids: _containers.RepeatedScalarFieldContainer[str]
    collections: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, text: _Optional[str] = ..., top_k: _Optional[int] = ..., min_score: _Optional[float] = ..., document_ids: _Optional[_Iterable[str]] = ..., collections: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("citation", "text")
    CITATION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    citation: _turn_pb2.Citation
    text: str
    def __init__(self, citation: _Optional[_Union[_turn_pb2.Citation, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class SearchMemoryRequest(_message.Message):
    __slots__ = ("text", "session_id", "user_id", "top_k", "min_score")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    text: str
    session_id: str
    user_id: str
    top_k: int
    min_score: float
    def __init__(self, text: _Optional[str] = ..., session_id: _Optional[str] = ..., user_id: _Optional[str] = ..., top_k: _Optional[int] = ..., min_score: _Optional[float] = ...) -> None: ...

class SearchMemoryResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[MemoryHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[MemoryHit, _Mapping]]] = ...) -> None: ...

class MemoryHit(_message.Message):
    __slots__ = ("citation", "text", "session_id", "turn_id", "turn_index", "turn_time")
    CITATION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_INDEX_FIELD_NUMBER: _ClassVar[int]
    TURN_TIME_FIELD_NUMBER: _ClassVar[int]
    citation: _turn_pb2.Citation
    text: str
    session_id: str
    turn_id: str
    turn_index: int
    turn_time: _timestamp_pb2.Timestamp
    def __init__(self, citation: _Optional[_Union[_turn_pb2.Citation, _Mapping]] = ..., text: _Optional[str] = ..., session_id: _Optional[str] = ..., turn_id: _Optional[str] = ..., turn_index: _Optional[int] = ..., turn_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
