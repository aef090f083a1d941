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

class ToolResultSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOOL_RESULT_SOURCE_UNSPECIFIED: _ClassVar[ToolResultSource]
    TOOL_RESULT_SOURCE_CLIENT: _ClassVar[ToolResultSource]
    TOOL_RESULT_SOURCE_MCP: _ClassVar[ToolResultSource]
    TOOL_RESULT_SOURCE_REJECTED: _ClassVar[ToolResultSource]
    TOOL_RESULT_SOURCE_TIMEOUT: _ClassVar[ToolResultSource]
    TOOL_RESULT_SOURCE_INVALID_CALL: _ClassVar[ToolResultSource]
    TOOL_RESULT_SOURCE_CANCELLED: _ClassVar[ToolResultSource]

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
TOOL_RESULT_SOURCE_UNSPECIFIED: ToolResultSource
TOOL_RESULT_SOURCE_CLIENT: ToolResultSource
TOOL_RESULT_SOURCE_MCP: ToolResultSource
TOOL_RESULT_SOURCE_REJECTED: ToolResultSource
TOOL_RESULT_SOURCE_TIMEOUT: ToolResultSource
TOOL_RESULT_SOURCE_INVALID_CALL: ToolResultSource
TOOL_RESULT_SOURCE_CANCELLED: ToolResultSource
TURN_STATUS_UNSPECIFIED: TurnStatus
TURN_STATUS_COMPLETED: TurnStatus
TURN_STATUS_FAILED: TurnStatus
TURN_STATUS_PARTIAL: TurnStatus
TURN_STATUS_CANCELLED: TurnStatus

