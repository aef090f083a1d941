from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EraseUserRequest(_message.Message):
    __slots__ = ("tenant_id", "user_id")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    user_id: str
    def __init__(self, tenant_id: _Optional[str] = ..., user_id: _Optional[str] = ...) -> None: ...

class EraseUserResponse(_message.Message):
    __slots__ = ("sessions_deleted", "memories_deleted")
    SESSIONS_DELETED_FIELD_NUMBER: _ClassVar[int]
    MEMORIES_DELETED_FIELD_NUMBER: _ClassVar[int]
    sessions_deleted: int
    memories_deleted: int
    def __init__(self, sessions_deleted: _Optional[int] = ..., memories_deleted: _Optional[int] = ...) -> None: ...

class GetUsageRequest(_message.Message):
    __slots__ = ("tenant_id", "all_tenants")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ALL_TENANTS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    all_tenants: bool
    def __init__(self, tenant_id: _Optional[str] = ..., all_tenants: _Optional[bool] = ...) -> None: ...

class GetUsageResponse(_message.Message):
    __slots__ = ("usage",)
    USAGE_FIELD_NUMBER: _ClassVar[int]
    usage: _containers.RepeatedCompositeFieldContainer[TenantUsage]
    def __init__(self, usage: _Optional[_Iterable[_Union[TenantUsage, _Mapping]]] = ...) -> None: ...

class TenantUsage(_message.Message):
    __slots__ = ("tenant_id", "turns_last_minute", "concurrent_turns", "tokens_today", "sessions", "limits")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    TURNS_LAST_MINUTE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENT_TURNS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_TODAY_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    turns_last_minute: int
    concurrent_turns: int
    tokens_today: int
    sessions: int
    limits: TenantLimits
    def __init__(self, tenant_id: _Optional[str] = ..., turns_last_minute: _Optional[int] = ..., concurrent_turns: _Optional[int] = ..., tokens_today: _Optional[int] = ..., sessions: _Optional[int] = ..., limits: _Optional[_Union[TenantLimits, _Mapping]] = ...) -> None: ...

class TenantLimits(_message.Message):
    __slots__ = ("turns_per_minute", "concurrent_turns", "tokens_per_day", "max_message_bytes", "max_sessions")
    TURNS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    CONCURRENT_TURNS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    MAX_MESSAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    turns_per_minute: int
    concurrent_turns: int
    tokens_per_day: int
    max_message_bytes: int
    max_sessions: int
    def __init__(self, turns_per_minute: _Optional[int] = ..., concurrent_turns: _Optional[int] = ..., tokens_per_day: _Optional[int] = ..., max_message_bytes: _Optional[int] = ..., max_sessions: _Optional[int] = ...) -> None: ...
