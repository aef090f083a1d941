"""The vocabulary of error reasons: the stable, machine-readable half of every error a caller can see.

A reason travels as a string (trailing metadata ``salon-error-reason``, ``TurnError.reason``,
``ConverseError.reason``, transcript records), and clients match on it, so a member's value never changes once
released. Code that raises an error names its reason here; code that reads a reason back from the wire goes
through :meth:`Reason.from_wire`. It lives in the lowest layer that raises reasons (storage) so every layer
above can import it.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Why a call or a turn failed. A ``StrEnum``: each member *is* its wire string."""

    # One per status, the default reason of each error class (storage.errors).
    INTERNAL = "INTERNAL"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    PERMISSION_DENIED = "PERMISSION_DENIED"
    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    UNIMPLEMENTED = "UNIMPLEMENTED"

    # The request itself.
    MALFORMED_REQUEST = "MALFORMED_REQUEST"
    EMPTY_REQUEST = "EMPTY_REQUEST"
    EMPTY_TEXT = "EMPTY_TEXT"
    TEXT_TOO_LARGE = "TEXT_TOO_LARGE"
    CONTROL_CHARACTER = "CONTROL_CHARACTER"
    CONTROL_MALFORMED = "CONTROL_MALFORMED"
    CONTROL_UNSUPPORTED = "CONTROL_UNSUPPORTED"
    BIDI_CHARACTER = "BIDI_CHARACTER"
    METADATA_TOO_LARGE = "METADATA_TOO_LARGE"
    CALL_METADATA_TOO_LARGE = "CALL_METADATA_TOO_LARGE"
    BAD_METADATA = "BAD_METADATA"
    SYSTEM_PROMPT_TOO_LARGE = "SYSTEM_PROMPT_TOO_LARGE"
    BAD_MEMORY_SETTINGS = "BAD_MEMORY_SETTINGS"
    BAD_MODEL_SETTINGS = "BAD_MODEL_SETTINGS"
    PAGE_SIZE_TOO_LARGE = "PAGE_SIZE_TOO_LARGE"
    BAD_PAGE_TOKEN = "BAD_PAGE_TOKEN"
    # Ids (storage.ids.require_id: ``INVALID_`` and the field's name).
    INVALID_SESSION_ID = "INVALID_SESSION_ID"
    INVALID_TURN_ID = "INVALID_TURN_ID"
    INVALID_TENANT_ID = "INVALID_TENANT_ID"
    INVALID_TENANT = "INVALID_TENANT"
    INVALID_IDEMPOTENCY_KEY = "INVALID_IDEMPOTENCY_KEY"
    INVALID_PAGE_TOKEN = "INVALID_PAGE_TOKEN"
    INVALID_DOCUMENT_ID = "INVALID_DOCUMENT_ID"
    INVALID_INCARNATION = "INVALID_INCARNATION"
    INVALID_USER_ID = "INVALID_USER_ID"
    INVALID_COLLECTION = "INVALID_COLLECTION"

    # The knowledge base.
    NO_DOCUMENT_IDS = "NO_DOCUMENT_IDS"
    TOO_MANY_DOCUMENT_IDS = "TOO_MANY_DOCUMENT_IDS"
    TOP_K_TOO_LARGE = "TOP_K_TOO_LARGE"
    BAD_MIN_SCORE = "BAD_MIN_SCORE"
    EMPTY_DOCUMENT = "EMPTY_DOCUMENT"
    DOCUMENT_TOO_LARGE = "DOCUMENT_TOO_LARGE"
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    TITLE_TOO_LONG = "TITLE_TOO_LONG"
    UNREADABLE_DOCUMENT = "UNREADABLE_DOCUMENT"
    """A PDF or DOCX that cannot be parsed, or document bytes that are not UTF-8 for a text type."""
    TOO_MANY_COLLECTIONS = "TOO_MANY_COLLECTIONS"

    # Long-term memory (SearchMemory, user scope, erasure).
    BAD_MEMORY_SCOPE = "BAD_MEMORY_SCOPE"
    """Exactly one of session_id and user_id for SearchMemory; a user_id for the user memory scope."""

    # Who may do what.
    NOT_ADMIN = "NOT_ADMIN"

    # Session tokens (engine.session_tokens, engine.token_scope): the credentials of browsers and other clients
    # that must not hold an API key.
    TOKEN_INVALID = "TOKEN_INVALID"
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    TOKEN_SCOPE = "TOKEN_SCOPE"
    TOKEN_RIGHT_MISSING = "TOKEN_RIGHT_MISSING"
    TOKEN_SESSION_MISMATCH = "TOKEN_SESSION_MISMATCH"
    TOKEN_FIELD_NOT_ALLOWED = "TOKEN_FIELD_NOT_ALLOWED"
    TOKEN_TTL_TOO_LONG = "TOKEN_TTL_TOO_LONG"
    BAD_TOKEN_RIGHTS = "BAD_TOKEN_RIGHTS"
    BAD_TOKEN_USER = "BAD_TOKEN_USER"

    # A tenant's limits (engine.limits) and the stream's reader.
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    TOKENS_PER_DAY = "TOKENS_PER_DAY"
    TURNS_PER_MINUTE = "TURNS_PER_MINUTE"
    CONCURRENT_TURNS = "CONCURRENT_TURNS"
    MAX_SESSIONS = "MAX_SESSIONS"
    SLOW_CONSUMER = "SLOW_CONSUMER"

    # Sessions and turns.
    SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
    SESSION_EXISTS = "SESSION_EXISTS"
    SESSION_BUSY = "SESSION_BUSY"
    TOO_MANY_TURNS = "TOO_MANY_TURNS"
    TURN_NOT_FOUND = "TURN_NOT_FOUND"
    TURN_RECORD_EXPIRED = "TURN_RECORD_EXPIRED"
    TURN_TIMEOUT = "TURN_TIMEOUT"
    CANCEL_FAILED = "CANCEL_FAILED"
    SESSION_FENCED = "SESSION_FENCED"
    ACTIVATION_CONTENDED = "ACTIVATION_CONTENDED"
    MALFORMED_TURN = "MALFORMED_TURN"

    # Tools (actors.tools, actors.tool_loop, engine.tools_api).
    INVALID_TOOL = "INVALID_TOOL"
    TOO_MANY_TOOLS = "TOO_MANY_TOOLS"
    UNKNOWN_MCP_SERVER = "UNKNOWN_MCP_SERVER"
    INVALID_TOOL_SETTINGS = "INVALID_TOOL_SETTINGS"
    INVALID_CALL_ID = "INVALID_CALL_ID"
    EMPTY_TOOL_RESULT = "EMPTY_TOOL_RESULT"
    TOOL_RESULT_TOO_LARGE = "TOOL_RESULT_TOO_LARGE"
    INVALID_VERDICT = "INVALID_VERDICT"
    INVALID_APPROVER = "INVALID_APPROVER"
    TOOL_CALL_NOT_FOUND = "TOOL_CALL_NOT_FOUND"
    TOOL_APPROVAL_PENDING = "TOOL_APPROVAL_PENDING"
    TURN_RESUMING = "TURN_RESUMING"
    TOOL_WAIT_TIMEOUT = "TOOL_WAIT_TIMEOUT"
    TOOL_ROUNDS_EXHAUSTED = "TOOL_ROUNDS_EXHAUSTED"
    PROGRESS_TOO_LARGE = "PROGRESS_TOO_LARGE"

    # Guardrails that end a turn.
    PROMPT_INJECTION = "PROMPT_INJECTION"
    SYSTEM_PROMPT_LEAK = "SYSTEM_PROMPT_LEAK"

    # Retrieval for a turn's prompt (recorded in the turn's context; the turn goes on without passages).
    RETRIEVAL_TIMEOUT = "RETRIEVAL_TIMEOUT"
    RETRIEVAL_FAILED = "RETRIEVAL_FAILED"

    # Dependencies: the bus, the ledger, the registry and the tables.
    NATS_UNAVAILABLE = "NATS_UNAVAILABLE"
    EVENTS_LOST = "EVENTS_LOST"
    STORAGE_FULL = "STORAGE_FULL"
    HOST_UNAVAILABLE = "HOST_UNAVAILABLE"
    LEDGER_UNAVAILABLE = "LEDGER_UNAVAILABLE"
    STORAGE_UNAVAILABLE = "STORAGE_UNAVAILABLE"
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    STORE_CLOSED = "STORE_CLOSED"
    STORE_UNWRITABLE = "STORE_UNWRITABLE"
    STORE_UNREADABLE = "STORE_UNREADABLE"
    STORE_SCHEMA_MISMATCH = "STORE_SCHEMA_MISMATCH"
    EMBEDDING_MODEL_MISMATCH = "EMBEDDING_MODEL_MISMATCH"
    RECORD_DOES_NOT_FIT = "RECORD_DOES_NOT_FIT"
    INVALID_TABLE = "INVALID_TABLE"

    # Starting the engine.
    INVALID_CONFIG = "INVALID_CONFIG"
    NATS_BINARY_MISSING = "NATS_BINARY_MISSING"
    NATS_START_FAILED = "NATS_START_FAILED"
    DATA_DIR_IN_USE = "DATA_DIR_IN_USE"

    # Model providers (providers.errors says what each means).
    MODEL_ERROR = "MODEL_ERROR"
    MODEL_RATE_LIMITED = "MODEL_RATE_LIMITED"
    MODEL_QUOTA_EXHAUSTED = "MODEL_QUOTA_EXHAUSTED"
    MODEL_OVERLOADED = "MODEL_OVERLOADED"
    MODEL_UNAVAILABLE = "MODEL_UNAVAILABLE"
    MODEL_STALLED = "MODEL_STALLED"
    MODEL_TIMEOUT = "MODEL_TIMEOUT"
    MODEL_AUTH_FAILED = "MODEL_AUTH_FAILED"
    MODEL_INVALID_REQUEST = "MODEL_INVALID_REQUEST"
    MODEL_PROTOCOL_ERROR = "MODEL_PROTOCOL_ERROR"
    MODEL_CIRCUIT_OPEN = "MODEL_CIRCUIT_OPEN"
    MODEL_NOT_CONFIGURED = "MODEL_NOT_CONFIGURED"

    @classmethod
    def from_wire(cls, value: str) -> Reason | None:
        """The member a reason string read back from the wire names; None for one this engine does not know
        (an older or newer peer's)."""
        try:
            return cls(value)
        except ValueError:
            return None


def id_reason(field: str) -> Reason:
    """The reason of an invalid id in ``field`` (``session_id`` -> ``INVALID_SESSION_ID``); the generic
    ``INVALID_ARGUMENT`` for a field without its own."""
    return Reason.from_wire(f"INVALID_{field.upper()}") or Reason.INVALID_ARGUMENT