class TurnEvent(_message.Message):
    __slots__ = ("session_id", "turn_id", "seq", "time", "accepted", "citations", "delta", "usage", "completed", "error", "cancelled", "guardrail", "tool_call", "approval_required", "approval_decided", "tool_result")
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
    TOOL_CALL_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_REQUIRED_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_DECIDED_FIELD_NUMBER: _ClassVar[int]
    TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
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
    tool_call: ToolCall
    approval_required: ApprovalRequired
    approval_decided: ApprovalDecided
    tool_result: ToolResult
    def __init__(self, session_id: _Optional[str] = ..., turn_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., accepted: _Optional[_Union[TurnAccepted, _Mapping]] = ..., citations: _Optional[_Union[Citations, _Mapping]] = ..., delta: _Optional[_Union[TokenDelta, _Mapping]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., completed: _Optional[_Union[TurnCompleted, _Mapping]] = ..., error: _Optional[_Union[TurnError, _Mapping]] = ..., cancelled: _Optional[_Union[TurnCancelled, _Mapping]] = ..., guardrail: _Optional[_Union[GuardrailNotice, _Mapping]] = ..., tool_call: _Optional[_Union[ToolCall, _Mapping]] = ..., approval_required: _Optional[_Union[ApprovalRequired, _Mapping]] = ..., approval_decided: _Optional[_Union[ApprovalDecided, _Mapping]] = ..., tool_result: _Optional[_Union[ToolResult, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens", "estimated_cost_usd", "provider", "model", "model_rounds")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_READ_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHE_CREATION_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_USD_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int
    cache_creation_input_tokens: int
    estimated_cost_usd: float
    provider: str
    model: str
    model_rounds: int
    def __init__(self, input_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., cache_read_input_tokens: _Optional[int] = ..., cache_creation_input_tokens: _Optional[int] = ..., estimated_cost_usd: _Optional[float] = ..., provider: _Optional[str] = ..., model: _Optional[str] = ..., model_rounds: _Optional[int] = ...) -> None: ...

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
    __slots__ = ("check", "action", "reason", "source", "count", "score", "rules", "passage", "call_id")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    PASSAGE_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    check: str
    action: str
    reason: str
    source: str
    count: int
    score: float
    rules: _containers.RepeatedScalarFieldContainer[str]
    passage: int
    call_id: str
    def __init__(self, check: _Optional[str] = ..., action: _Optional[str] = ..., reason: _Optional[str] = ..., source: _Optional[str] = ..., count: _Optional[int] = ..., score: _Optional[float] = ..., rules: _Optional[_Iterable[str]] = ..., passage: _Optional[int] = ..., call_id: _Optional[str] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("call_id", "tool", "arguments_json", "requires_approval", "mcp_server", "round", "wait_deadline")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    WAIT_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    tool: str
    arguments_json: str
    requires_approval: bool
    mcp_server: str
    round: int
    wait_deadline: _timestamp_pb2.Timestamp
    def __init__(self, call_id: _Optional[str] = ..., tool: _Optional[str] = ..., arguments_json: _Optional[str] = ..., requires_approval: _Optional[bool] = ..., mcp_server: _Optional[str] = ..., round: _Optional[int] = ..., wait_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ApprovalRequired(_message.Message):
    __slots__ = ("call_id", "tool", "arguments_json", "mcp_server", "round", "wait_deadline")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    WAIT_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    tool: str
    arguments_json: str
    mcp_server: str
    round: int
    wait_deadline: _timestamp_pb2.Timestamp
    def __init__(self, call_id: _Optional[str] = ..., tool: _Optional[str] = ..., arguments_json: _Optional[str] = ..., mcp_server: _Optional[str] = ..., round: _Optional[int] = ..., wait_deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ApprovalDecided(_message.Message):
    __slots__ = ("call_id", "approved", "reason", "approver")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    approved: bool
    reason: str
    approver: str
    def __init__(self, call_id: _Optional[str] = ..., approved: _Optional[bool] = ..., reason: _Optional[str] = ..., approver: _Optional[str] = ...) -> None: ...

class ToolResult(_message.Message):
    __slots__ = ("call_id", "tool", "is_error", "source", "content_preview", "content_bytes", "duration")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_PREVIEW_FIELD_NUMBER: _ClassVar[int]
    CONTENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    tool: str
    is_error: bool
    source: ToolResultSource
    content_preview: str
    content_bytes: int
    duration: _duration_pb2.Duration
    def __init__(self, call_id: _Optional[str] = ..., tool: _Optional[str] = ..., is_error: _Optional[bool] = ..., source: _Optional[_Union[ToolResultSource, str]] = ..., content_preview: _Optional[str] = ..., content_bytes: _Optional[int] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TurnCancelled(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class TurnRecord(_message.Message):
    __slots__ = ("turn_id", "user_text", "reply_text", "status", "stop_reason", "usage", "create_time", "complete_time", "context", "guardrails", "tool_calls", "model_rounds", "not_remembered")
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
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    MODEL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    NOT_REMEMBERED_FIELD_NUMBER: _ClassVar[int]
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
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCallRecord]
    model_rounds: int
    not_remembered: bool
    def __init__(self, turn_id: _Optional[str] = ..., user_text: _Optional[str] = ..., reply_text: _Optional[str] = ..., status: _Optional[_Union[TurnStatus, str]] = ..., stop_reason: _Optional[_Union[StopReason, str]] = ..., usage: _Optional[_Union[Usage, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., complete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., context: _Optional[_Union[TurnContext, _Mapping]] = ..., guardrails: _Optional[_Iterable[_Union[GuardrailDecision, _Mapping]]] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCallRecord, _Mapping]]] = ..., model_rounds: _Optional[int] = ..., not_remembered: _Optional[bool] = ...) -> None: ...

class ToolCallRecord(_message.Message):
    __slots__ = ("call_id", "tool", "arguments_json", "mcp_server", "round", "approval", "result", "is_error", "source", "call_time", "result_time", "call_tokens", "result_tokens")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVER_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    IS_ERROR_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    CALL_TIME_FIELD_NUMBER: _ClassVar[int]
    RESULT_TIME_FIELD_NUMBER: _ClassVar[int]
    CALL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    RESULT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    tool: str
    arguments_json: str
    mcp_server: str
    round: int
    approval: ToolApprovalRecord
    result: str
    is_error: bool
    source: ToolResultSource
    call_time: _timestamp_pb2.Timestamp
    result_time: _timestamp_pb2.Timestamp
    call_tokens: int
    result_tokens: int
    def __init__(self, call_id: _Optional[str] = ..., tool: _Optional[str] = ..., arguments_json: _Optional[str] = ..., mcp_server: _Optional[str] = ..., round: _Optional[int] = ..., approval: _Optional[_Union[ToolApprovalRecord, _Mapping]] = ..., result: _Optional[str] = ..., is_error: _Optional[bool] = ..., source: _Optional[_Union[ToolResultSource, str]] = ..., call_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., result_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., call_tokens: _Optional[int] = ..., result_tokens: _Optional[int] = ...) -> None: ...

class ToolApprovalRecord(_message.Message):
    __slots__ = ("approved", "reason", "approver", "decided_by", "decide_time")
    APPROVED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    DECIDE_TIME_FIELD_NUMBER: _ClassVar[int]
    approved: bool
    reason: str
    approver: str
    decided_by: str
    decide_time: _timestamp_pb2.Timestamp
    def __init__(self, approved: _Optional[bool] = ..., reason: _Optional[str] = ..., approver: _Optional[str] = ..., decided_by: _Optional[str] = ..., decide_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

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
    __slots__ = ("turn_id", "turn_index", "role", "tokens", "tool_calls")
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_INDEX_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    turn_id: str
    turn_index: int
    role: str
    tokens: int
    tool_calls: int
    def __init__(self, turn_id: _Optional[str] = ..., turn_index: _Optional[int] = ..., role: _Optional[str] = ..., tokens: _Optional[int] = ..., tool_calls: _Optional[int] = ...) -> None: ...

class ContextPassage(_message.Message):
    __slots__ = ("citation", "tokens", "turn_index")
    CITATION_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    TURN_INDEX_FIELD_NUMBER: _ClassVar[int]
    citation: Citation
    tokens: int
    turn_index: int
    def __init__(self, citation: _Optional[_Union[Citation, _Mapping]] = ..., tokens: _Optional[int] = ..., turn_index: _Optional[int] = ...) -> None: ...
