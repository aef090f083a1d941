"""What a session token may do: the one place where a call made with one is held to its session and rights.

The auth interceptor (``engine.auth``) runs :func:`apply_scope` on every call whose credential is a session token,
after the request is parsed and before any handler sees it. Calls with an API key or a certificate never come here.

The rules:

- Only the methods below can be called with a token; every other (knowledge, admin, Converse, ...) is refused
  (``TOKEN_SCOPE``). A stream of requests (Converse) cannot be checked before it runs, so it is refused whole.
- A session token acts on its own session only (``TOKEN_SESSION_MISMATCH`` for any other) and only with the
  rights it carries (``TOKEN_RIGHT_MISSING``).
- A user token (no session) may only create sessions and ask for a token for each session it created. Sessions it
  creates are labelled with its user (metadata ``salon.user``, whatever the request said) and take the deployment's
  defaults for the model and tools, which are the backend's to choose, not the page's (``TOKEN_FIELD_NOT_ALLOWED``).
- With a token, a turn cannot replace the session's tools (``TOKEN_FIELD_NOT_ALLOWED``): which tools a session may
  use is decided by whoever holds the API key.
"""

from __future__ import annotations

from typing import Any

from salon.engine.session_tokens import Right, TokenClaims
from salon.storage.errors import PermissionDenied
from salon.storage.reasons import Reason

OWNER_KEY = "salon.user"
"""The metadata key naming the user whose token created a session."""

_CONVERSATION = "/salon.v1.ConversationService/"
METHOD_RIGHTS: dict[str, Right] = {
    _CONVERSATION + "SendTurn": Right.SEND,
    _CONVERSATION + "ResumeTurn": Right.RESUME,
    _CONVERSATION + "CancelTurn": Right.CANCEL,
    _CONVERSATION + "GetSession": Right.READ,
    _CONVERSATION + "GetHistory": Right.READ,
    _CONVERSATION + "SubmitToolResult": Right.TOOLS,
    _CONVERSATION + "DecideApproval": Right.APPROVE,
    _CONVERSATION + "CreateSession": Right.CREATE,
    "/salon.v1.SessionTokenService/IssueSessionToken": Right.CREATE,
}
"""The methods a token can call, each with the right it needs."""

_CREATE_SESSION = _CONVERSATION + "CreateSession"
_SEND_TURN = _CONVERSATION + "SendTurn"
# Fields a page may not set: the backend chooses the model, the tools, the session's name and its user (whose
# memory the session may read).
_CREATE_FIELDS_NOT_ALLOWED = ("session_id", "model", "tools", "tool_settings", "user_id")
_TURN_FIELDS_NOT_ALLOWED = ("tools", "tool_settings")


def _set(request: Any, field: str) -> bool:
    try:
        return bool(request.HasField(field))
    except ValueError:  # a scalar field: set means not its zero value
        return bool(getattr(request, field))


def _refuse_fields(request: Any, fields: tuple[str, ...]) -> None:
    for field in fields:
        if _set(request, field):
            raise PermissionDenied(f"a session token cannot set {field}", reason=Reason.TOKEN_FIELD_NOT_ALLOWED)


def _require(claims: TokenClaims, right: Right) -> None:
    if not claims.allows(right):
        raise PermissionDenied(f"this token does not grant {right}", reason=Reason.TOKEN_RIGHT_MISSING)


def apply_scope(claims: TokenClaims, method: str, request: Any, *, streaming: bool = False) -> None:
    """Refuse (:class:`PermissionDenied`) a call ``claims`` does not cover; label a session a user token creates.

    ``request`` is the parsed request message (None for a stream of requests, with ``streaming`` True)."""
    right = METHOD_RIGHTS.get(method)
    if right is None or streaming:
        raise PermissionDenied("a session token cannot call this method", reason=Reason.TOKEN_SCOPE)
    if right is Right.CREATE:
        # Only user tokens carry the create right (the issuer never grants it with a session).
        _require(claims, right)
        if method == _CREATE_SESSION:
            _refuse_fields(request, _CREATE_FIELDS_NOT_ALLOWED)
            request.metadata[OWNER_KEY] = claims.user
        return
    if claims.is_user_token:
        raise PermissionDenied(
            "a user token only creates sessions; use the session token issued for each", reason=Reason.TOKEN_SCOPE
        )
    # Another session first: that, not a missing right, is what the caller needs to hear.
    if request.session_id != claims.session_id:
        raise PermissionDenied("this token is for another session", reason=Reason.TOKEN_SESSION_MISMATCH)
    _require(claims, right)
    if method == _SEND_TURN:
        _refuse_fields(request, _TURN_FIELDS_NOT_ALLOWED)
