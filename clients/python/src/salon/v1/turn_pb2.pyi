import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StopReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_REASON_UNSPECIFIED: _ClassVar[StopReason]
    STOP_REASON_END_TURN: _ClassVar[StopReason]
    STOP_REASON_MAX_TOKENS: _ClassVar[StopReason]
    STOP_REASON_STOP_SEQUENCE: _ClassVar[StopReason]
    STOP_REASON_TOOL_USE: _ClassVar[StopReason]
    STOP_REASON_REFUSAL: _ClassVar[StopReason]

class TurnStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TURN_STATUS_UNSPECIFIED: _ClassVar[TurnStatus]
    TURN_STATUS_COMPLETED: _ClassVar[TurnStatus]
    TURN_STATUS_FAILED: _ClassVar[TurnStatus]
    TURN_STATUS_PARTIAL: _ClassVar[TurnStatus]
    TURN_STATUS_CANCELLED: _ClassVar[TurnStatus]
STOP_REASON_UNSPECIFIED: StopReason
STOP_REASON_END_TURN: StopReason
STOP_REASON_MAX_TOKENS: StopReason
STOP_REASON_STOP_SEQUENCE: StopReason
STOP_REASON_TOOL_USE: StopReason
STOP_REASON_REFUSAL: StopReason
TURN_STATUS_UNSPECIFIED: TurnStatus
TURN_STATUS_COMPLETED: TurnStatus
TURN_STATUS_FAILED: TurnStatus
TURN_STATUS_PARTIAL: TurnStatus
TURN_STATUS_CANCELLED: TurnStatus

