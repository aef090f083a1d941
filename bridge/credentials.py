"""The one credential the bridge takes: a session token, never an API key.

The bridge checks only a token's shape: the gateway behind it verifies the signature, the expiry and the scope
(``engine.session_tokens``, ``engine.token_scope``), so the bridge holds no secret and can run anywhere. An API key
is refused outright, before it goes anywhere: a page that holds one has already leaked it, and the bridge must not
turn it into a working browser credential.
"""

from __future__ import annotations

import re

from starlette.requests import Request

from salon.bridge.errors import BridgeError, unauthenticated

TOKEN_PREFIX = "sst1."
"""How every session token starts (``engine.session_tokens.PREFIX`` and its dot; a test keeps the two equal)."""
API_KEY_PREFIX = "salon_"
_TOKEN_SHAPE = re.compile(r"sst1\.[0-9a-f]{8}\.[A-Za-z0-9_-]{1,2000}\.[A-Za-z0-9_-]{43}")
QUERY_TOKEN = "access_token"
"""The query parameter that may carry the token where a header cannot (EventSource), on event streams only."""


def _refused(token: str) -> BridgeError:
    if token.startswith(API_KEY_PREFIX):
        return unauthenticated(
            "API_KEY_REFUSED",
            "the web bridge takes session tokens only; API keys stay on servers (see IssueSessionToken)",
        )
    return unauthenticated("TOKEN_INVALID", "the session token is not valid")


def session_token(request: Request, *, allow_query: bool = False) -> str:
    """The request's session token (``authorization: Bearer …``, or ``?access_token=`` where allowed);
    :class:`BridgeError` (401) when there is none or it is not shaped like one."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise unauthenticated("TOKEN_REQUIRED", "send the session token as 'authorization: Bearer <token>'")
    elif allow_query and QUERY_TOKEN in request.query_params:
        token = request.query_params[QUERY_TOKEN]
    else:
        raise unauthenticated("TOKEN_REQUIRED", "this call needs a session token ('authorization: Bearer <token>')")
    if _TOKEN_SHAPE.fullmatch(token) is None:
        raise _refused(token)
    return token
