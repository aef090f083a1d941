from salon.v1 import session_pb2 as _session_pb2
from salon.v1 import turn_pb2 as _turn_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApprovalVerdict(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    APPROVAL_VERDICT_UNSPECIFIED: _ClassVar[ApprovalVerdict]
    APPROVAL_VERDICT_APPROVE: _ClassVar[ApprovalVerdict]
    APPROVAL_VERDICT_REJECT: _ClassVar[ApprovalVerdict]
APPROVAL_VERDICT_UNSPECIFIED: ApprovalVerdict
APPROVAL_VERDICT_APPROVE: ApprovalVerdict
APPROVAL_VERDICT_REJECT: ApprovalVerdict

class CreateSessionRequest(_message.Message):
    __slots__ = ("session_id", "metadata", "system_prompt", "memory", "double_texting", "model", "disconnect_policy", "tools", "tool_settings", "user_id")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    SYSTEM_PROMPT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_TEXTING_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DISCONNECT_POLICY_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    metadata: _containers.ScalarMap[str, str]
    system_prompt: str
    memory: _session_pb2.MemorySettings
    double_texting: _session_pb2.DoubleTextingPolicy
    model: _session_pb2.ModelSettings
    disconnect_policy: _session_pb2.DisconnectPolicy
    tools: _session_pb2.ToolSet
    tool_settings: _session_pb2.ToolSettings
    user_id: str
    def __init__(self, session_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., system_prompt: _Optional[str] = ..., memory: _Optional[_Union[_session_pb2.MemorySettings, _Mapping]] = ..., double_texting: _Optional[_Union[_session_pb2.DoubleTextingPolicy, str]] = ..., model: _Optional[_Union[_session_pb2.ModelSettings, _Mapping]] = ..., disconnect_policy: _Optional[_Union[_session_pb2.DisconnectPolicy, str]] = ..., tools: _Optional[_Union[_session_pb2.ToolSet, _Mapping]] = ..., tool_settings: _Optional[_Union[_session_pb2.ToolSettings, _Mapping]] = ..., user_id: _Optional[str] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class GetSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class GetSessionResponse(_message.Message):
    __slots__ = ("session",)
    SESSION_FIELD_NUMBER: _ClassVar[int]
    session: _session_pb2.Session
    def __init__(self, session: _Optional[_Union[_session_pb2.Session, _Mapping]] = ...) -> None: ...

class ListSessionsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "metadata_filter")
    class MetadataFilterEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    METADATA_FILTER_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    metadata_filter: _containers.ScalarMap[str, str]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., metadata_filter: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ListSessionsResponse(_message.Message):
    __slots__ = ("sessions", "next_page_token")
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    sessions: _containers.RepeatedCompositeFieldContainer[_session_pb2.Session]
    next_page_token: str
    def __init__(self, sessions: _Optional[_Iterable[_Union[_session_pb2.Session, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SendTurnRequest(_message.Message):
    __slots__ = ("session_id", "text", "idempotency_key", "double_texting", "metadata", "disconnect_policy", "tools", "tool_settings", "do_not_remember")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_TEXTING_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    DISCONNECT_POLICY_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    DO_NOT_REMEMBER_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    text: str
    idempotency_key: str
    double_texting: _session_pb2.DoubleTextingPolicy
    metadata: _containers.ScalarMap[str, str]
    disconnect_policy: _session_pb2.DisconnectPolicy
    tools: _session_pb2.ToolSet
    tool_settings: _session_pb2.ToolSettings
    do_not_remember: bool
    def __init__(self, session_id: _Optional[str] = ..., text: _Optional[str] = ..., idempotency_key: _Optional[str] = ..., double_texting: _Optional[_Union[_session_pb2.DoubleTextingPolicy, str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., disconnect_policy: _Optional[_Union[_session_pb2.DisconnectPolicy, str]] = ..., tools: _Optional[_Union[_session_pb2.ToolSet, _Mapping]] = ..., tool_settings: _Optional[_Union[_session_pb2.ToolSettings, _Mapping]] = ..., do_not_remember: _Optional[bool] = ...) -> None: ...

class SendTurnResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _turn_pb2.TurnEvent
    def __init__(self, event: _Optional[_Union[_turn_pb2.TurnEvent, _Mapping]] = ...) -> None: ...

class ConverseRequest(_message.Message):
    __slots__ = ("request_id", "send_turn", "cancel_turn", "resume_turn", "submit_tool_result", "decide_approval")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SEND_TURN_FIELD_NUMBER: _ClassVar[int]
    CANCEL_TURN_FIELD_NUMBER: _ClassVar[int]
    RESUME_TURN_FIELD_NUMBER: _ClassVar[int]
    SUBMIT_TOOL_RESULT_FIELD_NUMBER: _ClassVar[int]
    DECIDE_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    send_turn: SendTurnRequest
    cancel_turn: CancelTurnRequest
    resume_turn: ResumeTurnRequest
    submit_tool_result: SubmitToolResultRequest
    decide_approval: DecideApprovalRequest
    def __init__(self, request_id: _Optional[str] = ..., send_turn: _Optional[_Union[SendTurnRequest, _Mapping]] = ..., cancel_turn: _Optional[_Union[CancelTurnRequest, _Mapping]] = ..., resume_turn: _Optional[_Union[ResumeTurnRequest, _Mapping]] = ..., submit_tool_result: _Optional[_Union[SubmitToolResultRequest, _Mapping]] = ..., decide_approval: _Optional[_Union[DecideApprovalRequest, _Mapping]] = ...) -> None: ...

class ConverseResponse(_message.Message):
    __slots__ = ("event", "error", "ack")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    event: _turn_pb2.TurnEvent
    error: ConverseError
    ack: ConverseAck
    def __init__(self, event: _Optional[_Union[_turn_pb2.TurnEvent, _Mapping]] = ..., error: _Optional[_Union[ConverseError, _Mapping]] = ..., ack: _Optional[_Union[ConverseAck, _Mapping]] = ...) -> None: ...

class ConverseAck(_message.Message):
    __slots__ = ("request_id", "session_id", "duplicate")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    session_id: str
    duplicate: bool
    def __init__(self, request_id: _Optional[str] = ..., session_id: _Optional[str] = ..., duplicate: _Optional[bool] = ...) -> None: ...

class ConverseError(_message.Message):
    __slots__ = ("request_id", "session_id", "code", "reason", "message")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    session_id: str
    code: int
    reason: str
    message: str
    def __init__(self, request_id: _Optional[str] = ..., session_id: _Optional[str] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class CancelTurnRequest(_message.Message):
    __slots__ = ("session_id", "turn_id")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    turn_id: str
    def __init__(self, session_id: _Optional[str] = ..., turn_id: _Optional[str] = ...) -> None: ...

class CancelTurnResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ResumeTurnRequest(_message.Message):
    __slots__ = ("session_id", "turn_id", "after_seq")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    turn_id: str
    after_seq: int
    def __init__(self, session_id: _Optional[str] = ..., turn_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class ResumeTurnResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _turn_pb2.TurnEvent
    def __init__(self, event: _Optional[_Union[_turn_pb2.TurnEvent, _Mapping]] = ...) -> None: ...

class GetHistoryRequest(_message.Message):
    __slots__ = ("session_id", "page_size", "page_token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    page_size: int
    page_token: str
    def __init__(self, session_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class GetHistoryResponse(_message.Message):
    __slots__ = ("turns", "next_page_token")
    TURNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    turns: _containers.RepeatedCompositeFieldContainer[_turn_pb2.TurnRecord]
    next_page_token: str
    def __init__(self, turns: _Optional[_Iterable[_Union[_turn_pb2.TurnRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class SubmitToolResultRequest(_message.Message):
    __slots__ = ("session_id", "turn_id", "call_id", "result", "error")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    turn_id: str
    call_id: str
    result: str
    error: str
    def __init__(self, session_id: _Optional[str] = ..., turn_id: _Optional[str] = ..., call_id: _Optional[str] = ..., result: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class SubmitToolResultResponse(_message.Message):
    __slots__ = ("duplicate",)
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    def __init__(self, duplicate: _Optional[bool] = ...) -> None: ...

class DecideApprovalRequest(_message.Message):
    __slots__ = ("session_id", "turn_id", "call_id", "verdict", "reason", "approver")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    TURN_ID_FIELD_NUMBER: _ClassVar[int]
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    APPROVER_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    turn_id: str
    call_id: str
    verdict: ApprovalVerdict
    reason: str
    approver: str
    def __init__(self, session_id: _Optional[str] = ..., turn_id: _Optional[str] = ..., call_id: _Optional[str] = ..., verdict: _Optional[_Union[ApprovalVerdict, str]] = ..., reason: _Optional[str] = ..., approver: _Optional[str] = ...) -> None: ...

class DecideApprovalResponse(_message.Message):
    __slots__ = ("duplicate", "verdict")
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    VERDICT_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    verdict: ApprovalVerdict
    def __init__(self, duplicate: _Optional[bool] = ..., verdict: _Optional[_Union[ApprovalVerdict, str]] = ...) -> None: ...