class TurnEvent(_message.Message):
    __slots__ = ("session_id", "turn_id", "seq", "time", "accepted", "citations", "delta", "usage", "completed", "error", "cancelled", "guardrail")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    GUARDRAIL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    turn_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    accepted: TurnAccepted
    citations: Citations
    delta: TokenDelta
    usage: Usage
    completed: TurnCompleted
    error: TurnError
    cancelled: TurnCancelled
    guardrail: GuardrailNotice
    def __init__(self, session_id: _Optional[str] = ..., turn_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., accepted: _Optional[_Union[TurnAccepted, _Mapping]] = ..., citations: _Optional[_Union[Citations, _Mapping]] = ..., delta: _Optional[_Union[TokenDelta, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., completed: _Optional[_Union[TurnCompleted, _Mapping]] = ..., error: _Optional[_Union[TurnError, _Mapping]] = ..., cancelled: _Optional[_Union[TurnCancelled, _Mapping]] = ..., guardrail: _Optional[_Union[GuardrailNotice, _Mapping]] = ...) -> None: ...

class TurnAccepted(_message.Message):
    __slots__ = ("queue_position", "trace_id", "replayed")
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    queue_position: int
    trace_id: str
    replayed: bool
    def __init__(self, queue_position: _Optional[int] = ..., trace_id: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...

class Citations(_message.Message):
    __slots__ = ("citations",)
    CITATIONS_FIELD_NUMBER: _ClassVar[int]
    citations: _containers.RepeatedCompositeFieldContainer[Citation]
    def __init__(self, citations: _Optional[_Iterable[_Union[Citation, _Mapping]]] = ...) -> None: ...

class Citation(_message.Message):
    __slots__ = ("source", "document_id", "chunk_id", "score", "table_version", "title")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    source: str
    document_id: str
    chunk_id: str
    score: float
    table_version: int
    title: str
    def __init__(self, source: _Optional[str] = ..., document_id: _Optional[str] = ..., chunk_id: _Optional[str] = ..., score: _Optional[float] = ..., table_version: _Optional[int] = ..., title: _Optional[str] = ...) -> None: ...

class TokenDelta(_message.Message):
    __slots__ = ("text",)
    TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    def __init__(self, text: _Optional[str] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "estimated_cost_usd", "provider", "model")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_CREATION_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    estimated_cost_usd: float
    provider: str
    model: str
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cache_read_input_tokens: _Optional[int] = ..., cache_creation_input_tokens: _Optional[int] = ..., estimated_cost_usd: _Optional[float] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class TurnCompleted(_message.Message):
    __slots__ = ("stop_reason", "stop_sequence")
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    STOP_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    stop_reason: StopReason
    stop_sequence: str
    def __init__(self, stop_reason: _Optional[_Union[StopReason, str]] = ..., stop_sequence: _Optional[str] = ...) -> None: ...

class TurnError(_message.Message):
    __slots__ = ("reason", "message", "retryable", "retry_after", "partial")
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    RETRY_AFTER_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    reason: str
    message: str
    retryable: bool
    retry_after: _duration_pb2.Duration
    partial: bool
    def __init__(self, reason: _Optional[str] = ..., message: _Optional[str] = ..., retryable: _Optional[bool] = ..., retry_after: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., partial: _Optional[bool] = ...) -> None: ...

class GuardrailNotice(_message.Message):
    __slots__ = ("decisions",)
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    decisions: _containers.RepeatedCompositeFieldContainer[GuardrailDecision]
    def __init__(self, decisions: _Optional[_Iterable[_Union[GuardrailDecision, _Mapping]]] = ...) -> None: ...

class GuardrailDecision(_message.Message):
    __slots__ = ("check", "action", "reason", "source", "count", "score", "rules", "passage")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_FIELD_NUMBER: _ClassVar[int]
    check: str
    action: str
    reason: str
    source: str
    count: int
    score: float
    rules: _containers.RepeatedScalarFieldContainer[str]
    passage: int
    def __init__(self, check: _Optional[str] = ..., action: _Optional[str] = ..., reason: _Optional[str] = ..., source: _Optional[str] = ..., count: _Optional[int] = ..., score: _Optional[float] = ..., rules: _Optional[_Iterable[str]] = ..., passage: _Optional[int] = ...) -> None: ...

class TurnCancelled(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class TurnRecord(_message.Message):
    __slots__ = ("turn_id", "user_text", "reply_text", "status", "stop_reason", "usage", "create_time", "complete_time", "context", "guardrails")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    USER_TEXT_FIELD_NUMBER: _ClassVar[int]
    REPLY_TEXT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STOP_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    GUARDRAILS_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    user_text: str
    reply_text: str
    status: TurnStatus
    stop_reason: StopReason
    usage: Usage
    create_time: _timestamp_pb2.Timestamp
    complete_time: _timestamp_pb2.Timestamp
    context: TurnContext
    guardrails: _containers.RepeatedCompositeFieldContainer[GuardrailDecision]
    def __init__(self, turn_id: _Optional[str] = ..., user_text: _Optional[str] = ..., reply_text: _Optional[str] = ..., status: _Optional[_Union[TurnStatus, str]] = ..., stop_reason: _Optional[_Union[StopReason, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., context: _Optional[_Union[TurnContext, _Mapping]] = ..., guardrails: _Optional[_Iterable[_Union[GuardrailDecision, _Mapping]]] = ...) -> None: ...

class TurnContext(_message.Message):
    __slots__ = ("window", "summary_version", "summary_tokens", "passages", "system_tokens", "message_tokens", "total_tokens", "retrieval_error_reason")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PASSAGES_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_ERROR_REASON_FIELD_NUMBER: _ClassVar[int]
    window: _containers.RepeatedCompositeFieldContainer[ContextMessage]
    summary_version: int
    summary_tokens: int
    passages: _containers.RepeatedCompositeFieldContainer[ContextPassage]
    system_tokens: int
    message_tokens: int
    total_tokens: int
    retrieval_error_reason: str
    def __init__(self, window: _Optional[_Iterable[_Union[ContextMessage, _Mapping]]] = ..., summary_version: _Optional[int] = ..., summary_tokens: _Optional[int] = ..., passages: _Optional[_Iterable[_Union[ContextPassage, _Mapping]]] = ..., system_tokens: _Optional[int] = ..., message_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ..., retrieval_error_reason: _Optional[str] = ...) -> None: ...

class ContextMessage(_message.Message):
    __slots__ = ("turn_id", "turn_index", "role", "tokens")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_INDEX_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    turn_index: int
    role: str
    tokens: int
    def __init__(self, turn_id: _Optional[str] = ..., turn_index: _Optional[int] = ..., role: _Optional[str] = ..., tokens: _Optional[int] = ...) -> None: ...

class ContextPassage(_message.Message):
    __slots__ = ("citation", "tokens", "turn_index")
    CITATION_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TURN_INDEX_FIELD_NUMBER: _ClassVar[int]
    citation: Citation
    tokens: int
    turn_index: int
    def __init__(self, citation: _Optional[_Union[Citation, _Mapping]] = ..., tokens: _Optional[int] = ..., turn_index: _Optional[int] = ...) -> None: ...
