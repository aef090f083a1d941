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

class TokenRight(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TOKEN_RIGHT_UNSPECIFIED: _ClassVar[TokenRight]
    TOKEN_RIGHT_SEND: _ClassVar[TokenRight]
    TOKEN_RIGHT_RESUME: _ClassVar[TokenRight]
    TOKEN_RIGHT_CANCEL: _ClassVar[TokenRight]
    TOKEN_RIGHT_READ: _ClassVar[TokenRight]
    TOKEN_RIGHT_TOOLS: _ClassVar[TokenRight]
    TOKEN_RIGHT_APPROVE: _ClassVar[TokenRight]
    TOKEN_RIGHT_CREATE_SESSIONS: _ClassVar[TokenRight]
TOKEN_RIGHT_UNSPECIFIED: TokenRight
TOKEN_RIGHT_SEND: TokenRight
TOKEN_RIGHT_RESUME: TokenRight
TOKEN_RIGHT_CANCEL: TokenRight
TOKEN_RIGHT_READ: TokenRight
TOKEN_RIGHT_TOOLS: TokenRight
TOKEN_RIGHT_APPROVE: TokenRight
TOKEN_RIGHT_CREATE_SESSIONS: TokenRight

class IssueSessionTokenRequest(_message.Message):
    __slots__ = ("session_id", "user", "rights", "ttl")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    RIGHTS_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    user: str
    rights: _containers.RepeatedScalarFieldContainer[TokenRight]
    ttl: _duration_pb2.Duration
    def __init__(self, session_id: _Optional[str] = ..., user: _Optional[str] = ..., rights: _Optional[_Iterable[_Union[TokenRight, str]]] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class IssueSessionTokenResponse(_message.Message):
    __slots__ = ("token", "expire_time", "session_id", "rights", "token_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RIGHTS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    expire_time: _timestamp_pb2.Timestamp
    session_id: str
    rights: _containers.RepeatedScalarFieldContainer[TokenRight]
    token_id: str
    def __init__(self, token: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., session_id: _Optional[str] = ..., rights: _Optional[_Iterable[_Union[TokenRight, str]]] = ..., token_id: _Optional[str] = ...) -> None: ...
