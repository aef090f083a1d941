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

class DoubleTextingPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOUBLE_TEXTING_POLICY_UNSPECIFIED: _ClassVar[DoubleTextingPolicy]
    DOUBLE_TEXTING_POLICY_ENQUEUE: _ClassVar[DoubleTextingPolicy]
    DOUBLE_TEXTING_POLICY_REJECT: _ClassVar[DoubleTextingPolicy]
    DOUBLE_TEXTING_POLICY_INTERRUPT: _ClassVar[DoubleTextingPolicy]
    DOUBLE_TEXTING_POLICY_ROLLBACK: _ClassVar[DoubleTextingPolicy]

class DisconnectPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISCONNECT_POLICY_UNSPECIFIED: _ClassVar[DisconnectPolicy]
    DISCONNECT_POLICY_CONTINUE: _ClassVar[DisconnectPolicy]
    DISCONNECT_POLICY_CANCEL: _ClassVar[DisconnectPolicy]

class MemoryScope(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_SCOPE_UNSPECIFIED: _ClassVar[MemoryScope]
    MEMORY_SCOPE_SESSION: _ClassVar[MemoryScope]
    MEMORY_SCOPE_USER: _ClassVar[MemoryScope]
DOUBLE_TEXTING_POLICY_UNSPECIFIED: DoubleTextingPolicy
DOUBLE_TEXTING_POLICY_ENQUEUE: DoubleTextingPolicy
DOUBLE_TEXTING_POLICY_REJECT: DoubleTextingPolicy
DOUBLE_TEXTING_POLICY_INTERRUPT: DoubleTextingPolicy
DOUBLE_TEXTING_POLICY_ROLLBACK: DoubleTextingPolicy
DISCONNECT_POLICY_UNSPECIFIED: DisconnectPolicy
DISCONNECT_POLICY_CONTINUE: DisconnectPolicy
DISCONNECT_POLICY_CANCEL: DisconnectPolicy
MEMORY_SCOPE_UNSPECIFIED: MemoryScope
MEMORY_SCOPE_SESSION: MemoryScope
MEMORY_SCOPE_USER: MemoryScope

class MemorySettings(_message.Message):
    __slots__ = ("window_token_budget", "window_max_messages", "retrieval_top_k", "retrieval_min_score", "long_term_memory_disabled", "memory_scope", "knowledge_collections", "retrieval_score_cutoff", "retrieval_token_budget")
    WINDOW_TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    WINDOW_MAX_MESSAGES_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    LONG_TERM_MEMORY_DISABLED_FIELD_NUMBER: _ClassVar[int]
    MEMORY_SCOPE_FIELD_NUMBER: _ClassVar[int]
    KNOWLEDGE_COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_SCORE_CUTOFF_FIELD_NUMBER: _ClassVar[int]
    RETRIEVAL_TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    window_token_budget: int
    window_max_messages: int
    retrieval_top_k: int
    retrieval_min_score: float
    long_term_memory_disabled: bool
    memory_scope: MemoryScope
    knowledge_collections: _containers.RepeatedScalarFieldContainer[str]
    retrieval_score_cutoff: float
    retrieval_token_budget: int
    def __init__(self, window_token_budget: _Optional[int] = ..., window_max_messages: _Optional[int] = ..., retrieval_top_k: _Optional[int] = ..., retrieval_min_score: _Optional[float] = ..., long_term_memory_disabled: _Optional[bool] = ..., memory_scope: _Optional[_Union[MemoryScope, str]] = ..., knowledge_collections: _Optional[_Iterable[str]] = ..., retrieval_score_cutoff: _Optional[float] = ..., retrieval_token_budget: _Optional[int] = ...) -> None: ...

class ModelSettings(_message.Message):
    __slots__ = ("provider", "model", "max_tokens", "temperature", "stop_sequences", "fallback_providers")
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    STOP_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    provider: str
    model: str
    max_tokens: int
    temperature: float
    stop_sequences: _containers.RepeatedScalarFieldContainer[str]
    fallback_providers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, provider: _Optional[str] = ..., model: _Optional[str] = ..., max_tokens: _Optional[int] = ..., temperature: _Optional[float] = ..., stop_sequences: _Optional[_Iterable[str]] = ..., fallback_providers: _Optional[_Iterable[str]] = ...) -> None: ...

class Summary(_message.Message):
    __slots__ = ("text", "version")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    text: str
    version: int
    def __init__(self, text: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class Session(_message.Message):
    __slots__ = ("session_id", "metadata", "system_prompt", "memory", "double_texting", "model", "create_time", "turn_count", "summary", "disconnect_policy", "tools", "tool_settings", "user_id")
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
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    TURN_COUNT_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    DISCONNECT_POLICY_FIELD_NUMBER: _ClassVar[int]
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    TOOL_SETTINGS_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    metadata: _containers.ScalarMap[str, str]
    system_prompt: str
    memory: MemorySettings
    double_texting: DoubleTextingPolicy
    model: ModelSettings
    create_time: _timestamp_pb2.Timestamp
    turn_count: int
    summary: Summary
    disconnect_policy: DisconnectPolicy
    tools: ToolSet
    tool_settings: ToolSettings
    user_id: str
    def __init__(self, session_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., system_prompt: _Optional[str] = ..., memory: _Optional[_Union[MemorySettings, _Mapping]] = ..., double_texting: _Optional[_Union[DoubleTextingPolicy, str]] = ..., model: _Optional[_Union[ModelSettings, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., turn_count: _Optional[int] = ..., summary: _Optional[_Union[Summary, _Mapping]] = ..., disconnect_policy: _Optional[_Union[DisconnectPolicy, str]] = ..., tools: _Optional[_Union[ToolSet, _Mapping]] = ..., tool_settings: _Optional[_Union[ToolSettings, _Mapping]] = ..., user_id: _Optional[str] = ...) -> None: ...

class Tool(_message.Message):
    __slots__ = ("name", "description", "input_schema_json", "requires_approval", "mcp_server")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCHEMA_JSON_FIELD_NUMBER: _ClassVar[int]
    REQUIRES_APPROVAL_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVER_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    input_schema_json: str
    requires_approval: bool
    mcp_server: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., input_schema_json: _Optional[str] = ..., requires_approval: _Optional[bool] = ..., mcp_server: _Optional[str] = ...) -> None: ...

class ToolSet(_message.Message):
    __slots__ = ("tools", "mcp_servers")
    TOOLS_FIELD_NUMBER: _ClassVar[int]
    MCP_SERVERS_FIELD_NUMBER: _ClassVar[int]
    tools: _containers.RepeatedCompositeFieldContainer[Tool]
    mcp_servers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tools: _Optional[_Iterable[_Union[Tool, _Mapping]]] = ..., mcp_servers: _Optional[_Iterable[str]] = ...) -> None: ...

class ToolSettings(_message.Message):
    __slots__ = ("wait_timeout", "max_model_rounds")
    WAIT_TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    MAX_MODEL_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    wait_timeout: _duration_pb2.Duration
    max_model_rounds: int
    def __init__(self, wait_timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_model_rounds: _Optional[int] = ...) -> None: ...
