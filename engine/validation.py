"""Checking requests before they enter the engine. Messages name the field, never its content.

Invalid UTF-8 never reaches these checks: a proto3 ``string`` that is not UTF-8 fails to parse, and the
gateway's interceptor (``engine.auth``) answers ``INVALID_ARGUMENT`` (``MALFORMED_REQUEST``) before any handler
runs (grpc's own handlers would answer UNKNOWN). Everything that arrives here is well-formed text; the tenant's
guardrails then refuse control and bidirectional-override characters.
"""

from __future__ import annotations

from collections.abc import Mapping

from salon.actors import Guardrails, GuardrailSettings
from salon.storage.errors import InvalidArgument
from salon.storage.ids import require_id
from salon.storage.reasons import Reason
from salon.v1 import conversation_service_pb2 as cs_pb2
from salon.v1 import session_pb2

MAX_METADATA_ENTRIES = 32
MAX_METADATA_KEY_BYTES = 128
MAX_METADATA_VALUE_BYTES = 1024
MAX_SYSTEM_PROMPT_BYTES = 64 * 1024
MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 50
MAX_RETRIEVAL_TOP_K = 50
MAX_RETRIEVAL_TOKEN_BUDGET = 100_000
"""Largest passage token budget a session may ask for (the prompt must still fit a model's context)."""


def check_text(text: str, max_bytes: int) -> None:
    """A user message: not blank, not over ``max_bytes`` of UTF-8."""
    if not text.strip():
        raise InvalidArgument("text must not be empty", reason=Reason.EMPTY_TEXT)
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise InvalidArgument(f"text is {size} bytes; the limit is {max_bytes}", reason=Reason.TEXT_TOO_LARGE)


def check_metadata(metadata: Mapping[str, str], field: str, guardrails: GuardrailSettings | None = None) -> None:
    """Caller labels: bounded count and sizes, no control or bidirectional-override characters."""
    items = dict(metadata)
    guard = Guardrails(guardrails)
    if len(items) > MAX_METADATA_ENTRIES:
        raise InvalidArgument(f"{field} has more than {MAX_METADATA_ENTRIES} entries", reason=Reason.METADATA_TOO_LARGE)
    for key, value in items.items():
        if not key or len(key.encode()) > MAX_METADATA_KEY_BYTES:
            raise InvalidArgument(f"{field} keys must be 1-{MAX_METADATA_KEY_BYTES} bytes", reason=Reason.BAD_METADATA)
        if len(value.encode()) > MAX_METADATA_VALUE_BYTES:
            raise InvalidArgument(
                f"{field} values must be at most {MAX_METADATA_VALUE_BYTES} bytes", reason=Reason.BAD_METADATA
            )
        guard.check_input(key, f"{field} keys")
        guard.check_input(value, f"{field} values")


def check_send_turn(
    request: cs_pb2.SendTurnRequest, max_text_bytes: int, guardrails: GuardrailSettings | None = None
) -> None:
    """A SendTurn request, under the tenant's guardrails (None: the defaults)."""
    require_id(request.session_id, "session_id")
    if request.idempotency_key:
        require_id(request.idempotency_key, "idempotency_key")
    check_text(request.text, max_text_bytes)
    Guardrails(guardrails).check_input(request.text, "text")
    check_metadata(request.metadata, "metadata", guardrails)


def check_create_session(request: cs_pb2.CreateSessionRequest, guardrails: GuardrailSettings | None = None) -> None:
    """A CreateSession request, under the tenant's guardrails (None: the defaults)."""
    if request.session_id:
        require_id(request.session_id, "session_id")
    check_metadata(request.metadata, "metadata", guardrails)
    Guardrails(guardrails).check_input(request.system_prompt, "system_prompt")
    if len(request.system_prompt.encode("utf-8", "surrogatepass")) > MAX_SYSTEM_PROMPT_BYTES:
        raise InvalidArgument(
            f"system_prompt is over the limit of {MAX_SYSTEM_PROMPT_BYTES} bytes", reason=Reason.SYSTEM_PROMPT_TOO_LARGE
        )
    if not 0 <= request.memory.retrieval_min_score <= 1:
        raise InvalidArgument("memory.retrieval_min_score must be between 0 and 1", reason=Reason.BAD_MEMORY_SETTINGS)
    if request.memory.HasField("retrieval_score_cutoff") and not 0 <= request.memory.retrieval_score_cutoff <= 1:
        raise InvalidArgument(
            "memory.retrieval_score_cutoff must be between 0 and 1", reason=Reason.BAD_MEMORY_SETTINGS
        )
    if request.memory.retrieval_token_budget > MAX_RETRIEVAL_TOKEN_BUDGET:
        raise InvalidArgument(
            f"memory.retrieval_token_budget must be at most {MAX_RETRIEVAL_TOKEN_BUDGET}",
            reason=Reason.BAD_MEMORY_SETTINGS,
        )
    if request.memory.retrieval_top_k > MAX_RETRIEVAL_TOP_K:
        raise InvalidArgument(
            f"memory.retrieval_top_k must be at most {MAX_RETRIEVAL_TOP_K}", reason=Reason.BAD_MEMORY_SETTINGS
        )
    check_user_memory(request)
    if request.model.HasField("temperature") and not 0.0 <= request.model.temperature <= 2.0:
        raise InvalidArgument("model.temperature must be between 0 and 2", reason=Reason.BAD_MODEL_SETTINGS)
    if len(request.model.stop_sequences) > 8:
        raise InvalidArgument("model.stop_sequences holds at most 8 entries", reason=Reason.BAD_MODEL_SETTINGS)


MAX_KNOWLEDGE_COLLECTIONS = 16


def check_user_memory(request: cs_pb2.CreateSessionRequest) -> None:
    """The session's user, its memory scope and the knowledge collections it retrieves from."""
    if request.user_id:
        require_id(request.user_id, "user_id")
    memory = request.memory
    if memory.memory_scope not in session_pb2.MemoryScope.values():
        raise InvalidArgument("memory.memory_scope is not a known scope", reason=Reason.BAD_MEMORY_SCOPE)
    if memory.memory_scope == session_pb2.MEMORY_SCOPE_USER and not request.user_id:
        raise InvalidArgument("memory.memory_scope USER needs the session's user_id", reason=Reason.BAD_MEMORY_SCOPE)
    if len(memory.knowledge_collections) > MAX_KNOWLEDGE_COLLECTIONS:
        raise InvalidArgument(
            f"memory.knowledge_collections holds at most {MAX_KNOWLEDGE_COLLECTIONS} names",
            reason=Reason.TOO_MANY_COLLECTIONS,
        )
    for collection in memory.knowledge_collections:
        require_id(collection, "collection")


def page_size(requested: int) -> int:
    """The effective page size of a paged request."""
    if requested > MAX_PAGE_SIZE:
        raise InvalidArgument(f"page_size must be at most {MAX_PAGE_SIZE}", reason=Reason.PAGE_SIZE_TOO_LARGE)
    return requested or DEFAULT_PAGE_SIZE
